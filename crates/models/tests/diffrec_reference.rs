//! recforge's DiffRec against RecBole 1.2.1's own class on a tiny case: the same weights
//! (`fixtures/diffrec_recbole.json`, written by `make_diffrec_reference.py`), three users'
//! training rows, a loss at fixed steps and noise with input dropout off. The loss, the step
//! history it records, every weight's gradient and the reverse pass's full-sort scores must
//! agree (RecBole ran in f64).

mod common;

use common::floats;
use recforge_data::interactions::UserItems;
use recforge_data::ModelConfig;
use recforge_models::topk::{DiffRec, TopkModel, TopkShape};
use recforge_nn::Graph;
use serde_json::Value;

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 2e-5 + 1e-4 * b.abs()
}

#[test]
fn diffrec_matches_recbole_on_its_own_weights() {
    let fx: Value = serde_json::from_str(include_str!("fixtures/diffrec_recbole.json")).unwrap();
    let mut values = fx["config"].as_object().unwrap().clone();
    values.insert("model".into(), "DiffRec".into());
    let cfg = ModelConfig::new("DiffRec_fixture", values);
    let n = fx["n_items"].as_u64().unwrap() as usize;
    let histories: Vec<Vec<u32>> = serde_json::from_value(fx["histories"].clone()).unwrap();
    let pairs: Vec<(u32, u32)> = histories
        .iter()
        .enumerate()
        .flat_map(|(u, h)| h.iter().map(move |&i| (u as u32, i)))
        .collect();
    let train = UserItems::from_pairs(histories.len(), &pairs);
    let shape = TopkShape {
        n_users: histories.len(),
        n_items: n,
    };
    let mut m = DiffRec::new(&cfg, shape, &train, 0).unwrap();

    // RecBole's names → recforge's: its first Linear (n + e → h) is split by rows into the part
    // that meets x_t and the part that meets the step embedding
    let ours = |name: &str| -> Vec<(String, std::ops::Range<usize>)> {
        let map = [
            ("mlp.emb_layer.weight", "mlp.emb_layer.0.weight"),
            ("mlp.emb_layer.bias", "mlp.emb_layer.0.bias"),
            ("mlp.mlp_layers.mlp_layers.1.bias", "mlp.mlp_layers.0.bias"),
            (
                "mlp.mlp_layers.mlp_layers.4.weight",
                "mlp.mlp_layers.rest.0.weight",
            ),
            (
                "mlp.mlp_layers.mlp_layers.4.bias",
                "mlp.mlp_layers.rest.0.bias",
            ),
            (
                "mlp.mlp_layers.mlp_layers.7.weight",
                "mlp.mlp_layers.rest.1.weight",
            ),
            (
                "mlp.mlp_layers.mlp_layers.7.bias",
                "mlp.mlp_layers.rest.1.bias",
            ),
        ];
        if name == "mlp.mlp_layers.mlp_layers.1.weight" {
            let h = 5;
            return vec![
                ("mlp.mlp_layers.0.weight".into(), 0..n * h),
                ("mlp.mlp_layers.0.step_weight".into(), n * h..(n + 4) * h),
            ];
        }
        let (_, o) = map.iter().find(|(r, _)| *r == name).expect("a known name");
        vec![(o.to_string(), 0..usize::MAX)]
    };
    let index: Vec<(String, recforge_nn::ParamId)> = m
        .params()
        .iter()
        .map(|(id, p)| (p.name.clone(), id))
        .collect();
    let id_of = |name: &str| index.iter().find(|(n, _)| n == name).expect(name).1;
    let mut assigned = 0;
    for (rname, w) in fx["weights"].as_object().unwrap() {
        let data = floats(&w["data"]);
        for (name, range) in ours(rname) {
            let end = range.end.min(data.len());
            let p = m.params_mut().value_mut(id_of(&name));
            assert_eq!(p.data.len(), end - range.start, "{name}");
            p.data = data[range.start..end].to_vec();
            assigned += 1;
        }
    }
    assert_eq!(assigned, index.len(), "every parameter comes from RecBole");

    let ts: Vec<usize> = serde_json::from_value(fx["steps_drawn"].clone()).unwrap();
    let noise = floats(&fx["noise"]);
    let mut x0 = vec![0.0f32; histories.len() * n];
    for (u, h) in histories.iter().enumerate() {
        for &i in h {
            x0[u * n + i as usize] = 1.0;
        }
    }
    let mut g = Graph::new(m.params(), true);
    let (l, recorded) = m.loss_at(&mut g, x0, &ts, &[1.0; 3], &noise, None);
    let loss = g.value(l).data[0] as f64;
    let want = fx["loss"].as_f64().unwrap();
    assert!(close(loss, want), "loss {loss} vs RecBole {want}");
    for (a, b) in recorded.iter().zip(fx["recorded"].as_array().unwrap()) {
        assert!(close(*a, b.as_f64().unwrap()), "recorded {a} vs {b}");
    }
    let grads = g.backward(l);
    for (rname, gw) in fx["grads"].as_object().unwrap() {
        let want = floats(&gw["data"]);
        for (name, range) in ours(rname) {
            let got = &grads.param(id_of(&name)).unwrap().data;
            let end = range.end.min(want.len());
            for (k, (a, b)) in got.iter().zip(&want[range.start..end]).enumerate() {
                assert!(
                    close(*a as f64, *b as f64),
                    "d loss / d {name}[{k}]: {a} vs RecBole {b}"
                );
            }
        }
    }

    let users: Vec<u32> = (0..histories.len() as u32).collect();
    let mut scores = vec![0.0; users.len() * n];
    m.score_users(&users, &train, &mut scores);
    for (k, (a, b)) in scores.iter().zip(floats(&fx["scores"])).enumerate() {
        assert!(close(*a as f64, b as f64), "score {k}: {a} vs RecBole {b}");
    }
}
