//! Whole-model gradients (through the embedding gather, sequence pooling, numeric scaling and
//! shared vocabularies) against central finite differences of the loss.

mod common;

use rand::rngs::StdRng;
use rand::SeedableRng;
use recforge_data::{Batch, BatchIter};
use recforge_models::Model;

fn loss(model: &Model, batch: &Batch) -> f64 {
    // evaluation-mode forward: deterministic (no dropout), batch norm on running statistics
    let mut rng = StdRng::seed_from_u64(0);
    let f = model.forward(batch, false, &mut rng);
    let mut g = f.graph;
    let l = g.bce_with_logits(f.logits, &batch.labels);
    g.value(l).data[0] as f64
}

#[test]
fn every_model_gradient_matches_finite_differences() {
    let dir = tempfile::tempdir().unwrap();
    common::tiny_dataset(dir.path());
    for expid in common::ALL_MODELS {
        let (exp, ds) = common::load(dir.path(), expid);
        let mut model = recforge_models::build(&exp.model, &ds.feature_map).unwrap();
        // move embeddings away from ~0 so second-order terms have gradients worth checking
        let mut rng = StdRng::seed_from_u64(3);
        for e in &mut model.embeddings {
            for t in &mut e.tables {
                use rand::Rng;
                t.weight
                    .iter_mut()
                    .for_each(|w| *w = rng.gen_range(-0.5..0.5));
            }
        }
        let batch = BatchIter::sequential(&ds.train, 24).next().unwrap();
        let fwd = model.forward(&batch, false, &mut StdRng::seed_from_u64(0));
        let mut graph = fwd.graph;
        let l = graph.bce_with_logits(fwd.logits, &batch.labels);
        let mut grads = graph.backward(l);
        let emb = model.embedding_grads(&batch, &fwd.emb_nodes, &mut grads);
        let dense: Vec<_> = model
            .params
            .iter()
            .map(|(id, _)| grads.param(id).cloned())
            .collect();
        drop(graph);
        common::check_model_gradients(expid, &mut model, &dense, &emb, &[], 4, &|m| {
            loss(m, &batch)
        });
    }
}

#[test]
fn per_field_embedding_sizes_widen_the_input_and_fm_refuses_them() {
    let dir = tempfile::tempdir().unwrap();
    common::tiny_dataset(dir.path());
    let (exp, ds) = common::load(dir.path(), "DNNmixed_t");
    let model = recforge_models::build(&exp.model, &ds.feature_map).unwrap();
    // user 4 + item 4 + price 6 + tags 2
    assert_eq!(model.embeddings[0].width(), 16);
    let (exp, ds) = common::load(dir.path(), "FMmixed_t");
    let err = recforge_models::build(&exp.model, &ds.feature_map)
        .err()
        .expect("FM needs equal sizes")
        .to_string();
    assert!(err.contains("embedding_dim 4"), "{err}");
}

#[test]
fn the_gradient_and_training_tests_cover_every_registered_ctr_model() {
    for name in recforge_models::ctr::model_names() {
        let expid = format!("{name}_t");
        assert!(
            common::ALL_MODELS.contains(&expid.as_str()),
            "{name} is registered but has no `{expid}` test config"
        );
        assert_eq!(
            recforge_models::family_of(name),
            Some(recforge_models::Family::Ctr)
        );
    }
}

#[test]
fn din_refuses_fields_it_cannot_attend_with_a_named_error() {
    use serde_json::json;
    let dir = tempfile::tempdir().unwrap();
    common::tiny_dataset(dir.path());
    let (exp, ds) = common::load(dir.path(), "DIN_t");
    let with_all = |set: &[(&str, serde_json::Value)]| {
        let mut values = exp.model.values.clone();
        for (key, v) in set {
            values.insert(key.to_string(), v.clone());
        }
        let cfg = recforge_data::ModelConfig::new("DIN_t", values);
        match recforge_models::build(&cfg, &ds.feature_map) {
            Ok(_) => String::new(),
            Err(e) => e.to_string(),
        }
    };
    let with = |key: &str, v: serde_json::Value| with_all(&[(key, v)]);
    let cases = [
        (
            "din_sequence_field",
            json!("prev_item"),
            "not a sequence field",
        ),
        ("din_target_field", json!("tags"), "is a sequence field"),
        ("din_target_field", json!("nope"), "no field `nope`"),
        ("din_target_field", json!(["item", "user"]), "has 2 entries"),
        ("attention_output_activation", json!("swish"), "swish"),
        ("dnn_activations", json!("selu"), "linear, dice"),
    ];
    for (key, v, want) in cases {
        let err = with(key, v.clone());
        assert!(err.contains(want), "{key} = {v}: {err:?}");
    }
    let twice = with_all(&[
        ("din_target_field", json!(["item", "prev_item"])),
        ("din_sequence_field", json!(["history", "history"])),
    ]);
    assert!(twice.contains("twice"), "{twice}");
    assert_eq!(with("din_use_softmax", json!(true)), "");
}
