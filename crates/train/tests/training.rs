//! End-to-end behaviour of the trainer: learning, determinism, resuming, checkpoints.

mod common;

use recforge_data::synthetic::{generate, SyntheticSpec};
use recforge_train::checkpoint::read_meta;
use recforge_train::score::load_model;
use recforge_train::trainer::Silent;
use recforge_train::{evaluate, RunDir, TrainConfig, Trainer};
use serde_json::json;

fn weights(model: &recforge_models::Model) -> Vec<f32> {
    let mut w: Vec<f32> = model
        .params
        .iter()
        .flat_map(|(_, p)| p.value.data.clone())
        .collect();
    for e in &model.embeddings {
        for t in &e.tables {
            w.extend_from_slice(&t.weight);
        }
    }
    w
}

fn fit(
    dir: &std::path::Path,
    expid: &str,
    run: &std::path::Path,
    epochs: usize,
    resume: bool,
) -> (recforge_models::Model, recforge_train::TrainReport) {
    let (mut exp, ds) = common::load(dir, expid);
    exp.model.values.insert("epochs".into(), json!(epochs));
    exp.model
        .values
        .insert("early_stop_patience".into(), json!(100));
    let mut model = recforge_models::build(&exp.model, &ds.feature_map).unwrap();
    let mut trainer = Trainer::new(TrainConfig::from_config(&exp.model).unwrap(), &model);
    let report = trainer
        .fit(
            &mut model,
            &ds,
            &exp.model,
            &RunDir::create(run).unwrap(),
            resume,
            &mut Silent,
        )
        .unwrap();
    (model, report)
}

#[test]
fn every_model_learns_the_tiny_dataset() {
    let dir = tempfile::tempdir().unwrap();
    common::tiny_dataset(dir.path());
    for expid in common::ALL_MODELS {
        let run = dir.path().join("runs").join(expid);
        let (model, report) = fit(dir.path(), expid, &run, 8, false);
        // the checkpoint scores exactly as the model it was written from
        let (_, ds) = common::load(dir.path(), expid);
        let test = ds.test.as_ref().unwrap();
        let (_, want) = evaluate(&model, test, &ds.feature_map, 64, None);
        let loaded = load_model(&run).unwrap();
        let (_, got) = evaluate(&loaded.model, test, &ds.feature_map, 64, None);
        assert_eq!(
            got, want,
            "{expid}: the restored checkpoint scores differently"
        );
        let auc = report.test.unwrap().auc.unwrap();
        // label = (user + item) % 3 == 0 or user < 4: pairs and first-order terms
        assert!(auc > 0.7, "{expid}: test AUC {auc}");
        let first = report.epochs.first().unwrap().train_loss;
        let last = report.epochs.last().unwrap().train_loss;
        assert!(last < first, "{expid}: train loss {first} → {last}");
    }
}

#[test]
fn same_seed_same_weights_and_resume_equals_uninterrupted() {
    let dir = tempfile::tempdir().unwrap();
    common::tiny_dataset(dir.path());
    let (a, _) = fit(dir.path(), "DeepFM_t", &dir.path().join("a"), 4, false);
    let (b, _) = fit(dir.path(), "DeepFM_t", &dir.path().join("b"), 4, false);
    assert_eq!(
        weights(&a),
        weights(&b),
        "same seed, same thread count: same weights"
    );
    // interrupted after 2 epochs, then resumed to 4
    fit(dir.path(), "DeepFM_t", &dir.path().join("c"), 2, false);
    let (c, report) = fit(dir.path(), "DeepFM_t", &dir.path().join("c"), 4, true);
    assert_eq!(report.epochs.len(), 4);
    assert_eq!(
        weights(&a),
        weights(&c),
        "resumed run differs from the uninterrupted one"
    );
}

#[test]
fn checkpoint_round_trip_and_corruption_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    common::tiny_dataset(dir.path());
    let run = dir.path().join("run");
    let (model, report) = fit(dir.path(), "DCNv2_t", &run, 2, false);
    let (_, ds) = common::load(dir.path(), "DCNv2_t");
    let (m1, p1) = evaluate(&model, ds.test.as_ref().unwrap(), &ds.feature_map, 64, None);
    let loaded = load_model(&run).unwrap();
    let (m2, p2) = evaluate(
        &loaded.model,
        ds.test.as_ref().unwrap(),
        &ds.feature_map,
        64,
        None,
    );
    assert_eq!(p1, p2);
    assert_eq!(m1.auc, m2.auc);
    assert_eq!(report.test.unwrap().auc, m1.auc);
    let meta = read_meta(&run.join("model.safetensors")).unwrap();
    assert!(meta.metrics.contains_key("test"));
    // run directory contents
    for f in [
        "metrics.csv",
        "metrics.json",
        "curve.svg",
        "report.json",
        "last.safetensors",
    ] {
        assert!(run.join(f).exists(), "{f} missing");
    }
    // a checkpoint is one file: nothing beside it to tear
    assert!(!run.join("model.json").exists());
    let csv = std::fs::read_to_string(run.join("metrics.csv")).unwrap();
    assert_eq!(csv.lines().count(), 3);
    assert!(std::fs::read_to_string(run.join("curve.svg"))
        .unwrap()
        .contains("<svg"));
    // flip one byte of the tensors: loading must fail, naming the file
    let path = run.join("model.safetensors");
    let mut bytes = std::fs::read(&path).unwrap();
    let n = bytes.len();
    bytes[n - 3] ^= 0xff;
    std::fs::write(&path, bytes).unwrap();
    let err = load_error(&run, "corrupt checkpoint must not load");
    assert!(
        err.contains("model.safetensors") && err.contains("checksum"),
        "{err}"
    );
}

#[test]
fn synthetic_log_learned_close_to_bayes_optimal() {
    let dir = tempfile::tempdir().unwrap();
    let spec = SyntheticSpec {
        rows: 60_000,
        vocab_sizes: vec![20, 50, 30, 40, 25],
        latent_dim: 2,
        ..Default::default()
    };
    let info = generate(&spec, dir.path(), &|_| {}).unwrap();
    let mut aucs = std::collections::HashMap::new();
    for expid in ["LR_synthetic", "DeepFM_synthetic"] {
        let (mut exp, ds) = {
            let exp = recforge_data::config::load_experiment(dir.path(), expid).unwrap();
            let ds = recforge_data::EncodedDataset::prepare(
                &exp.dataset,
                Default::default(),
                false,
                &|_| {},
            )
            .unwrap();
            (exp, ds)
        };
        exp.model.values.insert("epochs".into(), json!(6));
        exp.model.values.insert("batch_size".into(), json!(512));
        exp.model
            .values
            .insert("hidden_units".into(), json!([32, 32]));
        exp.model.values.insert("embedding_dim".into(), json!(8));
        exp.model
            .values
            .insert("learning_rate".into(), json!(0.005));
        let mut model = recforge_models::build(&exp.model, &ds.feature_map).unwrap();
        let mut t = Trainer::new(TrainConfig::from_config(&exp.model).unwrap(), &model);
        let r = t
            .fit(
                &mut model,
                &ds,
                &exp.model,
                &RunDir::create(&dir.path().join(expid)).unwrap(),
                false,
                &mut Silent,
            )
            .unwrap();
        aucs.insert(expid, r.test.unwrap().auc.unwrap());
    }
    let (lr, deepfm) = (aucs["LR_synthetic"], aucs["DeepFM_synthetic"]);
    let bayes = info.bayes_auc_test;
    assert!(
        deepfm <= bayes + 0.01,
        "nothing beats the Bayes-optimal scorer: {deepfm} vs {bayes}"
    );
    assert!(
        deepfm > bayes - 0.02,
        "DeepFM {deepfm} far from Bayes {bayes}"
    );
    assert!(
        deepfm > lr + 0.01,
        "pairwise terms are planted: DeepFM {deepfm} should beat LR {lr}"
    );
}

/// The message of a checkpoint load that must fail (`why` says what it must not load).
fn load_error(run: &std::path::Path, why: &str) -> String {
    load_model(run).err().expect(why).to_string()
}

/// The bytes of a file.
fn bytes(p: &std::path::Path) -> Vec<u8> {
    std::fs::read(p).unwrap()
}

#[test]
fn an_edited_vocabulary_or_a_foreign_tensor_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    common::tiny_dataset(dir.path());
    let run = dir.path().join("run");
    fit(dir.path(), "DeepFM_t", &run, 1, false);
    let path = run.join("model.safetensors");
    let original = bytes(&path);
    // one byte of a vocabulary token in the header (`u11` → `x11`)
    let at = original
        .windows(3)
        .position(|w| w == b"u11")
        .expect("token in the header");
    let mut edited = original.clone();
    edited[at] = b'x';
    std::fs::write(&path, &edited).unwrap();
    let err = load_error(&run, "edited checkpoint loaded");
    assert!(err.contains("checksum"), "{err}");
    // a tensor's dtype (same size: the offsets still tile the file), another metadata entry
    let edits: [(&[u8], &[u8]); 2] = [
        (b"\"F32\"", b"\"I32\""),
        (b"\"model\":\"DeepFM\"", b"\"model\":\"DeepFN\""),
    ];
    for (from, to) in edits {
        let at = original
            .windows(from.len())
            .position(|w| w == from)
            .expect("bytes in the header");
        let mut edited = original.clone();
        edited[at..at + to.len()].copy_from_slice(to);
        std::fs::write(&path, &edited).unwrap();
        let err = load_error(&run, "edited checkpoint loaded");
        assert!(err.contains("checksum"), "{err}");
    }
    // DeepFM's tensors saved under LR's config: LR has no use for the factor table
    std::fs::write(&path, &original).unwrap();
    let lm = load_model(&run).unwrap();
    let mut lr_cfg = lm.meta.model_config.clone();
    lr_cfg.values.insert("model".into(), json!("LR"));
    recforge_train::save_checkpoint(
        &path,
        &lm.model,
        &lr_cfg,
        &lm.meta.feature_map,
        Default::default(),
        None,
        None,
    )
    .unwrap();
    let err = load_error(&run, "foreign tensors loaded");
    assert!(
        err.contains("not used by model LR") && err.contains("emb1."),
        "{err}"
    );
}

#[test]
fn a_kill_at_any_point_of_a_checkpoint_write_leaves_a_resumable_run() {
    use recforge_data::cache::WriteStage;
    use recforge_train::checkpoint::save_checkpoint_hooked;
    let dir = tempfile::tempdir().unwrap();
    common::tiny_dataset(dir.path());
    let (uninterrupted, _) = fit(dir.path(), "DeepFM_t", &dir.path().join("a"), 4, false);
    // the checkpoint the killed write was writing: the state after epoch 3
    let three = dir.path().join("three");
    fit(dir.path(), "DeepFM_t", &three, 3, false);
    let last3 = three.join("last.safetensors");
    let meta = read_meta(&last3).unwrap();
    let mut model = recforge_models::build(&meta.model_config, &meta.feature_map).unwrap();
    let mut opt = recforge_nn::DenseOptimizer::new(model.common.optimizer, &model.params);
    let meta = recforge_train::load_checkpoint(&last3, &mut model, Some(&mut opt)).unwrap();
    for stage in WriteStage::ALL {
        let run = dir.path().join(format!("killed-{stage:?}"));
        fit(dir.path(), "DeepFM_t", &run, 2, false);
        let killed = save_checkpoint_hooked(
            &run.join("last.safetensors"),
            &model,
            &meta.model_config,
            &meta.feature_map,
            meta.metrics.clone(),
            Some(&opt),
            meta.resume.clone(),
            &mut |s| {
                if s == stage {
                    Err(std::io::Error::other("killed"))
                } else {
                    Ok(())
                }
            },
        );
        assert!(killed.is_err());
        let (resumed, report) = fit(dir.path(), "DeepFM_t", &run, 4, true);
        assert_eq!(report.epochs.len(), 4, "{stage:?}");
        assert_eq!(
            weights(&resumed),
            weights(&uninterrupted),
            "killed at {stage:?}: the resumed run differs"
        );
    }
}

#[test]
fn a_non_finite_loss_or_gradient_stops_training_and_keeps_the_best_checkpoint() {
    use rand::SeedableRng;
    let dir = tempfile::tempdir().unwrap();
    common::tiny_dataset(dir.path());
    let run = dir.path().join("run");
    fit(dir.path(), "DNN_t", &run, 1, false);
    let best = bytes(&run.join("model.safetensors"));
    let last = bytes(&run.join("last.safetensors"));
    let (exp, ds) = common::load(dir.path(), "DNN_t");
    let mut model = recforge_models::build(&exp.model, &ds.feature_map).unwrap();
    let id = model.params.iter().next().map(|(id, _)| id).unwrap();
    model.params.value_mut(id).data[0] = f32::NAN;
    let mut trainer = Trainer::new(TrainConfig::from_config(&exp.model).unwrap(), &model);
    let err = trainer
        .fit(
            &mut model,
            &ds,
            &exp.model,
            &RunDir::create(&run).unwrap(),
            false,
            &mut Silent,
        )
        .expect_err("a NaN model trained")
        .to_string();
    assert!(
        err.contains("epoch 1, step 1: ") && err.contains("is NaN"),
        "{err}"
    );
    assert_eq!(bytes(&run.join("model.safetensors")), best);
    assert_eq!(bytes(&run.join("last.safetensors")), last);

    // a NaN weight no batch reaches (the OOV row of the first table): losses and gradients
    // stay finite, and still no checkpoint is written
    let fresh = dir.path().join("fresh");
    let mut model = recforge_models::build(&exp.model, &ds.feature_map).unwrap();
    let table = &mut model.embeddings[0].tables[0];
    let last = table.weight.len() - 1;
    table.weight[last] = f32::NAN;
    let mut trainer = Trainer::new(TrainConfig::from_config(&exp.model).unwrap(), &model);
    let err = trainer
        .fit(
            &mut model,
            &ds,
            &exp.model,
            &RunDir::create(&fresh).unwrap(),
            false,
            &mut Silent,
        )
        .expect_err("a NaN weight was saved")
        .to_string();
    assert!(
        err.contains("epoch 1") && err.contains("a weight is NaN"),
        "{err}"
    );
    assert!(!fresh.join("model.safetensors").exists());

    // a finite loss with a non-finite gradient: the step changes nothing
    let mut model = recforge_models::build(&exp.model, &ds.feature_map).unwrap();
    let before = weights(&model);
    let mut trainer = Trainer::new(TrainConfig::from_config(&exp.model).unwrap(), &model);
    let batch = recforge_data::BatchIter::sequential(&ds.train, 64)
        .next()
        .unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    let fwd = model.forward(&batch, true, &mut rng);
    let mut graph = fwd.graph;
    let loss = graph.bce_with_logits(fwd.logits, &batch.labels);
    let mut grads = graph.backward(loss);
    let emb_nodes = fwd.emb_nodes;
    drop(graph);
    let emb_grads = model.embedding_grads(&batch, &emb_nodes, &mut grads);
    let mut dense = grads.params;
    let poisoned = dense.iter_mut().flatten().next().unwrap();
    poisoned.data[0] = f32::INFINITY;
    let step = trainer.apply_step(&mut model, &dense, &emb_grads, &mut [], 0.01, 0.0);
    assert_eq!(step.unwrap_err().what, "gradient norm");
    assert_eq!(weights(&model), before);
}

#[test]
fn a_run_directory_in_use_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let first = RunDir::create(dir.path()).unwrap();
    let err = RunDir::create(dir.path())
        .err()
        .expect("second lock")
        .to_string();
    assert!(err.contains("in use by another recforge process"), "{err}");
    drop(first);
    assert!(RunDir::create(dir.path()).is_ok());
}

#[test]
fn a_parameter_group_trains_its_scope_at_its_own_rate() {
    let dir = tempfile::tempdir().unwrap();
    common::tiny_dataset(dir.path());
    let (mut exp, ds) = common::load(dir.path(), "DNN_t");
    exp.model.values.insert("epochs".into(), json!(1));
    let init = recforge_models::build(&exp.model, &ds.feature_map).unwrap();
    let frozen = init
        .params
        .iter()
        .find(|(_, p)| p.trainable && p.regularize)
        .map(|(_, p)| p.name.clone())
        .unwrap();
    let train = |groups: serde_json::Value, run: &str| {
        let mut cfg = exp.model.clone();
        cfg.values.insert("param_groups".into(), groups);
        let mut model = recforge_models::build(&cfg, &ds.feature_map).unwrap();
        let mut trainer = Trainer::new(TrainConfig::from_config(&cfg)?, &model);
        let run = RunDir::create(&dir.path().join(run)).unwrap();
        trainer.fit(&mut model, &ds, &cfg, &run, false, &mut Silent)?;
        Ok::<_, recforge_train::TrainError>(model)
    };
    // a rate of 1e-30 leaves the scope's f32 weights exactly where they started
    let model = train(json!([{"scope": frozen, "learning_rate": 1e-30}]), "a").unwrap();
    for (id, p) in model.params.iter().filter(|(_, p)| p.trainable) {
        let moved = p.value.data != init.params.value(id).data;
        assert_eq!(moved, p.name != frozen, "{}", p.name);
    }
    let err = train(json!([{"scope": "nope"}]), "b")
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("no parameter is in scope `nope`"), "{err}");
    let err = train(json!([{"scope": frozen, "lr": 1}]), "c")
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("param_groups[0]: unknown key `lr`"), "{err}");
}
