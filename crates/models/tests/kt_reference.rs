//! recforge's DKT, SAKT, DKVMN and AKT (with and without its Rasch term) against pyKT 0.0.38's own classes on a tiny case: the same weights
//! (`fixtures/<model>_pykt.json`, written by `make_kt_reference.py`), a batch of sequences of
//! different lengths, dropout off. The loss, every weight's gradient and the predictions must
//! agree (pyKT ran in f64).

mod common;

use common::floats;
use rand::rngs::StdRng;
use rand::SeedableRng;
use recforge_data::kt::KtSequence;
use recforge_data::ModelConfig;
use recforge_models::kt::{self, KtBatch, KtShape};
use recforge_nn::Graph;
use serde_json::Value;

fn close(a: f32, b: f32) -> bool {
    (a - b).abs() <= 2e-5 + 1e-4 * b.abs()
}

#[test]
fn dkt_matches_pykt_on_its_own_weights() {
    matches_pykt("DKT", include_str!("fixtures/dkt_pykt.json"));
}

#[test]
fn sakt_matches_pykt_on_its_own_weights() {
    matches_pykt("SAKT", include_str!("fixtures/sakt_pykt.json"));
}

#[test]
fn akt_matches_pykt_on_its_own_weights() {
    matches_pykt("AKT", include_str!("fixtures/akt_pykt.json"));
}

#[test]
fn akt_without_problem_ids_matches_pykt_on_its_own_weights() {
    matches_pykt("AKT", include_str!("fixtures/akt_nopid_pykt.json"));
}

#[test]
fn dkvmn_matches_pykt_on_its_own_weights() {
    matches_pykt("DKVMN", include_str!("fixtures/dkvmn_pykt.json"));
}

fn matches_pykt(model: &str, text: &str) {
    let fx: Value = serde_json::from_str(text).unwrap();
    let mut values = fx["config"].as_object().unwrap().clone();
    values.insert("model".into(), model.into());
    let cfg = ModelConfig::new(format!("{model}_fixture"), values);
    let shape = KtShape {
        num_concepts: fx["num_concepts"].as_u64().unwrap() as usize,
        num_problems: fx["num_problems"].as_u64().unwrap_or(0) as usize,
        max_seq_len: fx["max_seq_len"].as_u64().unwrap() as usize,
    };
    let mut m = kt::build(&cfg, shape).unwrap();
    let ids: Vec<_> = m
        .params()
        .iter()
        .map(|(id, p)| (id, p.name.clone()))
        .collect();
    assert_eq!(ids.len(), fx["weights"].as_object().unwrap().len());
    for (id, name) in &ids {
        let data = floats(&fx["weights"][name.as_str()]["data"]);
        let p = m.params_mut().value_mut(*id);
        assert_eq!(p.data.len(), data.len(), "{name}");
        p.data = data;
    }

    let concepts: Vec<Vec<u32>> = serde_json::from_value(fx["concepts"].clone()).unwrap();
    let responses: Vec<Vec<u8>> = serde_json::from_value(fx["responses"].clone()).unwrap();
    let problems: Vec<Vec<u32>> = match fx.get("problems") {
        Some(p) => serde_json::from_value(p.clone()).unwrap(),
        None => concepts.iter().map(|c| vec![0; c.len()]).collect(),
    };
    let seqs: Vec<KtSequence> = concepts
        .iter()
        .zip(&responses)
        .zip(&problems)
        .map(|((c, r), p)| {
            let mut s = KtSequence::default();
            for ((&c, &r), &p) in c.iter().zip(r).zip(p) {
                s.push(p, &[c], r);
            }
            s
        })
        .collect();
    let batch = KtBatch::from_parts(seqs.iter().map(|s| (s, 0, s.len(), None)));

    let mut g = Graph::new(m.params(), true);
    let l = m.loss(&mut g, &batch, &mut StdRng::seed_from_u64(0));
    let loss = g.value(l).data[0];
    let want = fx["loss"].as_f64().unwrap() as f32;
    assert!(close(loss, want), "{model}: loss {loss} vs pyKT {want}");
    let grads = g.backward(l);
    for (id, name) in &ids {
        let got = &grads.param(*id).unwrap().data;
        let want = floats(&fx["grads"][name.as_str()]["data"]);
        for (k, (a, b)) in got.iter().zip(&want).enumerate() {
            assert!(close(*a, *b), "{model} grad {name}[{k}]: {a} vs pyKT {b}");
        }
    }

    let got = m.predict(&batch);
    let want: Vec<f32> = fx["predictions"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(floats)
        .collect();
    assert_eq!(got.len(), want.len());
    for (k, (a, b)) in got.iter().zip(&want).enumerate() {
        assert!(close(*a, *b), "{model} prediction {k}: {a} vs pyKT {b}");
    }
}
