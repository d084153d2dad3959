//! L-DiffRec (Wang et al., SIGIR'23; RecBole's `LDiffRec`): items are clustered (k-means on
//! item vectors, e.g. LightGCN's), each cluster's part of a user's row is encoded by its own
//! VAE encoder to a latent whose size is the cluster's share of `in_dims`, DiffRec's diffusion
//! runs on the concatenated latent, and one linear decoder maps the denoised latent back to
//! every item. Loss: `λ · diffusion + multinomial NLL + β · KL` with `λ = max(lamda · (1 −
//! updates / anneal_steps), anneal_cap)` and `β = min(vae_anneal_cap, updates /
//! vae_anneal_steps)`, per optimizer step as RecBole counts them.
//!
//! The encoder's and decoder's weights scale with the catalogue as `in_dims · n` each, against
//! DiffRec's `(2 · dims_dnn[0]) · n`: the memory the paper saves on large catalogues.
//!
//! The clusters come from `item_emb_file` (a `[n_items × d]` `.npy`, RecBole's `item_emb.npy`)
//! and are written into the checkpoint's config as `item_clusters`, so a saved model loads
//! without the file.

use super::diffrec::{activate, diffusion_keys, Diffusion};
use super::kmeans::kmeans;
use super::{config_error, mlp, Layer, TopkBatch, TopkInput, TopkModel, TopkShape};
use crate::Result;
use rand::rngs::StdRng;
use rand::SeedableRng;
use rand_distr::{Distribution, StandardNormal};
use recforge_data::interactions::{read_npy_matrix, UserItems};
use recforge_data::ModelConfig;
use recforge_nn::{Activation, Graph, NodeId, ParamStore, Tensor};
use serde_json::Value;

pub(crate) const KEYS: &[&str] = diffusion_keys!(
    "n_cate",
    "reparam",
    "in_dims",
    "out_dims",
    "ae_act_func",
    "lamda",
    "anneal_cap",
    "anneal_steps",
    "vae_anneal_cap",
    "vae_anneal_steps",
    "item_emb_file",
    "item_clusters"
);

/// The autoencoder drops its input out with this probability (RecBole's `AutoEncoder`).
const INPUT_DROPOUT: f32 = 0.1;
/// RecBole's LDiffRec defaults for noise_scale, noise_min and noise_max.
const LDIFFREC_NOISE: (f64, f64, f64) = (0.1, 0.001, 0.005);

struct Cluster {
    /// the cluster's items, ascending: columns `offset..offset + items.len()` of the permuted row
    items: Vec<u32>,
    offset: usize,
    encoder: Vec<Layer>,
    /// the cluster's latent size
    latent: usize,
}

pub struct LDiffRec {
    params: ParamStore,
    diffusion: Diffusion,
    clusters: Vec<Cluster>,
    /// Linear(latent → n_items), its outputs in cluster order
    decoder: Layer,
    /// `order[k]`: the item in column `k` of the permuted row
    order: Vec<u32>,
    ae_act: Activation,
    reparam: bool,
    lamda: f32,
    anneal_cap: f32,
    anneal_steps: u64,
    vae_anneal_cap: f32,
    vae_anneal_steps: u64,
    /// the cluster of each item, for the checkpoint's config
    assignment: Vec<usize>,
    n_items: usize,
}

/// Each item's cluster: `item_clusters` when the config has it (a checkpoint's), else k-means
/// over the rows of `item_emb_file`.
fn assign_clusters(
    cfg: &ModelConfig,
    n_items: usize,
    n_cate: usize,
    seed: u64,
) -> Result<Vec<usize>> {
    let bad = |msg: String| config_error(cfg, msg);
    if let Some(v) = cfg.get("item_clusters") {
        let ids: Vec<usize> = v
            .as_array()
            .and_then(|a| a.iter().map(|x| x.as_u64().map(|c| c as usize)).collect())
            .ok_or_else(|| bad("item_clusters: a list of cluster ids, one per item".into()))?;
        if ids.len() != n_items || ids.iter().any(|&c| c >= n_cate) {
            return Err(bad(format!(
                "item_clusters: {} ids below n_cate {n_cate} expected, one per item ({n_items})",
                n_items
            )));
        }
        return Ok(ids);
    }
    if n_cate == 1 {
        return Ok(vec![0; n_items]);
    }
    let path = cfg.str_or("item_emb_file", "");
    if path.is_empty() {
        return Err(bad(format!(
            "n_cate {n_cate} clusters items by their vectors: set item_emb_file to a \
             [n_items × d] .npy (e.g. `recforge item-vectors` of a LightGCN run)"
        )));
    }
    let (rows, cols, vectors) = read_npy_matrix(std::path::Path::new(&path))
        .map_err(|e| bad(format!("item_emb_file: {e}")))?;
    if rows != n_items {
        return Err(bad(format!(
            "item_emb_file {path}: {rows} rows for {n_items} items"
        )));
    }
    if n_cate > rows {
        return Err(bad(format!("n_cate {n_cate} is above the {rows} items")));
    }
    Ok(kmeans(&vectors, rows, cols, n_cate, seed, 1e-4, 300).0)
}

impl LDiffRec {
    pub fn new(cfg: &ModelConfig, shape: TopkShape, seed: u64) -> Result<Self> {
        let e = |x: recforge_data::DataError| config_error(cfg, x.to_string());
        let bad = |msg: String| config_error(cfg, msg);
        let n = shape.n_items;
        let n_cate = cfg.positive_usize_or("n_cate", 1).map_err(e)?;
        // RecBole lists in_dims from the latent outwards: the encoder runs them reversed
        let in_dims = cfg.usize_list_or("in_dims", &[300]).map_err(e)?;
        if in_dims.is_empty() || in_dims.contains(&0) {
            return Err(bad(format!(
                "in_dims {in_dims:?}: positive sizes, at least one"
            )));
        }
        let enc_dims: Vec<usize> = in_dims.iter().rev().copied().collect();
        if !cfg.usize_list_or("out_dims", &[]).map_err(e)?.is_empty() {
            return Err(bad(
                "out_dims: only the one-layer decoder (out_dims: []) is built".into(),
            ));
        }
        let ae_name = cfg.str_or("ae_act_func", "tanh");
        let ae_act = match ae_name.as_str() {
            "tanh" => Activation::Tanh,
            "relu" => Activation::Relu,
            "sigmoid" => Activation::Sigmoid,
            other => return Err(bad(format!("ae_act_func `{other}` (tanh, relu, sigmoid)"))),
        };
        let assignment = assign_clusters(cfg, n, n_cate, seed)?;
        let mut members: Vec<Vec<u32>> = vec![Vec::new(); n_cate];
        for (i, &c) in assignment.iter().enumerate() {
            members[c].push(i as u32);
        }
        if let Some(c) = members.iter().position(Vec::is_empty) {
            return Err(bad(format!(
                "item cluster {c} of n_cate {n_cate} has no items"
            )));
        }
        // each cluster's latent is its share of every in_dims size (at least 1); the last
        // cluster takes what is left
        let mut latents: Vec<Vec<usize>> = Vec::with_capacity(n_cate);
        for (c, items) in members.iter().enumerate() {
            let dims: Vec<usize> = if c + 1 == n_cate {
                enc_dims
                    .iter()
                    .enumerate()
                    .map(|(j, &d)| d.saturating_sub(latents.iter().map(|l| l[j]).sum()))
                    .collect()
            } else {
                enc_dims
                    .iter()
                    .map(|&d| ((items.len() as f64 / n as f64 * d as f64) as usize).max(1))
                    .collect()
            };
            if dims.contains(&0) {
                return Err(bad(format!(
                    "in_dims {in_dims:?} is too small to give each of {n_cate} clusters a latent"
                )));
            }
            latents.push(dims);
        }
        let mut rng = StdRng::seed_from_u64(seed);
        let mut params = ParamStore::new();
        let mut clusters = Vec::with_capacity(n_cate);
        let (mut offset, mut latent_offset) = (0, 0);
        for (c, (items, dims)) in members.into_iter().zip(&latents).enumerate() {
            let last = *dims.last().expect("in_dims is not empty");
            let layer_dims: Vec<usize> = std::iter::once(items.len())
                .chain(dims[..dims.len() - 1].iter().copied())
                .chain([2 * last])
                .collect();
            let encoder = mlp(
                &mut params,
                &mut rng,
                &format!("autoencoder.encoder.{c}"),
                &layer_dims,
            );
            let len = items.len();
            clusters.push(Cluster {
                items,
                offset,
                encoder,
                latent: last,
            });
            offset += len;
            latent_offset += last;
        }
        let latent = latent_offset;
        let decoder = mlp(&mut params, &mut rng, "autoencoder.decoder", &[latent, n])
            .pop()
            .expect("one layer");
        let diffusion = Diffusion::new(cfg, &mut params, &mut rng, latent, LDIFFREC_NOISE)?;
        let order: Vec<u32> = clusters
            .iter()
            .flat_map(|c| c.items.iter().copied())
            .collect();
        Ok(LDiffRec {
            params,
            diffusion,
            clusters,
            decoder,
            order,
            ae_act,
            reparam: cfg.bool_or("reparam", true).map_err(e)?,
            lamda: cfg.non_negative_f32_or("lamda", 0.03).map_err(e)?,
            anneal_cap: cfg.non_negative_f32_or("anneal_cap", 0.005).map_err(e)?,
            anneal_steps: cfg.usize_or("anneal_steps", 1000).map_err(e)? as u64,
            vae_anneal_cap: cfg.non_negative_f32_or("vae_anneal_cap", 0.3).map_err(e)?,
            vae_anneal_steps: cfg.usize_or("vae_anneal_steps", 200).map_err(e)? as u64,
            assignment,
            n_items: n,
        })
    }

    /// The diffusion loss's weight λ and the KL's weight β after `updates` optimizer steps.
    pub fn weights(&self, updates: u64) -> (f32, f32) {
        let lamda = match self.anneal_steps {
            0 => self.lamda.max(self.anneal_cap),
            s => ((1.0 - updates as f32 / s as f32) * self.lamda).max(self.anneal_cap),
        };
        let beta = match self.vae_anneal_steps {
            0 => self.vae_anneal_cap,
            s => self.vae_anneal_cap.min(updates as f32 / s as f32),
        };
        (lamda, beta)
    }

    /// Interaction rows of `users` with their columns in cluster order.
    fn permuted_rows(&self, history: &UserItems, users: &[u32]) -> Vec<f32> {
        let n = self.n_items;
        let mut column = vec![0usize; n];
        for (k, &i) in self.order.iter().enumerate() {
            column[i as usize] = k;
        }
        let mut rows = vec![0.0f32; users.len() * n];
        for (r, &u) in users.iter().enumerate() {
            for &i in history.row(u) {
                rows[r * n + column[i as usize]] = 1.0;
            }
        }
        rows
    }

    /// Each cluster's encoder over its columns of `x`: (mu, logvar), each `B × latent`.
    fn encode(&self, g: &mut Graph, x: NodeId) -> (NodeId, NodeId) {
        let (mut mus, mut logvars) = (Vec::new(), Vec::new());
        for c in &self.clusters {
            let mut h = g.slice_cols(x, c.offset, c.items.len());
            // RecBole's MLPLayers: the activation after every layer, the last included
            for l in &c.encoder {
                h = g.dense(h, l.w, Some(l.b), Activation::Linear);
                h = activate(g, h, self.ae_act);
            }
            mus.push(g.slice_cols(h, 0, c.latent));
            logvars.push(g.slice_cols(h, c.latent, c.latent));
        }
        match mus.len() {
            1 => (mus[0], logvars[0]),
            _ => (g.concat(&mus), g.concat(&logvars)),
        }
    }

    /// Scores of every item (in id order) from interaction rows in cluster order.
    fn score_rows(&self, rows: Vec<f32>, b: usize, out: &mut [f32]) {
        let latent = {
            let mut g = Graph::inference(&self.params);
            let x = g.input(Tensor::from_vec(b, self.n_items, rows), false);
            let (mu, _) = self.encode(&mut g, x);
            g.take_value(mu).data
        };
        let denoised = self.diffusion.reverse(&self.params, latent, b);
        let mut g = Graph::inference(&self.params);
        let z = g.input(
            Tensor::from_vec(b, denoised.len() / b.max(1), denoised),
            false,
        );
        let y = g.dense(z, self.decoder.w, Some(self.decoder.b), Activation::Linear);
        let y = g.take_value(y).data;
        let n = self.n_items;
        for (src, dst) in y.chunks_exact(n).zip(out.chunks_exact_mut(n)) {
            for (k, &i) in self.order.iter().enumerate() {
                dst[i as usize] = src[k];
            }
        }
    }
}

impl TopkModel for LDiffRec {
    fn name(&self) -> &'static str {
        "LDiffRec"
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

    fn checkpoint_config(&self, cfg: &ModelConfig) -> ModelConfig {
        let mut values = cfg.values.clone();
        values.insert(
            "item_clusters".into(),
            Value::Array(self.assignment.iter().map(|&c| c.into()).collect()),
        );
        values.remove("item_emb_file");
        ModelConfig::new(cfg.expid.clone(), values)
    }

    fn loss(&self, g: &mut Graph, batch: &TopkBatch, step: u64, rng: &mut StdRng) -> NodeId {
        let TopkBatch::Users { users, rows } = batch else {
            panic!("L-DiffRec trains on batches of users")
        };
        let b = users.len();
        let n = self.n_items;
        // the batch's rows in cluster order (dropout is elementwise: the order does not matter)
        let mut permuted = vec![0.0f32; b * n];
        for (src, dst) in rows.chunks_exact(n).zip(permuted.chunks_exact_mut(n)) {
            for (k, &i) in self.order.iter().enumerate() {
                dst[k] = src[i as usize];
            }
        }
        let x = g.input(Tensor::from_vec(b, n, permuted), false);
        let x = g.dropout(x, INPUT_DROPOUT, rng);
        // the NLL's target is the dropped-out row, as RecBole's Encode returns it
        let target = g.value(x).data.clone();
        let (mu, logvar) = self.encode(g, x);
        let latent = match self.reparam {
            true => {
                let eps: Vec<f32> = (0..g.value(mu).len())
                    .map(|_| StandardNormal.sample(rng))
                    .collect();
                g.reparameterize(mu, logvar, eps)
            }
            false => mu,
        };
        let kl = g.gaussian_kl(mu, logvar);
        let (ts, pt) = self.diffusion.draw_steps(b, rng);
        let noise = self.diffusion.noise(b, rng);
        let (diff, recorded, pred) = self.diffusion.loss(g, latent, &ts, &pt, &noise, Some(rng));
        self.diffusion.record(&ts, recorded);
        let recon = g.dense(
            pred,
            self.decoder.w,
            Some(self.decoder.b),
            Activation::Linear,
        );
        let nll = g.multinomial_nll(recon, target);
        let (lamda, beta) = self.weights(step.saturating_sub(1));
        let diff = g.scale(diff, lamda);
        let kl = g.scale(kl, beta);
        let vae = g.add(nll, kl);
        g.add(diff, vae)
    }

    fn score_users(&self, users: &[u32], history: &UserItems, out: &mut [f32]) {
        let rows = self.permuted_rows(history, users);
        self.score_rows(rows, users.len(), out);
    }

    fn score_history(&self, items: &[u32], out: &mut [f32]) {
        let pairs: Vec<(u32, u32)> = items.iter().map(|&i| (0, i)).collect();
        let history = UserItems::from_pairs(1, &pairs);
        self.score_users(&[0], &history, out);
    }
}
