//! LightGCN (He et al., SIGIR'20; RecBole's `LightGCN`): user and item embeddings propagated
//! over the normalised bipartite graph Â = D^-½ A D^-½ (no self-loops, degree + 1e-7), the
//! final embedding the mean of layers 0..K, trained on BPR plus
//! `reg_weight · (‖U_b‖ + ‖P_b‖ + ‖N_b‖) / B` over the layer-0 rows — plain Frobenius norms,
//! not squared, as RecBole's `EmbLoss(require_pow=False)`. Full propagation on every batch.

use super::{
    config_error, dot_all_items, embedding_size, mean_rows, TopkBatch, TopkInput, TopkModel,
    TopkShape,
};
use crate::Result;
use rand::rngs::StdRng;
use rand::SeedableRng;
use recforge_data::interactions::UserItems;
use recforge_data::ModelConfig;
use recforge_nn::{init, CsrMatrix, Graph, NodeId, ParamId, ParamStore, SparseOperand, Tensor};

pub(crate) const KEYS: &[&str] = &[
    "embedding_size",
    "embedding_dim",
    "n_layers",
    "reg_weight",
    "require_pow",
];

pub struct LightGcn {
    params: ParamStore,
    users: ParamId,
    items: ParamId,
    layers: usize,
    reg_weight: f32,
    require_pow: bool,
    adjacency: SparseOperand,
    n_users: usize,
    /// the propagated user and item tables, filled by `prepare_scoring`
    cache: Option<(Tensor, Tensor)>,
}

/// Â of the bipartite user–item graph: nodes are users `0..n_u` then items `n_u..n_u+n_i`.
pub fn normalized_adjacency(train: &UserItems, shape: TopkShape) -> CsrMatrix {
    let n = shape.n_users + shape.n_items;
    let mut degree = vec![0f32; n];
    for u in 0..shape.n_users {
        for &i in train.row(u as u32) {
            degree[u] += 1.0;
            degree[shape.n_users + i as usize] += 1.0;
        }
    }
    let inv_sqrt: Vec<f32> = degree.iter().map(|d| (d + 1e-7).powf(-0.5)).collect();
    let mut entries = Vec::with_capacity(2 * train.nnz());
    for u in 0..shape.n_users {
        for &i in train.row(u as u32) {
            let j = shape.n_users + i as usize;
            let v = inv_sqrt[u] * inv_sqrt[j];
            entries.push((u as u32, j as u32, v));
            entries.push((j as u32, u as u32, v));
        }
    }
    CsrMatrix::from_triplets(n, n, entries)
}

impl LightGcn {
    pub fn new(cfg: &ModelConfig, shape: TopkShape, train: &UserItems, seed: u64) -> Result<Self> {
        let e = |x: recforge_data::DataError| config_error(cfg, x.to_string());
        let d = embedding_size(cfg)?;
        let mut rng = StdRng::seed_from_u64(seed);
        let mut params = ParamStore::new();
        let users = params.add(
            "user_embedding",
            init::xavier_uniform(&mut rng, shape.n_users, d),
            true,
            true,
        );
        let items = params.add(
            "item_embedding",
            init::xavier_uniform(&mut rng, shape.n_items, d),
            true,
            true,
        );
        if train.rows() != shape.n_users {
            return Err(config_error(
                cfg,
                format!(
                    "LightGCN: {} training rows for {} users",
                    train.rows(),
                    shape.n_users
                ),
            ));
        }
        Ok(LightGcn {
            params,
            users,
            items,
            layers: cfg.usize_or("n_layers", 2).map_err(e)?,
            reg_weight: cfg.non_negative_f32_or("reg_weight", 1e-5).map_err(e)?,
            require_pow: cfg.bool_or("require_pow", false).map_err(e)?,
            adjacency: SparseOperand::new(normalized_adjacency(train, shape)),
            n_users: shape.n_users,
            cache: None,
        })
    }

    /// The mean of layers 0..K of `[U; I]` on the tape.
    fn propagate(&self, g: &mut Graph, u: NodeId, i: NodeId) -> NodeId {
        let e = g.concat_rows(&[u, i]);
        if self.layers == 0 {
            return e;
        }
        g.spmm_layer_mean(&self.adjacency, e, self.layers)
    }

    fn final_embeddings(&self) -> Tensor {
        let mut g = Graph::inference(&self.params);
        let (u, i) = (g.param(self.users), g.param(self.items));
        let e = self.propagate(&mut g, u, i);
        g.take_value(e)
    }

    /// The propagated embeddings split into the user table and the item table.
    fn final_tables(&self) -> (Tensor, Tensor) {
        let mut all = self.final_embeddings();
        let d = all.cols;
        let items = all.data.split_off(self.n_users * d);
        (
            Tensor::from_vec(self.n_users, d, all.data),
            Tensor::from_vec(items.len() / d.max(1), d, items),
        )
    }

    /// The propagated tables: the cached ones, or computed now.
    fn tables(&self) -> std::borrow::Cow<'_, (Tensor, Tensor)> {
        match &self.cache {
            Some(t) => std::borrow::Cow::Borrowed(t),
            None => std::borrow::Cow::Owned(self.final_tables()),
        }
    }

    fn norm(&self, g: &mut Graph, x: NodeId) -> NodeId {
        if self.require_pow {
            let sq = g.mul(x, x);
            let s = g.sum_all(sq);
            g.scale(s, 0.5)
        } else {
            g.frobenius_norm(x)
        }
    }
}

impl TopkModel for LightGcn {
    fn name(&self) -> &'static str {
        "LightGCN"
    }

    fn input(&self) -> TopkInput {
        TopkInput::Pairs
    }

    fn params(&self) -> &ParamStore {
        &self.params
    }

    fn params_mut(&mut self) -> &mut ParamStore {
        self.cache = None;
        &mut self.params
    }

    fn loss(&self, g: &mut Graph, batch: &TopkBatch, _: u64, _: &mut StdRng) -> NodeId {
        let TopkBatch::Pairs { users, pos, neg } = batch else {
            panic!("LightGCN trains on (user, positive, negative) batches")
        };
        let (u, i) = (g.param(self.users), g.param(self.items));
        let all = self.propagate(g, u, i);
        let off = self.n_users as u32;
        let pos_nodes: Vec<u32> = pos.iter().map(|p| p + off).collect();
        let neg_nodes: Vec<u32> = neg.iter().map(|n| n + off).collect();
        let sp = g.pair_dots(all, users, all, &pos_nodes);
        let sn = g.pair_dots(all, users, all, &neg_nodes);
        let mf = g.bpr_loss(sp, sn);
        if self.reg_weight == 0.0 {
            return mf;
        }
        let eu = g.gather_rows(u, users);
        let ep = g.gather_rows(i, pos);
        let en = g.gather_rows(i, neg);
        let (nu, np, nn) = (self.norm(g, eu), self.norm(g, ep), self.norm(g, en));
        let s = g.add(nu, np);
        let s = g.add(s, nn);
        let reg = g.scale(s, self.reg_weight / users.len().max(1) as f32);
        g.add(mf, reg)
    }

    fn prepare_scoring(&mut self) {
        self.cache = Some(self.final_tables());
    }

    fn score_users(&self, users: &[u32], _: &UserItems, out: &mut [f32]) {
        let tables = self.tables();
        let (user_table, item_table) = &*tables;
        let mut u = Vec::with_capacity(users.len() * user_table.cols);
        for &x in users {
            u.extend_from_slice(user_table.row(x as usize));
        }
        dot_all_items(&u, item_table, out);
    }

    fn score_history(&self, items: &[u32], out: &mut [f32]) {
        let tables = self.tables();
        let item_table = &tables.1;
        dot_all_items(&mean_rows(item_table, items), item_table, out);
    }

    fn item_vectors(&self) -> Option<Tensor> {
        Some(self.tables().1.clone())
    }
}
