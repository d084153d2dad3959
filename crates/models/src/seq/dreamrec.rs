//! DreamRec (Yang et al., NeurIPS'23; YangZhengyi98/DreamRec): the next item is generated, not
//! classified. A causal encoder reads the history into `h`; a diffusion model over item
//! embeddings learns to denoise the next item's embedding `x₀ = E[next]` from `x_t`, `h` and the
//! step, predicting x₀ (`L = ‖x₀ − f(x_t, h, t)‖²`, steps uniform). With probability `p` a row's
//! `h` is replaced by a learned "no history" vector, so the same network is also the
//! unconditional model. Ranking samples an oracle embedding from pure noise through every
//! reverse step with classifier-free guidance, `x̂₀ = (1 + w)·f(x, h, t) − w·f(x, ∅, t)`, adding
//! the posterior noise except at the last step, and scores each item by `x · E[item]`.
//!
//! DreamRec's objective is the MSE alone, with the item table trained through it; nothing then
//! keeps the items apart, and on Amazon Beauty the table collapses (the loss goes to zero while
//! ranking stays at chance; DreamRec's issue #1 raises the same objection). `ce_weight` (recforge's
//! key, default 0 = DreamRec) adds a rounding term as DiffuSeq has: the cross-entropy of
//! `f(x_t, h, t) · Eᵀ` against the next item.
//!
//! The history encoder is recforge's SASRec (its keys: `n_layers`, `n_heads`, `hidden_size`, …)
//! where DreamRec has its own one-block transformer; the item table is drawn from N(0, 1) as
//! DreamRec's is. The denoiser is DreamRec's `mlp1` (one Linear(3d → d) over `[x_t, h, step]`)
//! or `mlp2` (Linear(3d → 2d), GELU, Linear(2d → d)); the step passes through DreamRec's
//! sinusoidal embedding and Linear(d → 2d), GELU, Linear(2d → d). Training scores every position
//! of a causal window (or RecBole's prefixes), as SASRec's does.

use super::sasrec::{encoder_keys, Dense, SasRec};
use super::{config_error, Packed, SeqModel, SeqShape};
use crate::topk::diffusion::{linspace, DiffusionSchedule};
use crate::Result;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::StandardNormal;
use recforge_data::sequences::Window;
use recforge_data::ModelConfig;
use recforge_nn::{init, Activation, Graph, NodeId, ParamId, ParamStore, Tensor};

pub(crate) const KEYS: &[&str] = encoder_keys!(
    "timesteps",
    "beta_sche",
    "beta_start",
    "beta_end",
    "w",
    "p",
    "diffuser_type",
    "ce_weight"
);

pub struct DreamRec {
    encoder: SasRec,
    none_embedding: ParamId,
    step_in: Dense,
    step_out: Dense,
    /// `mlp1`: one layer; `mlp2`: two with GELU between
    diffuser: Vec<Dense>,
    schedule: DiffusionSchedule,
    guidance: f32,
    uncond_prob: f32,
    /// the weight of the rounding term (0: DreamRec's loss)
    ce_weight: f32,
    d: usize,
}

/// DreamRec's β schedules (`beta_sche`): `linear` from `beta_start` to `beta_end`, `exp`
/// (β_min 0.1, β_max 10 over T steps) and `cosine` (s = 0.008, clipped to [1e-4, 0.9999]).
pub fn dreamrec_betas(kind: &str, steps: usize, start: f64, end: f64) -> Option<Vec<f64>> {
    let t = steps as f64;
    match kind {
        "linear" => Some(linspace(start, end, steps)),
        "exp" => {
            let (bmin, bmax) = (0.1, 10.0);
            Some(
                linspace(1.0, 2.0 * t + 1.0, steps)
                    .into_iter()
                    .map(|x| 1.0 - (-bmin / t - x * 0.5 * (bmax - bmin) / (t * t)).exp())
                    .collect(),
            )
        }
        "cosine" => {
            let s = 0.008;
            let ab: Vec<f64> = linspace(0.0, t, steps + 1)
                .into_iter()
                .map(|x| {
                    (((x / t) + s) / (1.0 + s) * std::f64::consts::FRAC_PI_2)
                        .cos()
                        .powi(2)
                })
                .collect();
            Some(
                ab.windows(2)
                    .map(|w| (1.0 - (w[1] / ab[0]) / (w[0] / ab[0])).clamp(1e-4, 0.9999))
                    .collect(),
            )
        }
        _ => None,
    }
}

/// DreamRec's step embedding: `[sin(t·f_i), cos(t·f_i)]` with `f_i = e^{−i·ln(10⁴)/(h − 1)}`,
/// `h = dim / 2`; row-major `[steps.len() × dim]` (a zero column after them when `dim` is odd).
pub fn step_embedding(steps: &[usize], dim: usize) -> Vec<f32> {
    let half = dim / 2;
    let scale = 10_000f64.ln() / (half.max(2) - 1) as f64;
    let mut out = vec![0.0f32; steps.len() * dim];
    for (row, &t) in out.chunks_exact_mut(dim.max(1)).zip(steps) {
        for i in 0..half {
            let arg = t as f64 * (-(i as f64) * scale).exp();
            row[i] = arg.sin() as f32;
            row[half + i] = arg.cos() as f32;
        }
    }
    out
}

impl DreamRec {
    pub fn new(cfg: &ModelConfig, shape: SeqShape, seed: u64) -> Result<Self> {
        let e = |x: recforge_data::DataError| config_error(cfg, x.to_string());
        let bad = |msg: String| config_error(cfg, msg);
        let mut encoder = SasRec::new(cfg, shape, seed)?;
        let d = encoder.hidden_size();
        let steps = cfg.positive_usize_or("timesteps", 500).map_err(e)?;
        let kind = cfg.str_or("beta_sche", "exp");
        let start = cfg.non_negative_f64_or("beta_start", 1e-4).map_err(e)?;
        let end = cfg.non_negative_f64_or("beta_end", 0.02).map_err(e)?;
        let betas = dreamrec_betas(&kind, steps, start, end)
            .ok_or_else(|| bad(format!("beta_sche `{kind}` (linear, exp, cosine)")))?;
        if betas.iter().any(|b| !(*b > 0.0 && *b < 1.0)) {
            return Err(bad(format!(
                "beta_sche {kind} with beta_start {start}, beta_end {end}: every β must lie in (0, 1)"
            )));
        }
        let guidance = cfg.non_negative_f32_or("w", 2.0).map_err(e)?;
        let uncond_prob = cfg.non_negative_f32_or("p", 0.1).map_err(e)?;
        if uncond_prob >= 1.0 {
            return Err(bad(format!("p {uncond_prob} must be below 1")));
        }
        let depth = match cfg.str_or("diffuser_type", "mlp1").as_str() {
            "mlp1" => 1,
            "mlp2" => 2,
            other => return Err(bad(format!("diffuser_type `{other}` (mlp1, mlp2)"))),
        };
        let mut rng = StdRng::seed_from_u64(seed ^ 0xd7ea);
        let items = encoder.item_table();
        let params = encoder.params_mut();
        // DreamRec draws its item table and the "no history" vector from N(0, 1)
        params.value_mut(items).data = init::normal(&mut rng, shape.n_items + 1, d, 1.0).data;
        let none_embedding = params.add(
            "none_embedding.weight",
            init::normal(&mut rng, 1, d, 1.0),
            true,
            false,
        );
        // PyTorch's Linear default: U(±1/√fan_in) for weights and biases
        let mut dense = |params: &mut ParamStore, name: &str, inp: usize, out: usize| {
            let bound = 1.0 / (inp as f32).sqrt();
            Dense {
                w: params.add(
                    format!("{name}.weight"),
                    init::uniform(&mut rng, inp, out, bound),
                    true,
                    true,
                ),
                b: params.add(
                    format!("{name}.bias"),
                    init::uniform(&mut rng, 1, out, bound),
                    true,
                    false,
                ),
            }
        };
        let step_in = dense(params, "step_mlp.1", d, 2 * d);
        let step_out = dense(params, "step_mlp.3", 2 * d, d);
        let diffuser = match depth {
            1 => vec![dense(params, "diffuser.0", 3 * d, d)],
            _ => vec![
                dense(params, "diffuser.0", 3 * d, 2 * d),
                dense(params, "diffuser.2", 2 * d, d),
            ],
        };
        Ok(DreamRec {
            encoder,
            none_embedding,
            step_in,
            step_out,
            diffuser,
            schedule: DiffusionSchedule::from_betas(betas),
            guidance,
            uncond_prob,
            ce_weight: cfg.non_negative_f32_or("ce_weight", 0.0).map_err(e)?,
            d,
        })
    }

    /// The denoiser's x₀ prediction from `x` and `h` (each `B × d`) at per-row steps `ts`.
    fn denoise(&self, g: &mut Graph, x: NodeId, h: NodeId, ts: &[usize]) -> NodeId {
        let temb = g.input(
            Tensor::from_vec(ts.len(), self.d, step_embedding(ts, self.d)),
            false,
        );
        let t = g.linear(temb, self.step_in.w, Some(self.step_in.b));
        let t = g.gelu(t);
        let t = g.linear(t, self.step_out.w, Some(self.step_out.b));
        let mut z = g.concat(&[x, h, t]);
        for (k, l) in self.diffuser.iter().enumerate() {
            z = g.dense(z, l.w, Some(l.b), Activation::Linear);
            if k + 1 < self.diffuser.len() {
                z = g.gelu(z);
            }
        }
        z
    }

    /// The history encodings at the scored rows of `packed`.
    fn histories(&self, g: &mut Graph, packed: &Packed, rng: &mut StdRng) -> NodeId {
        let hs = self.encoder.encode(g, packed, rng);
        g.gather_rows(hs, &packed.scored_rows)
    }

    /// The denoiser on values: x₀ predictions for rows `x` and `h` (each `B × d`) at `ts`
    /// (the tape's path, which training takes; sampling has its own).
    #[cfg(test)]
    fn denoise_values(&self, x: &[f32], h: &[f32], ts: &[usize]) -> Vec<f32> {
        let mut g = Graph::inference(self.params());
        let b = ts.len();
        let xn = g.input(Tensor::from_vec(b, self.d, x.to_vec()), false);
        let hn = g.input(Tensor::from_vec(b, self.d, h.to_vec()), false);
        let y = self.denoise(&mut g, xn, hn, ts);
        g.take_value(y).data
    }

    /// `a[m × k] · b[k × n]` (+ `bias`, one row, when given).
    fn product(
        a: &[f32],
        b: &[f32],
        m: usize,
        k: usize,
        n: usize,
        bias: Option<&[f32]>,
    ) -> Vec<f32> {
        let mut out = recforge_nn::kernels::matmul_new(a, b, m, n, k, false, false);
        if let Some(bias) = bias {
            for row in out.chunks_exact_mut(n) {
                row.iter_mut().zip(bias).for_each(|(v, b)| *v += b);
            }
        }
        out
    }

    /// What stays fixed while one block of histories is sampled: the first diffuser layer's
    /// share of each history (`h · W_h + b`) and of the "no history" vector.
    fn history_terms(&self, h: &[f32]) -> (Vec<f32>, Vec<f32>) {
        let (d, first) = (self.d, self.diffuser[0]);
        let p = self.params();
        let w = &p.value(first.w).data;
        let o = p.value(first.w).cols;
        let w_h = &w[d * o..2 * d * o];
        let bias = &p.value(first.b).data;
        let cond = Self::product(h, w_h, h.len() / d, d, o, Some(bias));
        let none = &p.value(self.none_embedding).data;
        (cond, Self::product(none, w_h, 1, d, o, Some(bias)))
    }

    /// One guided reverse step at `t` on `x` (`B × d`), with the history terms of
    /// [`DreamRec::history_terms`]: `x ← c1·x̂₀ + c2·x (+ σ_t·z for t > 0)` with
    /// `x̂₀ = (1 + w)·f(x, h, t) − w·f(x, ∅, t)`. The first diffuser layer is split by its
    /// inputs, so a step multiplies only `x` (shared by both passes) and one step embedding.
    fn guided_step(&self, x: &mut [f32], terms: &(Vec<f32>, Vec<f32>), t: usize, rng: &mut StdRng) {
        let (d, b) = (self.d, x.len() / self.d);
        let p = self.params();
        let first = self.diffuser[0];
        let (w0, o) = (&p.value(first.w).data, p.value(first.w).cols);
        // the step's embedding through step_mlp and its share of the first layer
        let temb = step_embedding(&[t], d);
        let si = &self.step_in;
        let mut s1 = Self::product(
            &temb,
            &p.value(si.w).data,
            1,
            d,
            2 * d,
            Some(&p.value(si.b).data),
        );
        s1.iter_mut()
            .for_each(|v| *v = recforge_nn::transformer::gelu(*v));
        let so = &self.step_out;
        let s2 = Self::product(
            &s1,
            &p.value(so.w).data,
            1,
            2 * d,
            d,
            Some(&p.value(so.b).data),
        );
        let t_term = Self::product(&s2, &w0[2 * d * o..], 1, d, o, None);
        let x_term = Self::product(x, &w0[..d * o], b, d, o, None);
        // rows 0..B conditional, B..2B unconditional
        let mut z = vec![0.0f32; 2 * b * o];
        let (cond, uncond) = z.split_at_mut(b * o);
        for r in 0..b {
            for j in 0..o {
                let shared = x_term[r * o + j] + t_term[j];
                cond[r * o + j] = shared + terms.0[r * o + j];
                uncond[r * o + j] = shared + terms.1[j];
            }
        }
        let pred = match self.diffuser.get(1) {
            None => z,
            Some(second) => {
                z.iter_mut()
                    .for_each(|v| *v = recforge_nn::transformer::gelu(*v));
                let w1 = &p.value(second.w).data;
                Self::product(&z, w1, 2 * b, o, d, Some(&p.value(second.b).data))
            }
        };
        let (c1, c2) = (
            self.schedule.posterior_mean_coef1[t] as f32,
            self.schedule.posterior_mean_coef2[t] as f32,
        );
        let sd = self.schedule.posterior_variance(t).sqrt() as f32;
        let w = self.guidance;
        let (cond, uncond) = pred.split_at(b * d);
        for (k, xi) in x.iter_mut().enumerate() {
            let x0 = (1.0 + w) * cond[k] - w * uncond[k];
            *xi = c1 * x0 + c2 * *xi;
            if t > 0 {
                *xi += sd * rng.sample::<f32, _>(StandardNormal);
            }
        }
    }

    /// Samples one oracle embedding per row of `h` (`B × d`): every reverse step from N(0, I)
    /// with classifier-free guidance, the posterior noise added except at t = 0.
    pub fn sample(&self, h: &[f32], rng: &mut StdRng) -> Vec<f32> {
        let mut x: Vec<f32> = (0..h.len()).map(|_| rng.sample(StandardNormal)).collect();
        let terms = self.history_terms(h);
        for t in (0..self.schedule.steps()).rev() {
            self.guided_step(&mut x, &terms, t, rng);
        }
        x
    }
}

impl SeqModel for DreamRec {
    fn name(&self) -> &'static str {
        "DreamRec"
    }

    fn params(&self) -> &ParamStore {
        self.encoder.params()
    }

    fn params_mut(&mut self) -> &mut ParamStore {
        self.encoder.params_mut()
    }

    fn max_len(&self) -> usize {
        self.encoder.max_len()
    }

    /// Scores of every id from an oracle embedding sampled for each scored row.
    fn logits(&self, g: &mut Graph, packed: &Packed, rng: &mut StdRng) -> NodeId {
        let h = self.histories(g, packed, rng);
        let oracle = self.sample(&g.value(h).data.clone(), rng);
        let x = g.input(
            Tensor::from_vec(packed.scored_rows.len(), self.d, oracle),
            false,
        );
        let items = g.param(self.encoder.item_table());
        g.matmul_nt(x, items)
    }

    /// DreamRec's x₀ loss: the mean squared error between each scored row's next-item
    /// embedding and its denoised prediction (steps uniform; `h` dropped to ∅ with
    /// probability `p`), plus `ce_weight` times the rounding cross-entropy.
    fn loss(&self, g: &mut Graph, windows: &[Window], rng: &mut StdRng) -> NodeId {
        let packed = Packed::windows(windows);
        let b = packed.scored_rows.len();
        let d = self.d;
        let h = self.histories(g, &packed, rng);
        let keep: Vec<f32> = (0..b)
            .map(|_| {
                if rng.gen::<f32>() < self.uncond_prob {
                    0.0
                } else {
                    1.0
                }
            })
            .collect();
        let drop: Vec<f32> = keep.iter().map(|k| 1.0 - k).collect();
        let keep = g.input(Tensor::from_vec(b, 1, keep), false);
        let drop = g.input(Tensor::from_vec(b, 1, drop), false);
        let none = g.param(self.none_embedding);
        let none = g.gather_rows(none, &vec![0; b]);
        let h = g.scale_rows(h, keep);
        let none = g.scale_rows(none, drop);
        let h = g.add(h, none);
        let items = g.param(self.encoder.item_table());
        let x0 = g.gather_rows(items, &packed.targets);
        let ts: Vec<usize> = (0..b)
            .map(|_| rng.gen_range(0..self.schedule.steps()))
            .collect();
        let noise: Vec<f32> = (0..b * d).map(|_| rng.sample(StandardNormal)).collect();
        let x_t = self.schedule.q_sample(g, x0, &ts, &noise);
        let pred = self.denoise(g, x_t, h, &ts);
        let neg = g.scale(x0, -1.0);
        let diff = g.add(pred, neg);
        let sq = g.mul(diff, diff);
        let mse = g.mean_all(sq);
        if self.ce_weight == 0.0 {
            return mse;
        }
        // the rounding term: the predicted embedding scored against every item, as a softmax
        let items = g.param(self.encoder.item_table());
        let logits = g.matmul_nt(pred, items);
        let ce = g.softmax_cross_entropy(logits, &packed.targets);
        let ce = g.scale(ce, self.ce_weight);
        g.add(mse, ce)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn floats(v: &Value) -> Vec<f32> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap() as f32)
            .collect()
    }

    fn close(a: f64, b: f64, rel: f64) -> bool {
        (a - b).abs() <= 1e-6 + rel * b.abs()
    }

    fn model(cfg: &[(&str, Value)]) -> DreamRec {
        let mut values: serde_json::Map<String, Value> = cfg
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        values.insert("model".into(), "DreamRec".into());
        DreamRec::new(&ModelConfig::new("t", values), SeqShape { n_items: 5 }, 0).unwrap()
    }

    /// DreamRec's own `Tenc` and `diffusion` (fixtures/dreamrec_reference.json, written by
    /// make_dreamrec_reference.py from YangZhengyi98/DreamRec's files).
    #[test]
    fn dreamrec_matches_its_reference_code() {
        let fx: Value =
            serde_json::from_str(include_str!("../../tests/fixtures/dreamrec_reference.json"))
                .unwrap();
        let steps = fx["steps"].as_u64().unwrap() as usize;
        for kind in ["linear", "exp", "cosine"] {
            let want = &fx["schedules"][kind];
            let betas = dreamrec_betas(kind, steps, 0.01, 0.2).unwrap();
            let s = DiffusionSchedule::from_betas(betas.clone());
            // DreamRec computes its schedules in f32
            for (k, (a, b)) in betas.iter().zip(floats(&want["betas"])).enumerate() {
                assert!(close(*a, b as f64, 1e-5), "{kind} β[{k}] {a} vs {b}");
            }
            for t in 0..steps {
                let (c1, c2, v) = (
                    floats(&want["coef1"])[t] as f64,
                    floats(&want["coef2"])[t] as f64,
                    floats(&want["variance"])[t] as f64,
                );
                assert!(close(s.posterior_mean_coef1[t], c1, 1e-4), "{kind} c1[{t}]");
                assert!(close(s.posterior_mean_coef2[t], c2, 1e-4), "{kind} c2[{t}]");
                assert!(close(s.posterior_variance(t), v, 1e-4), "{kind} σ²[{t}]");
            }
        }
        let mut m = model(&[
            ("hidden_size", 4.into()),
            ("inner_size", 8.into()),
            ("n_heads", 1.into()),
            ("n_layers", 1.into()),
            ("timesteps", steps.into()),
            ("beta_sche", "cosine".into()),
            ("beta_start", 0.01.into()),
            ("beta_end", 0.2.into()),
            ("w", fx["w"].clone()),
            ("diffuser_type", "mlp2".into()),
        ]);
        let ids: Vec<(ParamId, String)> = m
            .params()
            .iter()
            .map(|(id, p)| (id, p.name.clone()))
            .collect();
        for (name, w) in fx["weights"].as_object().unwrap() {
            let id = ids.iter().find(|(_, n)| n == name).expect(name).0;
            let p = m.params_mut().value_mut(id);
            let data = floats(&w["data"]);
            assert_eq!(p.data.len(), data.len(), "{name}");
            p.data = data;
        }
        let (x, h) = (floats(&fx["x"]), floats(&fx["h"]));
        let ts: Vec<usize> = serde_json::from_value(fx["t"].clone()).unwrap();
        let none = m.params().value(m.none_embedding).data.repeat(ts.len());
        let cond = m.denoise_values(&x, &h, &ts);
        let uncond = m.denoise_values(&x, &none, &ts);
        for (got, want) in [(cond, "cond"), (uncond, "uncond")] {
            for (k, (a, b)) in got.iter().zip(floats(&fx[want])).enumerate() {
                assert!(close(*a as f64, b as f64, 1e-4), "{want}[{k}] {a} vs {b}");
            }
        }
        // the last reverse step adds no noise: the guided posterior mean
        let mut last = x.clone();
        let terms = m.history_terms(&h);
        m.guided_step(&mut last, &terms, 0, &mut StdRng::seed_from_u64(0));
        for (k, (a, b)) in last.iter().zip(floats(&fx["last_step"])).enumerate() {
            assert!(
                close(*a as f64, b as f64, 1e-4),
                "last step [{k}] {a} vs {b}"
            );
        }
    }

    #[test]
    fn step_embedding_is_sines_then_cosines() {
        assert_eq!(step_embedding(&[0], 4), [0.0, 0.0, 1.0, 1.0]);
        // dim 4: f = [1, e^{−ln 10⁴}] = [1, 1e-4]
        let e = step_embedding(&[1], 4);
        let want = [1f64.sin(), 1e-4f64.sin(), 1f64.cos(), 1e-4f64.cos()];
        assert!(
            e.iter()
                .zip(want)
                .all(|(a, b)| (*a as f64 - b).abs() < 1e-7),
            "{e:?}"
        );
        assert!(dreamrec_betas("sqrt", 4, 0.1, 0.2).is_none());
    }
}
