//! BPR-MF (Rendle et al., UAI'09; RecBole's `BPR`): a user and an item embedding, the score
//! their dot product, trained on −ln σ(s⁺ − s⁻) with one sampled negative per interaction.
//! Embeddings are dense parameters, so Adam moves every row every step as RecBole's
//! `nn.Embedding` does; Xavier-normal init.

use super::{dot_all_items, embedding_size, mean_rows, TopkBatch, TopkInput, TopkModel, TopkShape};
use crate::Result;
use rand::rngs::StdRng;
use rand::SeedableRng;
use recforge_data::interactions::UserItems;
use recforge_data::ModelConfig;
use recforge_nn::{init, Graph, NodeId, ParamId, ParamStore, Tensor};

pub(crate) const KEYS: &[&str] = &["embedding_size", "embedding_dim"];

pub struct Bpr {
    params: ParamStore,
    users: ParamId,
    items: ParamId,
}

impl Bpr {
    pub fn new(cfg: &ModelConfig, shape: TopkShape, seed: u64) -> Result<Self> {
        let d = embedding_size(cfg)?;
        let mut rng = StdRng::seed_from_u64(seed);
        let mut params = ParamStore::new();
        let users = params.add(
            "user_embedding",
            init::xavier_normal(&mut rng, shape.n_users, d),
            true,
            true,
        );
        let items = params.add(
            "item_embedding",
            init::xavier_normal(&mut rng, shape.n_items, d),
            true,
            true,
        );
        Ok(Bpr {
            params,
            users,
            items,
        })
    }

    /// Built from given tables (tests: LightGCN with no layers against BPR).
    pub fn from_tables(users: Tensor, items: Tensor) -> Self {
        let mut params = ParamStore::new();
        let users = params.add("user_embedding", users, true, true);
        let items = params.add("item_embedding", items, true, true);
        Bpr {
            params,
            users,
            items,
        }
    }
}

impl TopkModel for Bpr {
    fn name(&self) -> &'static str {
        "BPR"
    }

    fn input(&self) -> TopkInput {
        TopkInput::Pairs
    }

    fn params(&self) -> &ParamStore {
        &self.params
    }

    fn params_mut(&mut self) -> &mut ParamStore {
        &mut self.params
    }

    fn loss(&self, g: &mut Graph, batch: &TopkBatch, _: u64, _: &mut StdRng) -> NodeId {
        let TopkBatch::Pairs { users, pos, neg } = batch else {
            panic!("BPR trains on (user, positive, negative) batches")
        };
        let (u, i) = (g.param(self.users), g.param(self.items));
        let sp = g.pair_dots(u, users, i, pos);
        let sn = g.pair_dots(u, users, i, neg);
        g.bpr_loss(sp, sn)
    }

    fn score_users(&self, users: &[u32], _: &UserItems, out: &mut [f32]) {
        let table = self.params.value(self.users);
        let mut u = Vec::with_capacity(users.len() * table.cols);
        for &x in users {
            u.extend_from_slice(table.row(x as usize));
        }
        dot_all_items(&u, self.params.value(self.items), out);
    }

    fn score_history(&self, items: &[u32], out: &mut [f32]) {
        let table = self.params.value(self.items);
        dot_all_items(&mean_rows(table, items), table, out);
    }

    fn item_vectors(&self) -> Option<Tensor> {
        Some(self.params.value(self.items).clone())
    }
}
