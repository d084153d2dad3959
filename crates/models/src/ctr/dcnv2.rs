//! DCN-V2 (Wang et al. 2021) as FuxiCTR builds it: a cross network (full-rank, or the
//! low-rank mixture of experts with `use_low_rank_mixture`) and MLPs combined by
//! `model_structure`: `crossnet_only`, `stacked` (cross → MLP), `parallel` (cross ‖ MLP) or
//! `stacked_parallel` (cross → MLP ‖ MLP), then one linear output.

use super::{mlp_config, CtrNet, EmbeddingUse};
use crate::layers::{CrossNetMix, CrossNetV2, Linear, MlpBlock};
use crate::{ModelError, Result};
use rand::rngs::StdRng;
use recforge_data::ModelConfig;
use recforge_nn::{Graph, NodeId, ParamId, ParamStore};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dcnv2Structure {
    CrossnetOnly,
    Stacked,
    Parallel,
    StackedParallel,
}

enum Cross {
    Full(CrossNetV2),
    Mix(CrossNetMix),
}

pub struct Dcnv2 {
    structure: Dcnv2Structure,
    cross: Cross,
    stacked: Option<MlpBlock>,
    parallel: Option<MlpBlock>,
    out: Linear,
}

/// The model-config keys DCNv2 reads.
pub(crate) const KEYS: &[&str] = &[
    "model_structure",
    "num_cross_layers",
    "use_low_rank_mixture",
    "low_rank",
    "num_experts",
    "stacked_dnn_hidden_units",
    "parallel_dnn_hidden_units",
    "dnn_activations",
    "net_dropout",
    "batch_norm",
];

impl Dcnv2 {
    pub fn new(
        cfg: &ModelConfig,
        ps: &mut ParamStore,
        input_dim: usize,
        rng: &mut StdRng,
    ) -> Result<Self> {
        let err = |msg: String| ModelError::Config {
            expid: cfg.expid.clone(),
            msg,
        };
        let structure = match cfg.str_or("model_structure", "parallel").as_str() {
            "crossnet_only" => Dcnv2Structure::CrossnetOnly,
            "stacked" => Dcnv2Structure::Stacked,
            "parallel" => Dcnv2Structure::Parallel,
            "stacked_parallel" => Dcnv2Structure::StackedParallel,
            other => {
                return Err(err(format!(
                "model_structure `{other}` (crossnet_only, stacked, parallel, stacked_parallel)"
            )))
            }
        };
        let input = input_dim;
        let layers = cfg
            .usize_or("num_cross_layers", 3)
            .map_err(|e| err(e.to_string()))?;
        let cross = if cfg
            .bool_or("use_low_rank_mixture", false)
            .map_err(|e| err(e.to_string()))?
        {
            let rank = cfg
                .usize_or("low_rank", 32)
                .map_err(|e| err(e.to_string()))?;
            let experts = cfg
                .usize_or("num_experts", 4)
                .map_err(|e| err(e.to_string()))?;
            if rank == 0 || experts == 0 {
                return Err(err("low_rank and num_experts must be positive".into()));
            }
            Cross::Mix(CrossNetMix::new(
                ps, "crossnet", input, layers, rank, experts, rng,
            ))
        } else {
            Cross::Full(CrossNetV2::new(ps, "crossnet", input, layers, rng))
        };
        let use_stacked = matches!(
            structure,
            Dcnv2Structure::Stacked | Dcnv2Structure::StackedParallel
        );
        let use_parallel = matches!(
            structure,
            Dcnv2Structure::Parallel | Dcnv2Structure::StackedParallel
        );
        let stacked = if use_stacked {
            let c = mlp_config(
                cfg,
                "stacked_dnn_hidden_units",
                "dnn_activations",
                &[500, 500, 500],
                None,
            )?;
            Some(MlpBlock::new(ps, "stacked_dnn", input, &c, rng))
        } else {
            None
        };
        let parallel = if use_parallel {
            let c = mlp_config(
                cfg,
                "parallel_dnn_hidden_units",
                "dnn_activations",
                &[400, 400, 400],
                None,
            )?;
            Some(MlpBlock::new(ps, "parallel_dnn", input, &c, rng))
        } else {
            None
        };
        let final_dim = match structure {
            Dcnv2Structure::CrossnetOnly => input,
            Dcnv2Structure::Stacked => stacked.as_ref().map_or(input, |m| m.output_dim),
            Dcnv2Structure::Parallel => input + parallel.as_ref().map_or(0, |m| m.output_dim),
            Dcnv2Structure::StackedParallel => {
                stacked.as_ref().map_or(0, |m| m.output_dim)
                    + parallel.as_ref().map_or(0, |m| m.output_dim)
            }
        };
        let out = Linear::new(ps, "fc", final_dim, 1, true, rng);
        Ok(Dcnv2 {
            structure,
            cross,
            stacked,
            parallel,
            out,
        })
    }
}

impl CtrNet for Dcnv2 {
    fn embeddings(&self) -> Vec<EmbeddingUse> {
        vec![EmbeddingUse::Factors]
    }

    fn forward(&self, g: &mut Graph, emb: &[NodeId], rng: &mut StdRng) -> NodeId {
        let h = self.representation(g, emb, rng);
        self.out.forward(g, h)
    }

    fn encode(&self, g: &mut Graph, emb: &[NodeId], rng: &mut StdRng) -> Option<NodeId> {
        Some(self.representation(g, emb, rng))
    }

    fn head_params(&self) -> Vec<ParamId> {
        self.out.params()
    }
}

impl Dcnv2 {
    /// What the output layer reads: cross and deep parts as the structure combines them.
    fn representation(&self, g: &mut Graph, emb: &[NodeId], rng: &mut StdRng) -> NodeId {
        let x = emb[0];
        let cross = match &self.cross {
            Cross::Full(c) => c.forward(g, x),
            Cross::Mix(c) => c.forward(g, x),
        };
        let h = match self.structure {
            Dcnv2Structure::CrossnetOnly => cross,
            Dcnv2Structure::Stacked => self
                .stacked
                .as_ref()
                .expect("stacked")
                .forward(g, cross, rng),
            Dcnv2Structure::Parallel => {
                let p = self.parallel.as_ref().expect("parallel").forward(g, x, rng);
                g.concat(&[cross, p])
            }
            Dcnv2Structure::StackedParallel => {
                let s = self
                    .stacked
                    .as_ref()
                    .expect("stacked")
                    .forward(g, cross, rng);
                let p = self.parallel.as_ref().expect("parallel").forward(g, x, rng);
                g.concat(&[s, p])
            }
        };
        h
    }
}
