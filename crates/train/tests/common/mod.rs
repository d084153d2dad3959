//! Helpers shared by the integration tests: tiny datasets written to a temp dir.
#![allow(dead_code)]

use recforge_data::config::load_experiment;
use recforge_data::features::OnBadRow;
use recforge_data::{EncodedDataset, ExperimentConfig};
use std::path::Path;

/// Writes a small mixed-type dataset (categorical, numeric, sequence, shared vocabulary) and
/// configs for every model, returns the experiment config for `expid`.
pub fn tiny_dataset(dir: &Path) {
    let mut rows = String::from("label,user,item,price,tags,prev_item\n");
    for i in 0..400u32 {
        let user = i % 13;
        let item = (i * 7) % 17;
        let label = ((user + item) % 3 == 0 || user < 4) as u8;
        let price = (i % 10) as f32 / 4.0;
        let tags = ["a", "b^c", "", "c^a^b", "d"][(i % 5) as usize];
        let prev = (i * 3) % 17;
        rows += &format!("{label},u{user},i{item},{price},{tags},i{prev}\n");
    }
    for split in ["train", "valid", "test"] {
        std::fs::write(dir.join(format!("{split}.csv")), &rows).unwrap();
    }
    let p = |f: &str| dir.join(f).display().to_string();
    std::fs::write(
        dir.join("dataset_config.yaml"),
        format!(
            "tiny:\n  data_root: {}\n  data_format: csv\n  train_data: {}\n  valid_data: {}\n  \
                test_data: {}\n  feature_cols:\n    - {{name: [user, item], active: true, dtype: \
                str, type: categorical}}\n    - {{name: price, active: true, dtype: float, type: \
                numeric}}\n    - {{name: tags, active: true, dtype: str, type: sequence, \
                splitter: ^, max_len: 3}}\n    - {{name: prev_item, active: true, dtype: str, \
                type: categorical, share_embedding: item}}\n  label_col: {{name: label, dtype: \
                float}}\ntiny_mixed:\n  data_root: {}\n  data_format: csv\n  train_data: {}\n  \
                valid_data: {}\n  test_data: {}\n  feature_cols:\n    - {{name: [user, item], \
                active: true, dtype: str, type: categorical}}\n    - {{name: price, active: true, \
                dtype: float, type: numeric, embedding_dim: 6}}\n    - {{name: tags, active: \
                true, dtype: str, type: sequence, splitter: ^, max_len: 3, embedding_dim: 2}}\n  \
                label_col: {{name: label, dtype: float}}\n",
            p("processed"),
            p("train.csv"),
            p("valid.csv"),
            p("test.csv"),
            p("processed"),
            p("train.csv"),
            p("valid.csv"),
            p("test.csv")
        ),
    )
    .unwrap();
    let common = "  dataset_id: tiny\n  embedding_dim: 4\n  batch_size: 64\n  epochs: 3\n  \
        learning_rate: 0.01\n  seed: 7\n";
    std::fs::write(
        dir.join("model_config.yaml"),
        format!(
            "Base: {{model_root: {}}}\nLR_t:\n  model: LR\n{common}FM_t:\n  model: FM\
                \n{common}DNN_t:\n  model: DNN\n{common}  hidden_units: [8, 6]\n  batch_norm: true\
                \n  net_dropout: 0\nDeepFM_t:\n  model: DeepFM\n{common}  hidden_units: [8, 6]\n  \
                hidden_activations: [relu, tanh]\n  batch_norm: true\n  net_dropout: 0.1\n  \
                embedding_regularizer: 0.01\n  net_regularizer: 0.001\nDCNv2_t:\n  model: DCNv2\
                \n{common}  model_structure: stacked_parallel\n  stacked_dnn_hidden_units: [8]\n  \
                parallel_dnn_hidden_units: [8]\n  num_cross_layers: 2\nDNNmixed_t:\n  model: DNN\
                \n  dataset_id: tiny_mixed\n  embedding_dim: 4\n  hidden_units: [8]\n  \
                batch_size: 64\n  epochs: 3\n  seed: 7\nFMmixed_t:\n  model: FM\n  dataset_id: \
                tiny_mixed\n  embedding_dim: 4\nDCNv2mix_t:\n  model: DCNv2\n{common}  \
                model_structure: parallel\n  use_low_rank_mixture: true\n  low_rank: 3\n  \
                num_experts: 2\n  parallel_dnn_hidden_units: [8]\n  num_cross_layers: 2\n",
            p("ckpt")
        ),
    )
    .unwrap();
}

pub fn load(dir: &Path, expid: &str) -> (ExperimentConfig, EncodedDataset) {
    let exp = load_experiment(dir, expid).unwrap();
    let ds = EncodedDataset::prepare(&exp.dataset, OnBadRow::Error, false, &|_| {}).unwrap();
    (exp, ds)
}

pub const ALL_MODELS: &[&str] = &[
    "LR_t",
    "FM_t",
    "DNN_t",
    "DeepFM_t",
    "DCNv2_t",
    "DCNv2mix_t",
    "DNNmixed_t",
];

/// The tolerances of the whole-model checks (f64 losses of f32 models).
pub const MODEL_CHECK: recforge_nn::testing::GradCheck = recforge_nn::testing::GradCheck {
    step: 1e-3,
    atol: 3e-4,
    rtol: 3e-2,
};

/// Checks a model's analytic gradients of `loss` against finite differences: three entries of
/// every trainable dense parameter except `skip`, and every dimension of the first
/// `rows_per_table` rows each embedding table's gradient touches. `dense` is indexed like
/// the model's parameters.
pub fn check_model_gradients(
    what: &str,
    model: &mut recforge_models::Model,
    dense: &[Option<recforge_nn::Tensor>],
    emb: &[Vec<recforge_nn::RowGrads>],
    skip: &[recforge_nn::ParamId],
    rows_per_table: usize,
    loss: &dyn Fn(&recforge_models::Model) -> f64,
) {
    let ids: Vec<_> = model
        .params
        .iter()
        .filter(|(id, p)| p.trainable && !skip.contains(id))
        .map(|(id, _)| id)
        .collect();
    for id in ids {
        let name = model.params.get(id).name.clone();
        let g = dense[id.0]
            .as_ref()
            .unwrap_or_else(|| panic!("{what}: no gradient for {name}"));
        let n = g.len();
        for i in [0, n / 2, n - 1] {
            let orig = model.params.value(id).data[i];
            MODEL_CHECK
                .coordinate(&format!("{what}: {name}[{i}]"), g.data[i] as f64, |d| {
                    model.params.value_mut(id).data[i] = orig + d;
                    let l = loss(model);
                    model.params.value_mut(id).data[i] = orig;
                    l
                })
                .unwrap();
        }
    }
    for (ei, tables) in emb.iter().enumerate() {
        for (ti, rg) in tables.iter().enumerate() {
            for (k, &row) in rg.rows.iter().enumerate().take(rows_per_table) {
                for d in 0..rg.dim {
                    let idx = row as usize * rg.dim + d;
                    let orig = model.embeddings[ei].tables[ti].weight[idx];
                    let what = format!("{what}: emb{ei} table {ti} row {row} dim {d}");
                    MODEL_CHECK
                        .coordinate(&what, rg.grads[k * rg.dim + d] as f64, |delta| {
                            model.embeddings[ei].tables[ti].weight[idx] = orig + delta;
                            let l = loss(model);
                            model.embeddings[ei].tables[ti].weight[idx] = orig;
                            l
                        })
                        .unwrap();
                }
            }
        }
    }
}
