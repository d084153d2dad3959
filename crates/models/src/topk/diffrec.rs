//! DiffRec (Wang et al., SIGIR'23; RecBole's `DiffRec`, from YiyanXu/DiffRec): Gaussian
//! diffusion over a user's interaction row. Training noises the row to a step t, `x_t =
//! √ᾱ_t·x₀ + √(1−ᾱ_t)·ε`, and an MLP denoiser predicts x₀ from `x_t` (dropped out) and t's
//! sinusoidal embedding; the squared error is weighted by SNR(t−1) − SNR(t) and the steps are
//! importance-sampled from each step's recent losses. Ranking starts from the un-noised row and
//! runs every reverse step with no noise added.
//!
//! With `time-aware: true` this is T-DiffRec: a user's training row holds, instead of 1s,
//! weights rising linearly from `w_min` to `w_max` in the order the user interacted.
//!
//! The denoiser is RecBole's `DNN`: the step embedding through Linear(e, e), concatenated to
//! `x_t`, then `dims_dnn` hidden layers with `mlp_act_func` between layers (none after the
//! last), Xavier-normal weights and zero biases. The first layer's weight is held as two
//! parameters, the rows that meet `x_t` and the rows that meet the embedding, so its backward
//! pass does not form a gradient for the (constant) input row.

use super::diffusion::{linspace, timestep_embedding, DiffusionSchedule, NoiseSchedule};
use super::{
    columns_as_rows, config_error, history_rows, mlp, run, Layer, TopkBatch, TopkInput, TopkModel,
    TopkShape,
};
use crate::Result;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::StandardNormal;
use recforge_data::interactions::{Interactions, UserItems};
use recforge_data::ModelConfig;
use recforge_nn::{init, Activation, Graph, NodeId, ParamId, ParamStore, Tensor};
use std::sync::Mutex;

/// The diffusion keys DiffRec and L-DiffRec share (RecBole's), with a model's own after them.
macro_rules! diffusion_keys {
    ($($extra:literal),*) => {
        &[
            "noise_schedule",
            "noise_scale",
            "noise_min",
            "noise_max",
            "sampling_noise",
            "sampling_steps",
            "reweight",
            "mean_type",
            "steps",
            "history_num_per_term",
            "beta_fixed",
            "dims_dnn",
            "embedding_size",
            "mlp_act_func",
            "norm",
            $($extra),*
        ]
    };
}
pub(crate) use diffusion_keys;

pub(crate) const KEYS: &[&str] = diffusion_keys!("time-aware", "w_max", "w_min");

/// RecBole's DNN drops its input out with this probability (not a config key there).
const INPUT_DROPOUT: f32 = 0.5;
/// The share of the step distribution kept uniform under importance sampling.
const UNIFORM_SHARE: f64 = 0.001;
/// The step embedding's period.
const MAX_PERIOD: f64 = 10_000.0;

/// Each step's most recent weighted losses (DiffRec's `Lt_history` and `Lt_count`): steps are
/// drawn uniformly until every step has `capacity` of them, then with probability ∝
/// √mean(L²), mixed with a little uniform.
#[derive(Clone, Debug)]
pub struct StepLosses {
    capacity: usize,
    /// `steps × capacity`, each row oldest first
    losses: Vec<f64>,
    counts: Vec<usize>,
}

impl StepLosses {
    pub fn new(steps: usize, capacity: usize) -> Self {
        StepLosses {
            capacity,
            losses: vec![0.0; steps * capacity],
            counts: vec![0; steps],
        }
    }

    /// Appends `loss` to step `t`'s history, dropping its oldest once full.
    pub fn record(&mut self, t: usize, loss: f64) {
        let row = &mut self.losses[t * self.capacity..(t + 1) * self.capacity];
        if self.counts[t] == self.capacity {
            row.rotate_left(1);
            row[self.capacity - 1] = loss;
        } else {
            row[self.counts[t]] = loss;
            self.counts[t] += 1;
        }
    }

    /// The step distribution once every step's history is full (`None` before, or when the
    /// losses give no usable distribution).
    pub fn distribution(&self) -> Option<Vec<f64>> {
        if self.counts.iter().any(|&c| c < self.capacity) {
            return None;
        }
        let rms: Vec<f64> = self
            .losses
            .chunks_exact(self.capacity)
            .map(|row| (row.iter().map(|l| l * l).sum::<f64>() / self.capacity as f64).sqrt())
            .collect();
        let total: f64 = rms.iter().sum();
        if !(total.is_finite() && total > 0.0) {
            return None;
        }
        let steps = rms.len() as f64;
        Some(
            rms.iter()
                .map(|r| r / total * (1.0 - UNIFORM_SHARE) + UNIFORM_SHARE / steps)
                .collect(),
        )
    }

    /// `n` steps and their importance weights `p_t · T` (1 under uniform sampling).
    pub fn sample(&self, n: usize, rng: &mut impl Rng) -> (Vec<usize>, Vec<f64>) {
        let steps = self.counts.len();
        match self.distribution() {
            None => (
                (0..n).map(|_| rng.gen_range(0..steps)).collect(),
                vec![1.0; n],
            ),
            Some(p) => {
                let mut cdf = p.clone();
                for k in 1..steps {
                    cdf[k] += cdf[k - 1];
                }
                let ts: Vec<usize> = (0..n)
                    .map(|_| {
                        let u = rng.gen::<f64>() * cdf[steps - 1];
                        cdf.partition_point(|&c| c <= u).min(steps - 1)
                    })
                    .collect();
                let pt = ts.iter().map(|&t| p[t] * steps as f64).collect();
                (ts, pt)
            }
        }
    }
}

/// T-DiffRec's interaction weights: `n` values from `w_min` to `w_max`, evenly spaced (numpy's
/// `linspace`; one value is `w_min`).
pub fn time_weights(n: usize, w_min: f32, w_max: f32) -> Vec<f32> {
    linspace(w_min as f64, w_max as f64, n)
        .into_iter()
        .map(|w| w as f32)
        .collect()
}

/// T-DiffRec's training rows.
struct TimeAware {
    w_min: f32,
    w_max: f32,
    /// `[1 × nnz]`: the weight of each entry of the training CSR, in its order (a checkpoint
    /// carries them, as the time order is not kept in it)
    values: ParamId,
}

fn activation(name: &str) -> Option<Activation> {
    match name {
        "tanh" => Some(Activation::Tanh),
        "relu" => Some(Activation::Relu),
        "sigmoid" => Some(Activation::Sigmoid),
        "none" | "linear" => Some(Activation::Linear),
        _ => None,
    }
}

pub(crate) fn activate(g: &mut Graph, x: NodeId, act: Activation) -> NodeId {
    match act {
        Activation::Linear => x,
        Activation::Tanh => g.tanh(x),
        Activation::Relu => g.relu(x),
        Activation::Sigmoid => g.sigmoid(x),
    }
}

/// What DiffRec and L-DiffRec share: the noise schedule, the step sampler with its loss
/// history, and the denoiser (RecBole's `DNN`) over vectors of `dim` values — a user's row
/// (DiffRec) or its latent (L-DiffRec).
pub(crate) struct Diffusion {
    /// Linear(e, e) over the step embedding
    step_layer: Layer,
    /// the first layer's rows that meet `x_t` (`[dim × h]`) and the step embedding (`[e × h]`)
    first_x: ParamId,
    first_step: ParamId,
    first_bias: ParamId,
    rest: Vec<Layer>,
    act: Activation,
    /// none when `noise_scale` is 0 (the denoiser is then applied `steps` times)
    schedule: Option<DiffusionSchedule>,
    steps: usize,
    reweight: bool,
    norm: bool,
    embedding_size: usize,
    dim: usize,
    history: Mutex<StepLosses>,
}

impl Diffusion {
    /// Reads the diffusion keys of `cfg` and adds the denoiser's parameters (`mlp.…`) to
    /// `params`.
    pub(crate) fn new(
        cfg: &ModelConfig,
        params: &mut ParamStore,
        rng: &mut StdRng,
        dim: usize,
        noise_defaults: (f64, f64, f64),
    ) -> Result<Self> {
        let e = |x: recforge_data::DataError| config_error(cfg, x.to_string());
        let bad = |msg: String| config_error(cfg, msg);
        let mean_type = cfg.str_or("mean_type", "x0");
        if mean_type != "x0" {
            return Err(bad(format!(
                "mean_type `{mean_type}`: DiffRec here predicts x0 (`eps` is not built)"
            )));
        }
        if cfg.usize_or("sampling_steps", 0).map_err(e)? != 0
            || cfg.bool_or("sampling_noise", false).map_err(e)?
        {
            return Err(bad(
                "sampling_steps > 0 and sampling_noise are not built: ranking starts from the \
                 un-noised row and adds no noise (DiffRec's tuned settings)"
                    .into(),
            ));
        }
        let steps = cfg.positive_usize_or("steps", 5).map_err(e)?;
        let schedule_name = cfg.str_or("noise_schedule", "linear");
        let kind = NoiseSchedule::parse(&schedule_name).ok_or_else(|| {
            bad(format!(
                "noise_schedule `{schedule_name}` (linear, linear-var)"
            ))
        })?;
        let (scale, min, max) = noise_defaults;
        let noise_scale = cfg.non_negative_f64_or("noise_scale", scale).map_err(e)?;
        let schedule = if noise_scale == 0.0 {
            None
        } else {
            Some(
                DiffusionSchedule::new(
                    kind,
                    steps,
                    noise_scale,
                    cfg.non_negative_f64_or("noise_min", min).map_err(e)?,
                    cfg.non_negative_f64_or("noise_max", max).map_err(e)?,
                    cfg.bool_or("beta_fixed", true).map_err(e)?,
                )
                .map_err(bad)?,
            )
        };
        let hidden = cfg.usize_list_or("dims_dnn", &[300]).map_err(e)?;
        if hidden.contains(&0) {
            return Err(bad(format!("dims_dnn {hidden:?}: sizes must be positive")));
        }
        let act_name = cfg.str_or("mlp_act_func", "tanh");
        let act = activation(&act_name).ok_or_else(|| {
            bad(format!(
                "mlp_act_func `{act_name}` (tanh, relu, sigmoid, none)"
            ))
        })?;
        let emb = cfg.positive_usize_or("embedding_size", 10).map_err(e)?;
        let capacity = cfg
            .positive_usize_or("history_num_per_term", 10)
            .map_err(e)?;
        let step_layer = mlp(params, rng, "mlp.emb_layer", &[emb, emb])
            .pop()
            .expect("one layer");
        // RecBole's first Linear is (dim + e) → h: drawn whole, then split by rows
        let h0 = hidden.first().copied().unwrap_or(dim);
        let w = init::xavier_normal(rng, dim + emb, h0);
        let first_x = params.add(
            "mlp.mlp_layers.0.weight",
            Tensor::from_vec(dim, h0, w.data[..dim * h0].to_vec()),
            true,
            true,
        );
        let first_step = params.add(
            "mlp.mlp_layers.0.step_weight",
            Tensor::from_vec(emb, h0, w.data[dim * h0..].to_vec()),
            true,
            true,
        );
        let first_bias = params.add("mlp.mlp_layers.0.bias", Tensor::zeros(1, h0), true, true);
        let dims: Vec<usize> = hidden.iter().copied().chain([dim]).collect();
        let rest = mlp(params, rng, "mlp.mlp_layers.rest", &dims);
        Ok(Diffusion {
            step_layer,
            first_x,
            first_step,
            first_bias,
            rest,
            act,
            reweight: cfg.bool_or("reweight", true).map_err(e)? && schedule.is_some(),
            schedule,
            steps,
            norm: cfg.bool_or("norm", false).map_err(e)?,
            embedding_size: emb,
            dim,
            history: Mutex::new(StepLosses::new(steps, capacity)),
        })
    }

    /// The denoiser's x₀ prediction from `x` (`B × dim`) at per-row steps `ts`: L2-normalised
    /// rows under `norm`, dropped out when `rng` is given and the graph trains.
    fn denoise(&self, g: &mut Graph, x: NodeId, ts: &[usize], rng: Option<&mut StdRng>) -> NodeId {
        let b = ts.len();
        let mut x = x;
        if self.norm {
            x = g.custom(RowNormalize, &[x]);
        }
        if let Some(rng) = rng {
            x = g.dropout(x, INPUT_DROPOUT, rng);
        }
        let e = self.embedding_size;
        let temb = g.input(
            Tensor::from_vec(b, e, timestep_embedding(ts, e, MAX_PERIOD)),
            false,
        );
        let emb = g.dense(
            temb,
            self.step_layer.w,
            Some(self.step_layer.b),
            Activation::Linear,
        );
        let hx = g.dense(x, self.first_x, Some(self.first_bias), Activation::Linear);
        let he = g.dense(emb, self.first_step, None, Activation::Linear);
        let h = g.add(hx, he);
        if self.rest.is_empty() {
            return h;
        }
        let h = activate(g, h, self.act);
        run(g, &self.rest, h, self.act)
    }

    /// Steps for a batch of `b` rows and their importance weights.
    pub(crate) fn draw_steps(&self, b: usize, rng: &mut StdRng) -> (Vec<usize>, Vec<f64>) {
        let h = self.history.lock().unwrap_or_else(|p| p.into_inner());
        h.sample(b, rng)
    }

    /// Standard normal noise for `b` rows (none without a schedule).
    pub(crate) fn noise(&self, b: usize, rng: &mut StdRng) -> Vec<f32> {
        match self.schedule {
            Some(_) => (0..b * self.dim)
                .map(|_| rng.sample(StandardNormal))
                .collect(),
            None => Vec::new(),
        }
    }

    /// Records each row's weighted loss under its step.
    pub(crate) fn record(&self, ts: &[usize], recorded: Vec<f64>) {
        let mut h = self.history.lock().unwrap_or_else(|p| p.into_inner());
        for (&t, l) in ts.iter().zip(recorded) {
            h.record(t, l);
        }
    }

    /// The diffusion loss of `x0` (`B × dim`, a node that may carry a gradient) at steps `ts`
    /// with importance weights `pt` and noise `noise`: `mean_b (w_t · mse_b / pt_b)`. Returns
    /// it with each row's `w_t · mse_b` (what the step history records) and the denoiser's
    /// x₀ prediction.
    pub(crate) fn loss(
        &self,
        g: &mut Graph,
        x0: NodeId,
        ts: &[usize],
        pt: &[f64],
        noise: &[f32],
        rng: Option<&mut StdRng>,
    ) -> (NodeId, Vec<f64>, NodeId) {
        let (b, n) = (ts.len(), self.dim);
        let x_t = match &self.schedule {
            None => x0,
            Some(s) => s.q_sample(g, x0, ts, noise),
        };
        let pred = self.denoise(g, x_t, ts, rng);
        let neg = g.scale(x0, -1.0);
        let diff = g.add(pred, neg);
        let sq = g.mul(diff, diff);
        let sums = g.sum_cols(sq);
        let weights: Vec<f64> = ts
            .iter()
            .map(|&t| match (&self.schedule, self.reweight) {
                (Some(s), true) => s.loss_weight(t),
                _ => 1.0,
            })
            .collect();
        let recorded: Vec<f64> = g
            .value(sums)
            .data
            .iter()
            .zip(&weights)
            .map(|(&s, w)| w * s as f64 / n as f64)
            .collect();
        let coefs: Vec<f32> = weights
            .iter()
            .zip(pt)
            .map(|(w, p)| (w / (p * n as f64 * b as f64)) as f32)
            .collect();
        let c = g.input(Tensor::from_vec(b, 1, coefs), false);
        let scaled = g.scale_rows(sums, c);
        (g.sum_all(scaled), recorded, pred)
    }

    /// Every reverse step from `rows` (`B × dim`), with no noise added.
    pub(crate) fn reverse(&self, params: &ParamStore, rows: Vec<f32>, b: usize) -> Vec<f32> {
        let step = |x: &[f32], t: usize| -> Vec<f32> {
            let mut g = Graph::inference(params);
            let xn = g.input(Tensor::from_vec(b, self.dim, x.to_vec()), false);
            let y = self.denoise(&mut g, xn, &vec![t; b], None);
            g.take_value(y).data
        };
        match &self.schedule {
            Some(s) => s.reverse(&rows, step),
            None => (0..self.steps).rev().fold(rows, |x, t| step(&x, t)),
        }
    }

    pub(crate) fn step_losses(&self) -> StepLosses {
        self.history
            .lock()
            .map(|h| h.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }
}

/// `x / max(‖x‖₂, 1e-12)` per row (`F.normalize`), for `norm: true`.
struct RowNormalize;

impl recforge_nn::CustomOp for RowNormalize {
    fn name(&self) -> &'static str {
        "row_normalize"
    }

    fn forward(&mut self, inputs: &[&Tensor]) -> Tensor {
        let x = inputs[0];
        let mut out = x.clone();
        for row in out.data.chunks_exact_mut(x.cols.max(1)) {
            let inv = 1.0 / row.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
            row.iter_mut().for_each(|v| *v *= inv);
        }
        out
    }

    fn backward(
        &self,
        inputs: &[&Tensor],
        output: &Tensor,
        grad: &Tensor,
        needs: &[bool],
    ) -> Vec<Option<Tensor>> {
        if !needs[0] {
            return vec![None];
        }
        // d(x / ‖x‖) = (g − y (y · g)) / ‖x‖
        let x = inputs[0];
        let c = x.cols.max(1);
        let mut gx = grad.clone();
        for ((gr, yr), xr) in gx
            .data
            .chunks_exact_mut(c)
            .zip(output.data.chunks_exact(c))
            .zip(x.data.chunks_exact(c))
        {
            let norm = xr.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
            let dot: f32 = gr.iter().zip(yr).map(|(g, y)| g * y).sum();
            gr.iter_mut()
                .zip(yr)
                .for_each(|(g, y)| *g = (*g - y * dot) / norm);
        }
        vec![Some(gx)]
    }
}

pub struct DiffRec {
    params: ParamStore,
    diffusion: Diffusion,
    time_aware: Option<TimeAware>,
    train: UserItems,
    n_items: usize,
}

/// RecBole's DiffRec defaults for noise_scale, noise_min and noise_max.
const DIFFREC_NOISE: (f64, f64, f64) = (0.001, 0.0005, 0.005);

impl DiffRec {
    pub fn new(cfg: &ModelConfig, shape: TopkShape, train: &UserItems, seed: u64) -> Result<Self> {
        let e = |x: recforge_data::DataError| config_error(cfg, x.to_string());
        let n = shape.n_items;
        let mut rng = StdRng::seed_from_u64(seed);
        let mut params = ParamStore::new();
        let diffusion = Diffusion::new(cfg, &mut params, &mut rng, n, DIFFREC_NOISE)?;
        let time_aware = match cfg.bool_or("time-aware", false).map_err(e)? {
            false => None,
            true => {
                let w_min = cfg.non_negative_f32_or("w_min", 0.1).map_err(e)?;
                let w_max = cfg.non_negative_f32_or("w_max", 1.0).map_err(e)?;
                if w_min > w_max {
                    return Err(config_error(
                        cfg,
                        format!("w_min {w_min} is above w_max {w_max}"),
                    ));
                }
                let values = params.add(
                    "history_value",
                    Tensor::from_vec(1, train.nnz(), vec![w_max; train.nnz()]),
                    false,
                    false,
                );
                Some(TimeAware {
                    w_min,
                    w_max,
                    values,
                })
            }
        };
        Ok(DiffRec {
            params,
            diffusion,
            time_aware,
            train: train.clone(),
            n_items: n,
        })
    }

    /// The model's input rows for `users`: their training rows, or T-DiffRec's weighted rows.
    fn start_rows(&self, users: &[u32], binary: Option<&[f32]>) -> Vec<f32> {
        let n = self.n_items;
        let Some(ta) = &self.time_aware else {
            return match binary {
                Some(rows) => rows.to_vec(),
                None => history_rows(&self.train, users, n),
            };
        };
        let values = &self.params.value(ta.values).data;
        let mut rows = vec![0.0f32; users.len() * n];
        for (r, &u) in users.iter().enumerate() {
            let start = self.train.indptr[u as usize];
            for (k, &i) in self.train.row(u).iter().enumerate() {
                rows[r * n + i as usize] = values[start + k];
            }
        }
        rows
    }

    /// The training loss for start rows `x0` (`B × n`) at steps `ts`, importance weights `pt`
    /// and noise `noise`, with each row's recorded `w_t · mse_b` ([`Diffusion::loss`]).
    pub fn loss_at(
        &self,
        g: &mut Graph,
        x0: Vec<f32>,
        ts: &[usize],
        pt: &[f64],
        noise: &[f32],
        rng: Option<&mut StdRng>,
    ) -> (NodeId, Vec<f64>) {
        let x0 = g.input(Tensor::from_vec(ts.len(), self.n_items, x0), false);
        let (loss, recorded, _) = self.diffusion.loss(g, x0, ts, pt, noise, rng);
        (loss, recorded)
    }

    /// The step history (for tests and logs).
    pub fn step_losses(&self) -> StepLosses {
        self.diffusion.step_losses()
    }
}

impl TopkModel for DiffRec {
    fn name(&self) -> &'static str {
        "DiffRec"
    }

    fn input(&self) -> TopkInput {
        TopkInput::Users
    }

    fn params(&self) -> &ParamStore {
        &self.params
    }

    fn params_mut(&mut self) -> &mut ParamStore {
        &mut self.params
    }

    fn prepare_training(&mut self, data: &Interactions) -> Result<()> {
        let Some(ta) = &self.time_aware else {
            return Ok(());
        };
        // each user's training items get linspace(w_min, w_max) in time order; a repeated
        // item keeps its latest weight
        let mut values = vec![0.0f32; self.train.nnz()];
        let timeline = data.train_in_time_order();
        for user in timeline.chunk_by(|a, b| a.0 == b.0) {
            let u = user[0].0;
            let start = self.train.indptr[u as usize];
            let row = self.train.row(u);
            for (&(_, i), w) in user
                .iter()
                .zip(time_weights(user.len(), ta.w_min, ta.w_max))
            {
                if let Ok(k) = row.binary_search(&i) {
                    values[start + k] = w;
                }
            }
        }
        self.params.value_mut(ta.values).data = values;
        Ok(())
    }

    fn loss(&self, g: &mut Graph, batch: &TopkBatch, _step: u64, rng: &mut StdRng) -> NodeId {
        let TopkBatch::Users { users, rows } = batch else {
            panic!("DiffRec trains on batches of users")
        };
        let b = users.len();
        let x0 = self.start_rows(users, Some(rows));
        let (ts, pt) = self.diffusion.draw_steps(b, rng);
        let noise = self.diffusion.noise(b, rng);
        let (loss, recorded) = self.loss_at(g, x0, &ts, &pt, &noise, Some(rng));
        self.diffusion.record(&ts, recorded);
        loss
    }

    fn score_users(&self, users: &[u32], _history: &UserItems, out: &mut [f32]) {
        // the model's own training rows (T-DiffRec's carry their weights)
        let rows = self.start_rows(users, None);
        out.copy_from_slice(&self.diffusion.reverse(&self.params, rows, users.len()));
    }

    fn score_history(&self, items: &[u32], out: &mut [f32]) {
        let mut row = vec![0.0f32; self.n_items];
        let weights = match &self.time_aware {
            Some(t) => time_weights(items.len(), t.w_min, t.w_max),
            None => vec![1.0; items.len()],
        };
        for (&i, w) in items.iter().zip(weights) {
            row[i as usize] = w;
        }
        out.copy_from_slice(&self.diffusion.reverse(&self.params, row, 1));
    }

    fn item_vectors(&self) -> Option<Tensor> {
        // the output layer's weights, one column per item (none for a one-layer denoiser)
        let last = self.diffusion.rest.last()?;
        Some(columns_as_rows(self.params.value(last.w)))
    }
}
