//! recforge's SASRec and GRU4Rec against RecBole 1.2.1's own classes on a tiny case: the same
//! weights (`fixtures/<model>_recbole.json`, written by `make_seq_reference.py`), a batch of
//! right-padded histories of different lengths, dropout off. The loss, every weight's gradient
//! and the full-sort scores must agree (RecBole ran in f64).

mod common;

use common::floats;
use rand::rngs::StdRng;
use rand::SeedableRng;
use recforge_data::sequences::Window;
use recforge_data::ModelConfig;
use recforge_models::seq::{self, SeqShape};
use recforge_nn::Graph;
use serde_json::Value;

fn close(a: f32, b: f32) -> bool {
    (a - b).abs() <= 2e-5 + 1e-4 * b.abs()
}

#[test]
fn sasrec_matches_recbole_on_its_own_weights() {
    matches_recbole("SASRec", include_str!("fixtures/sasrec_recbole.json"));
}

#[test]
fn gru4rec_matches_recbole_on_its_own_weights() {
    matches_recbole("GRU4Rec", include_str!("fixtures/gru4rec_recbole.json"));
}

fn matches_recbole(model: &str, text: &str) {
    let fx: Value = serde_json::from_str(text).unwrap();
    let mut values = fx["config"].as_object().unwrap().clone();
    values.insert("MAX_ITEM_LIST_LENGTH".into(), fx["max_len"].clone());
    values.insert("model".into(), model.into());
    let cfg = ModelConfig::new(format!("{model}_fixture"), values);
    let shape = SeqShape {
        n_items: fx["n_items"].as_u64().unwrap() as usize,
    };
    let mut m = seq::build(&cfg, shape).unwrap();
    let ids: Vec<_> = m
        .params()
        .iter()
        .map(|(id, p)| (id, p.name.clone()))
        .collect();
    assert_eq!(ids.len(), fx["weights"].as_object().unwrap().len());
    for (id, name) in &ids {
        let w = &fx["weights"][name.as_str()];
        let data = floats(&w["data"]);
        let p = m.params_mut().value_mut(*id);
        assert_eq!(p.data.len(), data.len(), "{name}");
        p.data = data;
    }

    let seqs: Vec<Vec<u32>> = serde_json::from_value(fx["sequences"].clone()).unwrap();
    let next: Vec<u32> = serde_json::from_value(fx["targets"].clone()).unwrap();
    // each history scored at its end against its next item
    let targets: Vec<Vec<u32>> = seqs
        .iter()
        .zip(&next)
        .map(|(s, &t)| s[1..].iter().copied().chain([t]).collect())
        .collect();
    let windows: Vec<Window> = seqs
        .iter()
        .zip(&targets)
        .map(|(s, t)| Window {
            input: s,
            targets: t,
            scored: s.len() - 1,
        })
        .collect();
    let mut g = Graph::new(m.params(), true);
    let l = m.loss(&mut g, &windows, &mut StdRng::seed_from_u64(0));
    let loss = g.value(l).data[0];
    let want = fx["loss"].as_f64().unwrap() as f32;
    assert!(close(loss, want), "loss {loss} vs RecBole {want}");
    let grads = g.backward(l);
    for (id, name) in &ids {
        let got = &grads.param(*id).unwrap().data;
        let want = floats(&fx["grads"][name.as_str()]["data"]);
        for (k, (a, b)) in got.iter().zip(&want).enumerate() {
            assert!(close(*a, *b), "d loss / d {name}[{k}]: {a} vs RecBole {b}");
        }
    }

    let refs: Vec<&[u32]> = seqs.iter().map(Vec::as_slice).collect();
    let mut scores = vec![0.0; refs.len() * (shape.n_items + 1)];
    m.score_sequences(&refs, &mut scores);
    for (k, (a, b)) in scores.iter().zip(floats(&fx["scores"])).enumerate() {
        assert!(close(*a, b), "score {k}: {a} vs RecBole {b}");
    }
}
