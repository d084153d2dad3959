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
        let emb: Vec<_> = model
            .embeddings
            .iter()
            .zip(&fwd.emb_nodes)
            .map(|(e, &n)| e.backward(&batch, &grads.take(n).unwrap()))
            .collect();
        let dense: Vec<_> = model
            .params
            .iter()
            .map(|(id, _)| grads.param(id).cloned())
            .collect();
        drop(graph);
        let eps = 1e-3f32;
        let close = |a: f64, n: f64| (a - n).abs() <= 3e-4 + 3e-2 * n.abs().max(a.abs());
        // embedding rows touched by the batch
        for (ei, tables) in emb.iter().enumerate() {
            for (ti, rg) in tables.iter().enumerate() {
                for (k, &row) in rg.rows.iter().enumerate().take(4) {
                    for d in 0..rg.dim {
                        let idx = row as usize * rg.dim + d;
                        let orig = model.embeddings[ei].tables[ti].weight[idx];
                        model.embeddings[ei].tables[ti].weight[idx] = orig + eps;
                        let up = loss(&model, &batch);
                        model.embeddings[ei].tables[ti].weight[idx] = orig - eps;
                        let down = loss(&model, &batch);
                        model.embeddings[ei].tables[ti].weight[idx] = orig;
                        let num = (up - down) / (2.0 * eps as f64);
                        let ana = rg.grads[k * rg.dim + d] as f64;
                        assert!(
                            close(ana, num),
                            "{expid}: emb{ei} table {ti} row {row} dim {d}: \
                            analytic {ana} numeric {num}"
                        );
                    }
                }
            }
        }
        // a sample of every dense parameter
        let ids: Vec<_> = model
            .params
            .iter()
            .filter(|(_, p)| p.trainable)
            .map(|(id, _)| id)
            .collect();
        for id in ids {
            let g = dense[id.0].as_ref().unwrap_or_else(|| {
                panic!("{expid}: no gradient for {}", model.params.get(id).name)
            });
            let n = g.len();
            for i in [0, n / 2, n - 1] {
                let orig = model.params.value(id).data[i];
                model.params.value_mut(id).data[i] = orig + eps;
                let up = loss(&model, &batch);
                model.params.value_mut(id).data[i] = orig - eps;
                let down = loss(&model, &batch);
                model.params.value_mut(id).data[i] = orig;
                let num = (up - down) / (2.0 * eps as f64);
                assert!(
                    close(g.data[i] as f64, num),
                    "{expid}: {}[{i}]: analytic {} numeric {num}",
                    model.params.get(id).name,
                    g.data[i]
                );
            }
        }
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
