use super::*;
use rand::SeedableRng;
use recforge_data::interactions::Interactions;
use recforge_nn::testing::GradCheck;
use recforge_nn::ParamId;

fn toy(pairs: &[(u32, u32)], n_users: usize, n_items: usize) -> Interactions {
    let none = UserItems::from_pairs(n_users, &[]);
    Interactions {
        n_users,
        n_items,
        train_pairs: pairs.to_vec(),
        train: UserItems::from_pairs(n_users, pairs),
        valid: none.clone(),
        test: none,
        user_tokens: vec![],
        item_tokens: vec![],
        skipped: [0; 3],
    }
}

fn cfg(pairs: &[(&str, serde_json::Value)]) -> ModelConfig {
    ModelConfig::new(
        "t",
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect(),
    )
}

#[test]
fn normalized_adjacency_of_a_toy_graph() {
    // u1:{i1,i2}, u2:{i2}: 1/√(2·1) = 0.7071, 1/√(2·2) = 0.5, 1/√(1·2) = 0.7071
    let data = toy(&[(0, 0), (0, 1), (1, 1)], 2, 2);
    let shape = TopkShape {
        n_users: 2,
        n_items: 2,
    };
    let a = lightgcn::normalized_adjacency(&data.train, shape);
    let close = |x: f32, y: f32| (x - y).abs() < 1e-4;
    assert!(close(a.get(0, 2), std::f32::consts::FRAC_1_SQRT_2));
    assert!(close(a.get(0, 3), 0.5));
    assert!(close(a.get(1, 3), std::f32::consts::FRAC_1_SQRT_2));
    assert_eq!(a.get(1, 2), 0.0);
    assert_eq!(a.get(0, 0), 0.0, "no self-loops");
    assert!(a.is_symmetric());
}

fn pair_batch() -> TopkBatch {
    TopkBatch::Pairs {
        users: vec![0, 1, 2, 0],
        pos: vec![1, 0, 3, 2],
        neg: vec![2, 3, 0, 4],
    }
}

fn loss_value(m: &dyn TopkModel, batch: &TopkBatch) -> (f32, Vec<Option<Tensor>>) {
    let mut rng = StdRng::seed_from_u64(0);
    let mut g = Graph::new(m.params(), true);
    let l = m.loss(&mut g, batch, 1, &mut rng);
    let v = g.value(l).data[0];
    (v, g.backward(l).params)
}

#[test]
fn bpr_loss_at_zero_embeddings_is_ln_2() {
    let m = Bpr::from_tables(Tensor::zeros(3, 4), Tensor::zeros(5, 4));
    let (l, _) = loss_value(&m, &pair_batch());
    assert!((l - std::f32::consts::LN_2).abs() < 1e-6);
}

#[test]
fn lightgcn_with_no_layers_and_no_regulariser_equals_bpr() {
    let data = toy(&[(0, 1), (1, 0), (2, 3), (0, 2), (1, 4)], 3, 5);
    let shape = TopkShape {
        n_users: 3,
        n_items: 5,
    };
    let c = cfg(&[
        ("n_layers", 0.into()),
        ("reg_weight", 0.0.into()),
        ("embedding_size", 4.into()),
    ]);
    let lg = LightGcn::new(&c, shape, &data.train, 7).unwrap();
    let p = lg.params();
    let bpr = Bpr::from_tables(p.value(ParamId(0)).clone(), p.value(ParamId(1)).clone());
    let (a, ga) = loss_value(&lg, &pair_batch());
    let (b, gb) = loss_value(&bpr, &pair_batch());
    assert!((a - b).abs() < 1e-6, "{a} vs {b}");
    for (x, y) in ga.iter().zip(&gb) {
        let (x, y) = (x.as_ref().unwrap(), y.as_ref().unwrap());
        assert!(x
            .data
            .iter()
            .zip(&y.data)
            .all(|(p, q)| (p - q).abs() < 1e-6));
    }
    // and the scores agree
    let (mut s1, mut s2) = (vec![0.0; 15], vec![0.0; 15]);
    lg.score_users(&[0, 1, 2], &data.train, &mut s1);
    bpr.score_users(&[0, 1, 2], &data.train, &mut s2);
    assert!(s1.iter().zip(&s2).all(|(p, q)| (p - q).abs() < 1e-6));
}

/// A model's loss, as a function of its parameters, against finite differences.
fn check_model_gradients(m: &dyn TopkModel, batch: &TopkBatch) {
    GradCheck {
        step: 1e-2,
        atol: 1e-3,
        rtol: 2e-2,
    }
    .run(m.params(), &[], |g, _| {
        let mut rng = StdRng::seed_from_u64(11);
        m.loss(g, batch, 1000, &mut rng)
    })
    .unwrap();
}

#[test]
fn lightgcn_and_multivae_losses_match_finite_differences() {
    let data = toy(&[(0, 1), (1, 0), (2, 3), (0, 2), (1, 4), (2, 1)], 3, 5);
    let shape = TopkShape {
        n_users: 3,
        n_items: 5,
    };
    let c = cfg(&[
        ("n_layers", 2.into()),
        ("reg_weight", 0.1.into()),
        ("embedding_size", 3.into()),
    ]);
    let lg = LightGcn::new(&c, shape, &data.train, 3).unwrap();
    check_model_gradients(&lg, &pair_batch());

    let c = cfg(&[
        ("mlp_hidden_size", serde_json::json!([4])),
        ("latent_dimension", 4.into()),
        ("anneal_cap", 0.5.into()),
        ("total_anneal_steps", 2000.into()),
    ]);
    let vae = MultiVae::new(&c, shape, 5).unwrap();
    let users = vec![0, 1, 2];
    let batch = TopkBatch::Users {
        rows: history_rows(&data.train, &users, 5),
        users,
    };
    check_model_gradients(&vae, &batch);
    assert_eq!(vae.anneal(1000), 0.5);
}

#[test]
fn multivae_anneal_follows_recbole() {
    let shape = TopkShape {
        n_users: 2,
        n_items: 3,
    };
    let vae = MultiVae::new(&cfg(&[]), shape, 1).unwrap();
    assert!((vae.anneal(528) - 0.00264).abs() < 1e-7);
    assert_eq!(vae.anneal(10_000_000), 0.2);
}

/// Inverse by Gauss–Jordan elimination with partial pivoting (the test's dense reference).
fn dense_inverse(mut a: Vec<Vec<f64>>) -> Vec<Vec<f64>> {
    let n = a.len();
    let mut inv: Vec<Vec<f64>> = (0..n)
        .map(|i| (0..n).map(|j| (i == j) as u8 as f64).collect())
        .collect();
    for c in 0..n {
        let p = (c..n)
            .max_by(|&x, &y| a[x][c].abs().total_cmp(&a[y][c].abs()))
            .unwrap();
        a.swap(c, p);
        inv.swap(c, p);
        let d = a[c][c];
        for j in 0..n {
            a[c][j] /= d;
            inv[c][j] /= d;
        }
        for r in 0..n {
            if r != c {
                let f = a[r][c];
                for j in 0..n {
                    a[r][j] -= f * a[c][j];
                    inv[r][j] -= f * inv[c][j];
                }
            }
        }
    }
    inv
}

#[test]
fn ease_matches_a_dense_reference() {
    let pairs = [
        (0, 0),
        (0, 1),
        (1, 1),
        (1, 2),
        (2, 0),
        (2, 2),
        (2, 3),
        (3, 3),
    ];
    let data = toy(&pairs, 4, 4);
    let lambda = 0.5;
    let mut g = vec![vec![0.0f64; 4]; 4];
    for u in 0..4u32 {
        for &a in data.train.row(u) {
            for &b in data.train.row(u) {
                g[a as usize][b as usize] += 1.0;
            }
        }
    }
    (0..4).for_each(|i| g[i][i] += lambda);
    let p = dense_inverse(g);
    let mut m = Ease::new(
        &cfg(&[("reg_weight", lambda.into())]),
        TopkShape {
            n_users: 4,
            n_items: 4,
        },
    )
    .unwrap();
    m.fit_closed_form(&data).unwrap();
    let b = &m.params().value(ParamId(0)).data;
    for i in 0..4 {
        for j in 0..4 {
            let want = if i == j { 0.0 } else { -p[i][j] / p[j][j] };
            assert!(
                (b[i * 4 + j] as f64 - want).abs() < 1e-6,
                "B[{i}][{j}] {} vs {want}",
                b[i * 4 + j]
            );
        }
    }
    // user 3's scores are its row of X times B
    let mut s = vec![0.0; 4];
    m.score_users(&[3], &data.train, &mut s);
    assert_eq!(s, b[12..16].to_vec());
}

#[test]
fn pop_counts_training_interactions() {
    let data = toy(&[(0, 1), (1, 1), (2, 1), (0, 2), (1, 2), (2, 0)], 3, 4);
    let mut m = Pop::new(TopkShape {
        n_users: 3,
        n_items: 4,
    });
    m.fit_closed_form(&data).unwrap();
    let mut s = vec![0.0; 4];
    m.score_history(&[], &mut s);
    assert_eq!(s, vec![1.0, 3.0, 2.0, 0.0]);
}

#[test]
fn build_knows_every_model_and_refuses_others() {
    let data = toy(&[(0, 0), (1, 1)], 2, 2);
    let shape = TopkShape {
        n_users: 2,
        n_items: 2,
    };
    for name in model_names() {
        let m = build(
            &cfg(&[("model", (*name).into()), ("latent_dimension", 4.into())]),
            shape,
            &data.train,
        )
        .unwrap();
        assert_eq!(m.name(), name);
        assert!(model_keys(name).is_some());
        assert_eq!(crate::family_of(name), Some(crate::Family::Topk));
    }
    let e = build(&cfg(&[("model", "BPRR".into())]), shape, &data.train)
        .err()
        .unwrap();
    assert!(
        e.to_string()
            .contains("unknown model `BPRR` (known: Pop, BPR, LightGCN"),
        "{e}"
    );
    // a model of another family is named as such
    let e = build(&cfg(&[("model", "DeepFM".into())]), shape, &data.train)
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("`DeepFM` is a CTR model") && e.contains("this dataset is for a top-K model"),
        "{e}"
    );
}
