//! MAP pretraining: the NCE (MFP) and RFD losses' gradients against finite differences, and
//! planted structure that pretraining must recover.

mod common;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use recforge_data::{Batch, BatchIter};
use recforge_models::Model;
use recforge_train::fit::Silent;
use recforge_train::pretrain::{Method, PretrainConfig, PretrainData, Pretrainer};
use recforge_train::{RunDir, TrainConfig};

/// The test models with an encoder (every CTR model but LR, FM, FwFM and AFM).
const WITH_ENCODER: &[&str] = &[
    "DNN_t",
    "DeepFM_t",
    "DCNv2_t",
    "WideDeep_t",
    "DCN_t",
    "NFM_t",
    "PNN_t",
    "AutoInt_t",
    "xDeepFM_t",
    "FiBiNET_t",
    "FinalMLP_t",
    "DIN_t",
];

fn pretrainer(dir: &std::path::Path, expid: &str, method: Method) -> (Model, Pretrainer, Batch) {
    let (exp, ds) = common::load(dir, expid);
    let mut model = recforge_models::build(&exp.model, &ds.feature_map).unwrap();
    let mut rng = StdRng::seed_from_u64(3);
    for e in &mut model.embeddings {
        for t in &mut e.tables {
            t.weight
                .iter_mut()
                .for_each(|w| *w = rng.gen_range(-0.5..0.5));
        }
    }
    let mut cfg = PretrainConfig::from_config(&exp.model, method).unwrap();
    cfg.negatives = 4;
    cfg.proj_size = 3;
    let tcfg = TrainConfig::from_config(&exp.model).unwrap();
    let pt = Pretrainer::new(cfg, tcfg, &mut model, &ds.feature_map, &ds.train).unwrap();
    let batch = BatchIter::sequential(&ds.train, 12).next().unwrap();
    (model, pt, batch)
}

/// The whole-model check without the click head, which is not part of pretraining.
fn check_model_grads(
    what: &str,
    model: &mut Model,
    dense: &[Option<recforge_nn::Tensor>],
    emb: &[Vec<recforge_nn::RowGrads>],
    loss: &dyn Fn(&Model) -> f64,
) {
    let head = model.net.head_params();
    common::check_model_gradients(what, model, dense, emb, &head, 3, loss);
}

#[test]
fn nce_loss_gradients_match_finite_differences() {
    let dir = tempfile::tempdir().unwrap();
    common::tiny_dataset(dir.path());
    for expid in WITH_ENCODER {
        let (mut model, mut pt, batch) = pretrainer(dir.path(), expid, Method::Mfp);
        let mut rng = StdRng::seed_from_u64(5);
        let masked = pt.draw_masks(batch.size, &mut rng);
        let negatives = pt.draw_negatives(&masked, &mut rng);
        // the same dropout masks in every evaluation
        let value = |pt: &Pretrainer, model: &Model| {
            let (g, l, _, _) = pt.mfp_loss(
                model,
                &batch,
                &masked,
                &negatives,
                &mut StdRng::seed_from_u64(9),
            );
            g.value(l).data[0] as f64
        };
        let (g, l, emb_nodes, rows) = pt.mfp_loss(
            &model,
            &batch,
            &masked,
            &negatives,
            &mut StdRng::seed_from_u64(9),
        );
        let mut grads = g.backward(l);
        let emb = model.embedding_grads(&batch, &emb_nodes, &mut grads);
        let (out_g, bias_g) = pt.nce_row_grads(&rows, &mut grads);
        let dense: Vec<_> = model
            .params
            .iter()
            .map(|(id, _)| grads.param(id).cloned())
            .collect();
        drop(g);
        assert!(model.params.iter().any(|(_, p)| p.name == "pretrain.mask0"));
        check_model_grads(&format!("{expid} MFP"), &mut model, &dense, &emb, &|m| {
            value(&pt, m)
        });
        // the NCE output embeddings and biases: only the rows of targets and negatives
        let check = common::MODEL_CHECK;
        for (j, (og, bg)) in out_g.iter().zip(&bias_g).enumerate() {
            for (k, &row) in og.rows.iter().enumerate().take(3) {
                for d in 0..og.dim {
                    let idx = row as usize * og.dim + d;
                    let orig = pt.nce_tables_mut().unwrap().0[j].weight[idx];
                    let what = format!("{expid}: NCE output field {j} row {row}");
                    check
                        .coordinate(&what, og.grads[k * og.dim + d] as f64, |delta| {
                            pt.nce_tables_mut().unwrap().0[j].weight[idx] = orig + delta;
                            let l = value(&pt, &model);
                            pt.nce_tables_mut().unwrap().0[j].weight[idx] = orig;
                            l
                        })
                        .unwrap();
                }
                let kb = bg.rows.iter().position(|&r| r == row).unwrap();
                let orig = pt.nce_tables_mut().unwrap().1[j].weight[row as usize];
                let what = format!("{expid}: NCE bias field {j} row {row}");
                check
                    .coordinate(&what, bg.grads[kb] as f64, |delta| {
                        pt.nce_tables_mut().unwrap().1[j].weight[row as usize] = orig + delta;
                        let l = value(&pt, &model);
                        pt.nce_tables_mut().unwrap().1[j].weight[row as usize] = orig;
                        l
                    })
                    .unwrap();
            }
        }
    }
}

#[test]
fn rfd_loss_gradients_match_finite_differences() {
    let dir = tempfile::tempdir().unwrap();
    common::tiny_dataset(dir.path());
    for expid in WITH_ENCODER {
        let (mut model, pt, batch) = pretrainer(dir.path(), expid, Method::Rfd);
        let (corrupted, labels) = pt.replace_fields(&batch, &mut StdRng::seed_from_u64(5));
        assert!(labels.iter().any(|&y| y > 0.5) && labels.iter().any(|&y| y < 0.5));
        let value = |m: &Model| {
            let (g, l, _, _) = pt.rfd_loss(m, &corrupted, &labels, &mut StdRng::seed_from_u64(9));
            g.value(l).data[0] as f64
        };
        let (g, l, _, emb_nodes) =
            pt.rfd_loss(&model, &corrupted, &labels, &mut StdRng::seed_from_u64(9));
        let mut grads = g.backward(l);
        let emb = model.embedding_grads(&corrupted, &emb_nodes, &mut grads);
        let dense: Vec<_> = model
            .params
            .iter()
            .map(|(id, _)| grads.param(id).cloned())
            .collect();
        drop(g);
        // the [MASK] rows are MFP's: RFD leaves them without a gradient, everything else has one
        let dense: Vec<_> = model
            .params
            .iter()
            .map(|(id, p)| {
                if p.name.starts_with("pretrain.mask") {
                    Some(recforge_nn::Tensor::zeros(p.value.rows, p.value.cols))
                } else {
                    dense[id.0].clone()
                }
            })
            .collect();
        check_model_grads(&format!("{expid} RFD"), &mut model, &dense, &emb, &value);
    }
}

/// Three fields: `b` is a fixed permutation of `a`, `c` is noise.
fn planted(dir: &std::path::Path, rows: usize) {
    let mut csv = String::from("label,a,b,c\n");
    let mut rng = StdRng::seed_from_u64(11);
    for _ in 0..rows {
        let a: u32 = rng.gen_range(0..30);
        let c: u32 = rng.gen_range(0..30);
        csv += &format!("{},a{a},b{},c{c}\n", rng.gen_range(0..2), (a * 7 + 3) % 30);
    }
    for s in ["train", "valid", "test"] {
        std::fs::write(dir.join(format!("{s}.csv")), &csv).unwrap();
    }
    let p = |f: &str| dir.join(f).display().to_string();
    std::fs::write(
        dir.join("dataset_config.yaml"),
        format!(
            "planted:\n  data_root: {}\n  data_format: csv\n  train_data: {}\n  valid_data: {}\n  \
                test_data: {}\n  feature_cols:\n    - {{name: [a, b, c], active: true, dtype: \
                str, type: categorical}}\n  label_col: {{name: label, dtype: float}}\n",
            p("processed"),
            p("train.csv"),
            p("valid.csv"),
            p("test.csv")
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("model_config.yaml"),
        "DNN_p:\n  model: DNN\n  dataset_id: planted\n  embedding_dim: 8\n  hidden_units: [64]\n  \
            batch_size: 32\n  seed: 3\n  pt_epochs: 20\n  pt_learning_rate: 0.01\n  \
            pt_mask_ratio: 0.34\n  pt_neg_num: 10\n  pt_proj_size: 16\n",
    )
    .unwrap();
}

/// Pretrains through the shared loop into `dir/run`.
fn pretrain_in(
    dir: &std::path::Path,
    pt: &mut Pretrainer,
    model: &mut Model,
    exp: &recforge_data::ExperimentConfig,
    ds: &recforge_data::EncodedDataset,
) -> (RunDir, recforge_train::FitReport) {
    let run = RunDir::create(&dir.join("run")).unwrap();
    let data = PretrainData {
        train: &ds.train,
        feature_map: &ds.feature_map,
        config: &exp.model,
    };
    let report = pt
        .fit(model, data, &run, &mut Silent)
        .expect("finite pretraining");
    (run, report)
}

#[test]
fn mfp_recovers_a_planted_co_occurrence() {
    let dir = tempfile::tempdir().unwrap();
    planted(dir.path(), 3000);
    let (exp, ds) = common::load(dir.path(), "DNN_p");
    let mut model = recforge_models::build(&exp.model, &ds.feature_map).unwrap();
    let cfg = PretrainConfig::from_config(&exp.model, Method::Mfp).unwrap();
    let tcfg = TrainConfig::from_config(&exp.model).unwrap();
    let mut pt = Pretrainer::new(cfg, tcfg, &mut model, &ds.feature_map, &ds.train).unwrap();
    let batch = BatchIter::sequential(&ds.train, 1000).next().unwrap();
    let accuracy = |pt: &Pretrainer, model: &Model, j: usize| {
        let pred = pt.predict_masked(model, &batch, j);
        let slot = ds.feature_map.fields[pt.fields()[j]].offset;
        let hits = (0..batch.size)
            .filter(|&r| pred[r] == batch.slots[r * batch.width + slot])
            .count();
        hits as f64 / batch.size as f64
    };
    let before = accuracy(&pt, &model, 1);
    let (_run, report) = pretrain_in(dir.path(), &mut pt, &mut model, &exp, &ds);
    let logs = &report.epochs;
    assert_eq!(logs.len(), 20);
    assert!(
        logs.last().unwrap().train_loss < logs[0].train_loss,
        "{logs:?}"
    );
    // b is recoverable from a (chance: 1/30); c is noise and stays near chance
    let (b, c) = (accuracy(&pt, &model, 1), accuracy(&pt, &model, 2));
    assert!(
        b > 0.8,
        "masked b predicted right {b} of the time (before pretraining {before})"
    );
    assert!(c < 0.2, "masked c (noise) predicted right {c} of the time");
}

#[test]
fn rfd_detects_replacements_of_a_planted_field() {
    let dir = tempfile::tempdir().unwrap();
    planted(dir.path(), 3000);
    let (exp, ds) = common::load(dir.path(), "DNN_p");
    let mut model = recforge_models::build(&exp.model, &ds.feature_map).unwrap();
    let cfg = PretrainConfig::from_config(&exp.model, Method::Rfd).unwrap();
    let tcfg = TrainConfig::from_config(&exp.model).unwrap();
    let mut pt = Pretrainer::new(cfg, tcfg, &mut model, &ds.feature_map, &ds.train).unwrap();
    let (run, report) = pretrain_in(dir.path(), &mut pt, &mut model, &exp, &ds);
    // the run directory logs the objective's accuracy by epoch, and the checkpoint its method
    let csv = std::fs::read_to_string(run.path.join("metrics.csv")).unwrap();
    assert!(
        csv.starts_with("epoch,learning_rate,train_loss,train_accuracy,seconds"),
        "{csv}"
    );
    let first = report.epochs[0].train.get("accuracy").unwrap();
    let last = report.epochs.last().unwrap().train.get("accuracy").unwrap();
    assert!(last > first, "RFD accuracy {first} → {last}");
    let ckpt = std::fs::read(run.best_checkpoint()).unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&ckpt).unwrap();
    let meta = meta.metadata().as_ref().unwrap();
    assert!(
        meta.values()
            .any(|v| v.contains("\"pretrain_method\":\"RFD\"")),
        "{meta:?}"
    );
    let batch = BatchIter::sequential(&ds.train, 2000).next().unwrap();
    let (corrupted, labels) = pt.replace_fields(&batch, &mut StdRng::seed_from_u64(77));
    let (g, _, logits, _) = pt.rfd_loss(&model, &corrupted, &labels, &mut StdRng::seed_from_u64(0));
    let z = &g.value(logits).data;
    let field_auc = |j: usize| {
        let s: Vec<f32> = (0..batch.size).map(|r| z[r * 3 + j]).collect();
        let y: Vec<f32> = (0..batch.size).map(|r| labels[r * 3 + j]).collect();
        recforge_metrics::auc(&y, &s).unwrap()
    };
    // a replaced a or b breaks the pair and is detectable (though not which of the two was
    // replaced); a replaced c never is
    let (a, b, c) = (field_auc(0), field_auc(1), field_auc(2));
    eprintln!("detection AUC a {a:.3} b {b:.3} c {c:.3}");
    assert!(a > 0.75 && b > 0.75, "a {a} b {b}");
    assert!(c < 0.65, "c {c}");
}
