//! Pop: every user gets the items with the most training interactions (RecBole's `Pop`, which
//! scores `count / max count`; the order is the same).

use super::{TopkBatch, TopkInput, TopkModel, TopkShape};
use rand::rngs::StdRng;
use recforge_data::interactions::{Interactions, UserItems};
use recforge_nn::{Graph, NodeId, ParamId, ParamStore, Tensor};

pub struct Pop {
    params: ParamStore,
    counts: ParamId,
}

impl Pop {
    pub fn new(shape: TopkShape) -> Self {
        let mut params = ParamStore::new();
        let counts = params.add("item_count", Tensor::zeros(1, shape.n_items), false, false);
        Pop { params, counts }
    }
}

impl TopkModel for Pop {
    fn name(&self) -> &'static str {
        "Pop"
    }

    fn input(&self) -> TopkInput {
        TopkInput::ClosedForm
    }

    fn params(&self) -> &ParamStore {
        &self.params
    }

    fn params_mut(&mut self) -> &mut ParamStore {
        &mut self.params
    }

    fn loss(&self, _: &mut Graph, _: &TopkBatch, _: u64, _: &mut StdRng) -> NodeId {
        unreachable!("Pop is fitted in closed form")
    }

    fn fit_closed_form(&mut self, data: &Interactions) -> crate::Result<()> {
        let c = &mut self.params.value_mut(self.counts).data;
        c.fill(0.0);
        for &(_, i) in &data.train_pairs {
            c[i as usize] += 1.0;
        }
        Ok(())
    }

    fn score_users(&self, users: &[u32], _: &UserItems, out: &mut [f32]) {
        let c = &self.params.value(self.counts).data;
        for row in out.chunks_exact_mut(c.len().max(1)).take(users.len()) {
            row.copy_from_slice(c);
        }
    }

    fn score_history(&self, _: &[u32], out: &mut [f32]) {
        out.copy_from_slice(&self.params.value(self.counts).data);
    }
}
