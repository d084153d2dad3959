//! The dense parameters of a model in one namespace: each parameter has a unique dotted name
//! (the checkpoint key), a [`Scope`] adds parameters under a prefix (candle's
//! `VarBuilder::pp`), and [`ParamStore::absorb`] moves a whole store (a text encoder's, say)
//! under a prefix of another, so that both train on one tape.

use crate::tensor::Tensor;

/// Index of a dense parameter inside a [`ParamStore`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ParamId(pub usize);

#[derive(Clone, Debug)]
pub struct Param {
    pub name: String,
    pub value: Tensor,
    /// Updated by the optimizer (false for batch-norm running statistics).
    pub trainable: bool,
    /// Subject to the `net_regularizer` L2 term (weights, not biases or norms).
    pub regularize: bool,
}

/// The dense parameters of a model, in creation order, each with a unique name (the name is
/// the key in checkpoints).
#[derive(Clone, Debug, Default)]
pub struct ParamStore {
    params: Vec<Param>,
}

impl ParamStore {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn add(
        &mut self,
        name: impl Into<String>,
        value: Tensor,
        trainable: bool,
        regularize: bool,
    ) -> ParamId {
        let name = name.into();
        debug_assert!(
            self.params.iter().all(|p| p.name != name),
            "duplicate parameter {name}"
        );
        self.params.push(Param {
            name,
            value,
            trainable,
            regularize,
        });
        ParamId(self.params.len() - 1)
    }

    pub fn value(&self, id: ParamId) -> &Tensor {
        &self.params[id.0].value
    }

    pub fn value_mut(&mut self, id: ParamId) -> &mut Tensor {
        &mut self.params[id.0].value
    }

    pub fn get(&self, id: ParamId) -> &Param {
        &self.params[id.0]
    }

    pub fn len(&self) -> usize {
        self.params.len()
    }

    pub fn is_empty(&self) -> bool {
        self.params.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (ParamId, &Param)> {
        self.params.iter().enumerate().map(|(i, p)| (ParamId(i), p))
    }

    pub fn find(&self, name: &str) -> Option<ParamId> {
        self.params.iter().position(|p| p.name == name).map(ParamId)
    }

    pub fn num_values(&self) -> usize {
        self.params.iter().map(|p| p.value.len()).sum()
    }

    /// A view that adds parameters named `prefix.name`.
    pub fn scope(&mut self, prefix: &str) -> Scope<'_> {
        Scope {
            store: self,
            prefix: prefix.to_string(),
        }
    }

    /// The parameters in scope `prefix`: named `prefix` or `prefix.…` (every one for `""`).
    pub fn in_scope<'a>(&'a self, prefix: &'a str) -> impl Iterator<Item = ParamId> + 'a {
        self.iter()
            .filter(move |(_, p)| in_scope(&p.name, prefix))
            .map(|(id, _)| id)
    }

    /// Moves every parameter of `other` into this store, in order, renamed `prefix.name`.
    /// Ids of `other` become `shift.apply(id)` here. Refused (nothing moved) when a new name
    /// is already taken.
    pub fn absorb(&mut self, prefix: &str, other: ParamStore) -> Result<ParamShift, NameTaken> {
        let names: Vec<String> = other
            .params
            .iter()
            .map(|p| scoped(prefix, &p.name))
            .collect();
        if let Some(taken) = names.iter().find(|n| self.find(n).is_some()) {
            return Err(NameTaken(taken.clone()));
        }
        let shift = ParamShift(self.params.len());
        for (mut p, name) in other.params.into_iter().zip(names) {
            p.name = name;
            self.params.push(p);
        }
        Ok(shift)
    }
}

fn scoped(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}.{name}")
    }
}

/// Whether the dotted `name` lies in scope `prefix` (`a.b` is in `a`, `ab` is not).
pub fn in_scope(name: &str, prefix: &str) -> bool {
    prefix.is_empty()
        || name
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('.'))
}

/// A parameter name already in the store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NameTaken(pub String);

impl std::fmt::Display for NameTaken {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "a parameter named `{}` exists already", self.0)
    }
}

impl std::error::Error for NameTaken {}

/// How [`ParamStore::absorb`] renumbers the absorbed store's ids.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ParamShift(usize);

impl ParamShift {
    pub fn apply(self, id: ParamId) -> ParamId {
        ParamId(id.0 + self.0)
    }
}

/// Adds parameters to a store under a prefix; scopes nest (`tower` → `tower.0`).
pub struct Scope<'a> {
    store: &'a mut ParamStore,
    prefix: String,
}

impl Scope<'_> {
    pub fn add(&mut self, name: &str, value: Tensor, trainable: bool, regularize: bool) -> ParamId {
        let name = scoped(&self.prefix, name);
        self.store.add(name, value, trainable, regularize)
    }

    /// A nested scope `prefix.sub`.
    pub fn scope(&mut self, sub: &str) -> Scope<'_> {
        Scope {
            prefix: scoped(&self.prefix, sub),
            store: self.store,
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::Graph;

    #[test]
    fn scopes_nest_and_match_whole_segments() {
        let mut s = ParamStore::new();
        let w = s
            .scope("tower")
            .scope("0")
            .add("w", Tensor::zeros(1, 1), true, true);
        s.add("towering", Tensor::zeros(1, 1), true, true);
        assert_eq!(s.get(w).name, "tower.0.w");
        assert_eq!(s.in_scope("tower").collect::<Vec<_>>(), vec![w]);
        assert_eq!(s.in_scope("tower.0.w").count(), 1);
        assert_eq!(s.in_scope("").count(), 2);
        assert!(!in_scope("tower.0.w", "tower.0.w2"));
    }

    #[test]
    fn an_absorbed_store_keeps_its_values_under_a_prefix_on_one_tape() {
        // an "encoder" store and a "head" store, trained apart or absorbed into one
        let mut enc = ParamStore::new();
        let ew = enc.add("w", Tensor::from_vec(1, 2, vec![0.5, -1.0]), true, true);
        let mut head = ParamStore::new();
        let hw = head.add("w", Tensor::from_vec(2, 1, vec![2.0, 3.0]), true, true);
        let mut joint = head.clone();
        let shift = joint.absorb("bert", enc.clone()).unwrap();
        let ew2 = shift.apply(ew);
        assert_eq!(joint.get(ew2).name, "bert.w");
        assert_eq!(joint.value(ew2), enc.value(ew));
        // x · enc_w · head_w, on one graph over the joint store
        let mut g = Graph::new(&joint, true);
        let x = g.input(Tensor::from_vec(1, 1, vec![4.0]), false);
        let h = g.linear(x, ew2, None);
        let y = g.linear(h, hw, None);
        // 4 · (0.5·2 − 1·3) = −8; d/d enc_w = 4 · head_w
        assert_eq!(g.value(y).data, vec![-8.0]);
        let grads = g.backward(y);
        assert_eq!(grads.param(ew2).unwrap().data, vec![8.0, 12.0]);
        // the same names cannot be absorbed twice
        let err = joint.absorb("bert", enc).unwrap_err();
        assert_eq!(err, NameTaken("bert.w".into()));
        assert_eq!(joint.len(), 2);
    }
}
