use super::*;
use rand::SeedableRng;
use recforge_data::sequences::UserSequences;
use recforge_nn::testing::GradCheck;

fn cfg(pairs: &[(&str, serde_json::Value)]) -> ModelConfig {
    ModelConfig::new(
        "t",
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect(),
    )
}

/// A small SASRec over 9 items: width 4, 2 heads, 2 blocks, histories of at most `max_len`.
fn small_sasrec(dropout: f64, max_len: usize) -> SasRec {
    let c = cfg(&[
        ("hidden_size", 4.into()),
        ("inner_size", 6.into()),
        ("n_heads", 2.into()),
        ("n_layers", 2.into()),
        ("hidden_dropout_prob", dropout.into()),
        ("attn_dropout_prob", dropout.into()),
        // a wider init than RecBole's 0.02, so the test sees non-trivial attention
        ("initializer_range", 0.5.into()),
        ("layer_norm_eps", 1e-5.into()),
        ("MAX_ITEM_LIST_LENGTH", max_len.into()),
    ]);
    SasRec::new(&c, SeqShape { n_items: 9 }, 5).unwrap()
}

/// A small GRU4Rec over 9 items: embeddings of 4, two GRU layers of 3.
fn small_gru4rec(dropout: f64, max_len: usize) -> Gru4Rec {
    let c = cfg(&[
        ("embedding_size", 4.into()),
        ("hidden_size", 3.into()),
        ("num_layers", 2.into()),
        ("dropout_prob", dropout.into()),
        ("MAX_ITEM_LIST_LENGTH", max_len.into()),
    ]);
    Gru4Rec::new(&c, SeqShape { n_items: 9 }, 5).unwrap()
}

fn sequences(seqs: &[&[u32]]) -> UserSequences {
    UserSequences {
        users: (0..seqs.len()).map(|u| format!("u{u}")).collect(),
        items: (0..10).map(|i| i.to_string()).collect(),
        sequences: seqs.iter().map(|s| s.to_vec()).collect(),
    }
}

fn loss_and_grads(m: &dyn SeqModel, windows: &[Window]) -> (f32, Vec<Option<recforge_nn::Tensor>>) {
    let mut g = Graph::new(m.params(), true);
    let l = m.loss(&mut g, windows, &mut StdRng::seed_from_u64(1));
    (g.value(l).data[0], g.backward(l).params)
}

#[test]
fn the_output_at_a_position_ignores_the_items_after_it() {
    let m = small_sasrec(0.0, 8);
    let mut g = Graph::inference(m.params());
    let rng = &mut StdRng::seed_from_u64(0);
    let a = Packed::windows(&[Window {
        input: &[3, 1, 4, 1, 5],
        targets: &[1, 4, 1, 5, 9],
        scored: 0,
    }]);
    let b = Packed::windows(&[Window {
        input: &[3, 1, 4, 7, 2],
        targets: &[1, 4, 7, 2, 6],
        scored: 0,
    }]);
    let (la, lb) = (m.logits(&mut g, &a, rng), m.logits(&mut g, &b, rng));
    let (la, lb) = (g.value(la), g.value(lb));
    let row = |t: &recforge_nn::Tensor, r: usize| t.data[r * 10..(r + 1) * 10].to_vec();
    for r in 0..3 {
        assert_eq!(row(la, r), row(lb, r), "position {r}");
    }
    assert_ne!(row(la, 3), row(lb, 3));
    // and scoring the history [3, 1, 4] gives the logits of position 2
    let mut out = vec![0.0; 10];
    m.score_sequences(&[&[3, 1, 4]], &mut out);
    let want = row(la, 2);
    assert!(out.iter().zip(&want).all(|(x, y)| (x - y).abs() < 1e-5));
}

/// Mean loss and gradients of all-positions windows against RecBole's prefix instances.
fn assert_all_positions_equal_prefixes(m: &dyn SeqModel) {
    // histories shorter than, equal to and longer than the window (max_len 3)
    let data = sequences(&[
        &[1, 2, 3, 4, 5, 6, 7, 8, 9, 1],
        &[2, 3, 4, 5, 6],
        &[9, 8, 7],
        &[5, 6, 7, 8, 9, 1, 2],
    ]);
    let split = data.leave_one_out();
    let (windows, prefixes) = (split.windows(3), split.prefix_windows(3));
    assert!(windows.len() < prefixes.len());
    let (la, ga) = loss_and_grads(m, &windows);
    let (lb, gb) = loss_and_grads(m, &prefixes);
    assert!((la - lb).abs() < 1e-5, "{}: {la} vs {lb}", m.name());
    for ((x, y), (_, p)) in ga.iter().zip(&gb).zip(m.params().iter()) {
        let (x, y) = (x.as_ref().unwrap(), y.as_ref().unwrap());
        for (a, b) in x.data.iter().zip(&y.data) {
            assert!((a - b).abs() < 1e-5, "{} {}: {a} vs {b}", m.name(), p.name);
        }
    }
}

#[test]
fn all_positions_training_equals_the_prefix_instances_without_dropout() {
    assert_all_positions_equal_prefixes(&small_sasrec(0.0, 3));
    assert_all_positions_equal_prefixes(&small_gru4rec(0.0, 3));
}

/// The loss against finite differences, with dropout on: the masks come from the seeded
/// generator, the same at each call.
fn check_loss_gradients(m: &dyn SeqModel) {
    let windows = [
        Window {
            input: &[3, 1, 4, 1],
            targets: &[1, 4, 1, 5],
            scored: 1,
        },
        Window {
            input: &[2, 7],
            targets: &[7, 9],
            scored: 0,
        },
    ];
    GradCheck {
        step: 1e-2,
        atol: 2e-3,
        rtol: 3e-2,
    }
    .run(m.params(), &[], |g, _| {
        m.loss(g, &windows, &mut StdRng::seed_from_u64(3))
    })
    .unwrap_or_else(|e| panic!("{}: {e}", m.name()));
}

#[test]
fn sasrec_and_gru4rec_losses_match_finite_differences() {
    check_loss_gradients(&small_sasrec(0.2, 4));
    check_loss_gradients(&small_gru4rec(0.3, 4));
}

#[test]
fn sasrec_config_errors_name_the_key() {
    let shape = SeqShape { n_items: 5 };
    for (pairs, want) in [
        (
            vec![("hidden_size", 5.into()), ("n_heads", 2.into())],
            "not a multiple of n_heads",
        ),
        (
            vec![("hidden_dropout_prob", 1.0.into())],
            "hidden_dropout_prob",
        ),
        (vec![("hidden_act", "swish".into())], "hidden_act `swish`"),
        (vec![("loss_type", "BPR".into())], "loss_type `BPR`"),
    ] {
        let err = SasRec::new(&cfg(&pairs), shape, 1)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains(want), "{err}");
    }
}
