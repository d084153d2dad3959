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
}
