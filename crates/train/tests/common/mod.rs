//! Helpers shared by the integration tests: tiny datasets written to a temp dir.
#![allow(dead_code)]

use recforge_data::config::load_experiment;
use recforge_data::features::OnBadRow;
use recforge_data::{EncodedDataset, ExperimentConfig};
use std::path::Path;

/// Writes a small mixed-type dataset (categorical, numeric, sequence, shared vocabulary) and
/// configs for every model, returns the experiment config for `expid`.
pub fn tiny_dataset(dir: &Path) {
    let mut rows = String::from("label,user,item,price,tags,prev_item,history,prev_history\n");
    for i in 0..400u32 {
        let user = i % 13;
        let item = (i * 7) % 17;
        let label = ((user + item) % 3 == 0 || user < 4) as u8;
        let price = (i % 10) as f32 / 4.0;
        let tags = ["a", "b^c", "", "c^a^b", "d"][(i % 5) as usize];
        let prev = (i * 3) % 17;
        // behaviour sequences of 0 to 3 items (DIN's)
        let seq = |step: u32| {
            (0..i % 4)
                .map(|k| format!("i{}", (i * step + k) % 17))
                .collect::<Vec<_>>()
                .join("^")
        };
        let (history, prev_history) = (seq(5), seq(11));
        rows +=
            &format!("{label},u{user},i{item},{price},{tags},i{prev},{history},{prev_history}\n");
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
                label_col: {{name: label, dtype: float}}\ntiny_seq:\n  data_root: {}\n  \
                data_format: csv\n  train_data: {}\n  valid_data: {}\n  test_data: {}\n  \
                feature_cols:\n    - {{name: [user, item], active: true, dtype: str, type: \
                categorical}}\n    - {{name: price, active: true, dtype: float, type: numeric}}\n    \
                - {{name: tags, active: true, dtype: str, type: sequence, splitter: ^, max_len: \
                3}}\n    - {{name: prev_item, active: true, dtype: str, type: categorical, \
                share_embedding: item}}\n    - {{name: [history, prev_history], active: true, \
                dtype: str, type: sequence, max_len: 3, padding: pre, share_embedding: item, \
                feature_encoder: null}}\n  label_col: {{name: label, dtype: float}}\n",
            p("processed"),
            p("train.csv"),
            p("valid.csv"),
            p("test.csv"),
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
    let zoo = zoo_configs(common);
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
                num_experts: 2\n  parallel_dnn_hidden_units: [8]\n  num_cross_layers: 2\n\
                {zoo}",
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
    "WideDeep_t",
    "DCN_t",
    "DCNonly_t",
    "NFM_t",
    "PNN_t",
    "FwFM_t",
    "FwFMlw_t",
    "FwFMfilv_t",
    "AFM_t",
    "AFMplain_t",
    "AutoInt_t",
    "AutoIntbare_t",
    "xDeepFM_t",
    "FiBiNET_t",
    "FiBiNETeach_t",
    "FiBiNETpair_t",
    "FinalMLP_t",
    "FinalMLPbias_t",
    "FinalMLPnofs_t",
    "DIN_t",
    "DINtuple_t",
];

/// Tiny configs of the CTR zoo (every option that changes the graph at least once).
fn zoo_configs(common: &str) -> String {
    let entries: &[(&str, &str, &str)] = &[
        ("WideDeep_t", "WideDeep", "hidden_units: [8]\n  batch_norm: true\n  net_dropout: 0.1"),
        ("DCN_t", "DCN", "dnn_hidden_units: [8]\n  dnn_activations: tanh\n  num_cross_layers: 2"),
        ("DCNonly_t", "DCN", "dnn_hidden_units: []\n  num_cross_layers: 2"),
        ("NFM_t", "NFM", "hidden_units: [8, 6]\n  hidden_activations: tanh"),
        ("PNN_t", "PNN", "hidden_units: [8]\n  hidden_activations: tanh\n  product_type: inner"),
        ("FwFM_t", "FwFM", "linear_type: FeLV\n  regularizer: 1.0e-3"),
        ("FwFMlw_t", "FwFM", "linear_type: LW"),
        ("FwFMfilv_t", "FwFM", "linear_type: FiLV"),
        ("AFM_t", "AFM", "attention_dim: 5\n  attention_dropout: [0.1, 0.2]"),
        ("AFMplain_t", "AFM", "use_attention: false"),
        (
            "AutoInt_t",
            "AutoInt",
            "dnn_hidden_units: [8]\n  attention_layers: 2\n  num_heads: 2\n  attention_dim: 6\n  \
             use_residual: true\n  use_scale: true\n  layer_norm: true\n  use_wide: true\n  \
             net_dropout: 0.1",
        ),
        (
            "AutoIntbare_t",
            "AutoInt",
            "dnn_hidden_units: []\n  attention_layers: 1\n  num_heads: 1\n  attention_dim: 4\n  \
             use_residual: false",
        ),
        ("xDeepFM_t", "xDeepFM", "dnn_hidden_units: [8]\n  dnn_activations: tanh\n  cin_hidden_units: [3, 2]"),
        (
            "FiBiNET_t",
            "FiBiNET",
            "hidden_units: [8]\n  hidden_activations: tanh\n  reduction_ratio: 2\n  bilinear_type: field_all",
        ),
        (
            "FiBiNETeach_t",
            "FiBiNET",
            "hidden_units: [8]\n  hidden_activations: tanh\n  bilinear_type: field_each\n  excitation_activation: Sigmoid",
        ),
        ("FiBiNETpair_t", "FiBiNET", "hidden_units: [6]\n  hidden_activations: tanh\n  bilinear_type: field_interaction"),
        (
            "FinalMLP_t",
            "FinalMLP",
            "mlp1_hidden_units: [8]\n  mlp1_hidden_activations: tanh\n  mlp1_batch_norm: true\n  mlp2_hidden_units: [6]\n  mlp2_hidden_activations: tanh\n  \
             mlp2_dropout: 0.1\n  fs_hidden_units: [5]\n  fs1_context: [user, price]\n  \
             fs2_context: [item]\n  num_heads: 2",
        ),
        (
            // an empty context is a learned vector; no hidden layer, so no ReLU sits on its
            // kink at the zero initialization (FuxiCTR's gate has the same dead start)
            "FinalMLPbias_t",
            "FinalMLP",
            "mlp1_hidden_units: [4]\n  mlp1_hidden_activations: tanh\n  mlp2_hidden_units: [4]\n  \
             mlp2_hidden_activations: tanh\n  fs_hidden_units: []\n  fs1_context: []\n  \
             fs2_context: [tags]",
        ),
        (
            "FinalMLPnofs_t",
            "FinalMLP",
            "mlp1_hidden_units: [4]\n  mlp2_hidden_units: [4]\n  use_fs: false",
        ),
    ];
    // DIN reads the behaviour sequences of `tiny_seq`
    let seq_common = common.replace("dataset_id: tiny\n", "dataset_id: tiny_seq\n");
    let din: &[(&str, &str, &str)] = &[
        (
            "DIN_t",
            "DIN",
            "dnn_hidden_units: [8]\n  dnn_activations: tanh\n  batch_norm: true\n  \
             attention_hidden_units: [6]\n  din_target_field: item\n  din_sequence_field: history",
        ),
        (
            // a tuple of targets over a tuple of sequences, Dice in the DNN, softmax weights
            "DINtuple_t",
            "DIN",
            "dnn_hidden_units: [6]\n  dnn_activations: Dice\n  attention_hidden_units: [5]\n  \
             attention_hidden_activations: tanh\n  attention_output_activation: sigmoid\n  \
             attention_dropout: 0.1\n  din_target_field: [[item, prev_item]]\n  \
             din_sequence_field: [[history, prev_history]]\n  din_use_softmax: true",
        ),
    ];
    let entry = |common: &str, (id, model, extra): &(&str, &str, &str)| {
        format!("{id}:\n  model: {model}\n{common}  {extra}\n")
    };
    entries
        .iter()
        .map(|e| entry(common, e))
        .chain(din.iter().map(|e| entry(&seq_common, e)))
        .collect()
}

/// The tolerances of the whole-model checks (f64 losses of f32 models).
pub const MODEL_CHECK: recforge_nn::testing::GradCheck = recforge_nn::testing::GradCheck {
    step: 1e-3,
    atol: 3e-4,
    rtol: 3e-2,
};

/// [`MODEL_CHECK`] of one coordinate, retried once with a fifth of the step: a ReLU whose
/// input lies within one step of its kink makes the wider difference one-sided, which a real
/// gradient error does not survive at the narrower step.
fn check_coordinate(what: &str, analytic: f64, mut loss_at: impl FnMut(f32) -> f64) {
    if let Err(wide) = MODEL_CHECK.coordinate(what, analytic, &mut loss_at) {
        let narrow = recforge_nn::testing::GradCheck {
            step: MODEL_CHECK.step / 5.0,
            ..MODEL_CHECK
        };
        if let Err(e) = narrow.coordinate(what, analytic, loss_at) {
            panic!("{wide}; at a fifth of the step: {e}");
        }
    }
}

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
            check_coordinate(&format!("{what}: {name}[{i}]"), g.data[i] as f64, |d| {
                model.params.value_mut(id).data[i] = orig + d;
                let l = loss(model);
                model.params.value_mut(id).data[i] = orig;
                l
            });
        }
    }
    for (ei, tables) in emb.iter().enumerate() {
        for (ti, rg) in tables.iter().enumerate() {
            for (k, &row) in rg.rows.iter().enumerate().take(rows_per_table) {
                for d in 0..rg.dim {
                    let idx = row as usize * rg.dim + d;
                    let orig = model.embeddings[ei].tables[ti].weight[idx];
                    let what = format!("{what}: emb{ei} table {ti} row {row} dim {d}");
                    check_coordinate(&what, rg.grads[k * rg.dim + d] as f64, |delta| {
                        model.embeddings[ei].tables[ti].weight[idx] = orig + delta;
                        let l = loss(model);
                        model.embeddings[ei].tables[ti].weight[idx] = orig;
                        l
                    });
                }
            }
        }
    }
}
