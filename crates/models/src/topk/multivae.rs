//! MultiVAE (Liang et al., WWW'18; RecBole's `MultiVAE`): a user's training row, L2-normalised
//! and dropped out, encoded n → 600 → 2·(latent/2) (tanh between layers), the halves taken as
//! mu and logvar; z = mu + ε·exp(logvar/2) with ε ~ N(0, 0.01²) — RecBole's scale, not 1 —
//! decoded latent/2 → 600 → n. Loss: multinomial NLL of the raw row plus β·KL with
//! β = min(anneal_cap, step / total_anneal_steps) per batch. At evaluation z = mu.

use super::{
    columns_as_rows, config_error, history_rows, mlp, run, Layer, TopkBatch, TopkInput, TopkModel,
    TopkShape,
};
use crate::Result;
use rand::rngs::StdRng;
use rand::Rng;
use rand::SeedableRng;
use rand_distr::{Distribution, Normal};
use recforge_data::interactions::UserItems;
use recforge_data::ModelConfig;
use recforge_nn::{Activation, CsrMatrix, Graph, NodeId, ParamStore, SparseOperand, Tensor};

pub(crate) const KEYS: &[&str] = &[
    "mlp_hidden_size",
    "latent_dimension",
    "dropout_prob",
    "anneal_cap",
    "total_anneal_steps",
];

/// RecBole's reparameterisation noise scale.
const EPSILON_STD: f32 = 0.01;

pub struct MultiVae {
    params: ParamStore,
    encoder: Vec<Layer>,
    decoder: Vec<Layer>,
    half_latent: usize,
    dropout: f32,
    anneal_cap: f32,
    total_anneal_steps: u64,
    n_items: usize,
}

impl MultiVae {
    pub fn new(cfg: &ModelConfig, shape: TopkShape, seed: u64) -> Result<Self> {
        let e = |x: recforge_data::DataError| config_error(cfg, x.to_string());
        let hidden = cfg.usize_list_or("mlp_hidden_size", &[600]).map_err(e)?;
        let latent = cfg.positive_usize_or("latent_dimension", 128).map_err(e)?;
        if hidden.contains(&0) || latent < 2 || latent % 2 != 0 {
            return Err(config_error(
                cfg,
                format!("MultiVAE: mlp_hidden_size {hidden:?} must be positive and latent_dimension {latent} even"),
            ));
        }
        let dropout = cfg.non_negative_f64_or("dropout_prob", 0.5).map_err(e)? as f32;
        if dropout >= 1.0 {
            return Err(config_error(
                cfg,
                format!("dropout_prob must be below 1, got {dropout}"),
            ));
        }
        let mut rng = StdRng::seed_from_u64(seed);
        let mut params = ParamStore::new();
        let enc_dims: Vec<usize> = std::iter::once(shape.n_items)
            .chain(hidden.iter().copied())
            .chain([latent])
            .collect();
        let dec_dims: Vec<usize> = std::iter::once(latent / 2)
            .chain(hidden.iter().rev().copied())
            .chain([shape.n_items])
            .collect();
        let encoder = mlp(&mut params, &mut rng, "encoder", &enc_dims);
        let decoder = mlp(&mut params, &mut rng, "decoder", &dec_dims);
        Ok(MultiVae {
            params,
            encoder,
            decoder,
            half_latent: latent / 2,
            dropout,
            anneal_cap: cfg.non_negative_f32_or("anneal_cap", 0.2).map_err(e)?,
            total_anneal_steps: cfg.usize_or("total_anneal_steps", 200_000).map_err(e)? as u64,
            n_items: shape.n_items,
        })
    }

    /// The KL weight after `step` optimizer steps.
    pub fn anneal(&self, step: u64) -> f32 {
        if self.total_anneal_steps == 0 {
            self.anneal_cap
        } else {
            self.anneal_cap
                .min(step as f32 / self.total_anneal_steps as f32)
        }
    }

    /// The encoder's output from interaction rows (`B × n_items`, row-major). The input is
    /// sparse (a user touches a few percent of the items), so the normalised, dropped-out rows
    /// enter the first layer as a CSR matrix: `x · W` costs the row's non-zeros, not `n_items`.
    /// Dropout keeps each non-zero with probability 1 − p, scaled by 1 / (1 − p) (a zero stays
    /// zero either way, so this is dense dropout's distribution).
    fn encode(&self, g: &mut Graph, rows: &[f32], b: usize, rng: Option<&mut StdRng>) -> NodeId {
        let n = self.n_items;
        let keep = 1.0 - self.dropout;
        let mut rng = rng.filter(|_| g.train && self.dropout > 0.0);
        let mut entries = Vec::new();
        for (r, row) in rows.chunks_exact(n.max(1)).enumerate().take(b) {
            let inv = 1.0 / row.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
            for (i, &v) in row.iter().enumerate() {
                if v == 0.0 {
                    continue;
                }
                let v = match rng.as_deref_mut() {
                    Some(rng) => {
                        if rng.gen::<f32>() >= keep {
                            continue;
                        }
                        v * inv / keep
                    }
                    None => v * inv,
                };
                entries.push((r as u32, i as u32, v));
            }
        }
        let x = SparseOperand::new(CsrMatrix::from_triplets(b, n, entries));
        let first = &self.encoder[0];
        let w = g.param(first.w);
        let h = g.spmm(&x, w);
        let bias = g.param(first.b);
        let h = g.add_bias(h, bias);
        if self.encoder.len() == 1 {
            return h;
        }
        let h = g.tanh(h);
        run(g, &self.encoder[1..], h, Activation::Tanh)
    }

    /// Logits of every item from `rows` (`B × n_items`), with z = mu.
    fn decode_mean(&self, rows: Vec<f32>, b: usize) -> Tensor {
        let mut g = Graph::inference(&self.params);
        let h = self.encode(&mut g, &rows, b, None);
        let mu = g.slice_cols(h, 0, self.half_latent);
        let z = run(&mut g, &self.decoder, mu, Activation::Tanh);
        g.take_value(z)
    }
}

impl TopkModel for MultiVae {
    fn name(&self) -> &'static str {
        "MultiVAE"
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

    fn loss(&self, g: &mut Graph, batch: &TopkBatch, step: u64, rng: &mut StdRng) -> NodeId {
        let TopkBatch::Users { users, rows } = batch else {
            panic!("MultiVAE trains on batches of users")
        };
        let b = users.len();
        let h = self.encode(g, rows, b, Some(&mut *rng));
        let mu = g.slice_cols(h, 0, self.half_latent);
        let logvar = g.slice_cols(h, self.half_latent, self.half_latent);
        let normal = Normal::new(0.0f32, EPSILON_STD).expect("finite std");
        let eps: Vec<f32> = (0..b * self.half_latent)
            .map(|_| normal.sample(rng))
            .collect();
        let z = g.reparameterize(mu, logvar, eps);
        let logits = run(g, &self.decoder, z, Activation::Tanh);
        let nll = g.multinomial_nll(logits, rows.clone());
        let kl = g.gaussian_kl(mu, logvar);
        let kl = g.scale(kl, self.anneal(step));
        g.add(nll, kl)
    }

    fn score_users(&self, users: &[u32], history: &UserItems, out: &mut [f32]) {
        let rows = history_rows(history, users, self.n_items);
        out.copy_from_slice(&self.decode_mean(rows, users.len()).data);
    }

    fn score_history(&self, items: &[u32], out: &mut [f32]) {
        let mut row = vec![0.0f32; self.n_items];
        for &i in items {
            row[i as usize] = 1.0;
        }
        out.copy_from_slice(&self.decode_mean(row, 1).data);
    }

    fn item_vectors(&self) -> Option<Tensor> {
        // the decoder's output weights: one column per item
        let last = self.decoder.last().expect("a decoder layer");
        Some(columns_as_rows(self.params.value(last.w)))
    }
}
