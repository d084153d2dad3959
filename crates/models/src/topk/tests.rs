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
        train_times: vec![],
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

#[test]
fn t_diffrec_weights_rise_linearly_in_time_order() {
    // the known answer of ../shared/design/topk.md
    let w = time_weights(3, 0.1, 1.0);
    assert!(
        w.iter()
            .zip([0.1, 0.55, 1.0])
            .all(|(a, b)| (a - b).abs() < 1e-6),
        "{w:?}"
    );
    assert_eq!(time_weights(1, 0.1, 1.0), vec![0.1]);
    assert!(time_weights(0, 0.1, 1.0).is_empty());

    // user 0 met items 2, 0, 1 in that order (timestamps 5, 7, 9); user 1 met item 1 alone
    let mut data = toy(&[(0, 1), (1, 1), (0, 2), (0, 0)], 2, 3);
    data.train_times = vec![9.0, 1.0, 5.0, 7.0];
    assert_eq!(data.train_in_time_order(), [(0, 2), (0, 0), (0, 1), (1, 1)]);
    let shape = TopkShape {
        n_users: 2,
        n_items: 3,
    };
    let c = cfg(&[
        ("model", "DiffRec".into()),
        ("time-aware", true.into()),
        ("dims_dnn", serde_json::json!([4])),
    ]);
    let mut m = DiffRec::new(&c, shape, &data.train, 0).unwrap();
    m.prepare_training(&data).unwrap();
    let values = m
        .params()
        .iter()
        .find(|(_, p)| p.name == "history_value")
        .map(|(_, p)| p.value.data.clone())
        .unwrap();
    // the training CSR lists items in id order: user 0 → [0, 1, 2], user 1 → [1]
    let want = [0.55, 1.0, 0.1, 0.1];
    assert!(
        values.iter().zip(want).all(|(a, b)| (a - b).abs() < 1e-6),
        "{values:?}"
    );
}

#[test]
fn diffrec_steps_are_uniform_until_every_history_is_full() {
    let mut h = StepLosses::new(3, 2);
    let mut rng = StdRng::seed_from_u64(5);
    for (t, l) in [(0, 1.0), (0, 3.0), (1, 2.0), (1, 2.0), (2, 4.0)] {
        h.record(t, l);
    }
    assert!(h.distribution().is_none(), "step 2 has one loss of two");
    let (ts, pt) = h.sample(300, &mut rng);
    assert!(pt.iter().all(|&p| p == 1.0));
    assert!((0..3).all(|t| ts.contains(&t)));
    // a third loss for step 0 drops its oldest (1.0): step 0 holds [3, 5]
    h.record(0, 5.0);
    h.record(2, 4.0);
    let p = h.distribution().unwrap();
    // √mean(L²): √17, 2, 4; mixed .999·p + .001/3
    let rms = [17f64.sqrt(), 2.0, 4.0];
    let total: f64 = rms.iter().sum();
    for (got, r) in p.iter().zip(rms) {
        let want = r / total * 0.999 + 0.001 / 3.0;
        assert!((got - want).abs() < 1e-12, "{got} vs {want}");
    }
    // draws follow p, and each carries p_t · T
    let (ts, pt) = h.sample(30_000, &mut rng);
    for (t, want) in p.iter().enumerate() {
        let share = ts.iter().filter(|&&s| s == t).count() as f64 / ts.len() as f64;
        assert!((share - want).abs() < 0.01, "step {t}: {share} vs {want}");
    }
    for (&t, &w) in ts.iter().zip(&pt) {
        assert!((w - p[t] * 3.0).abs() < 1e-12);
    }
}

/// Two groups of 20 users with disjoint tastes over 8 items (0..4 and 4..8); each user lacks
/// the one item where `(u + i) % 4 == 0`.
fn two_groups() -> (Interactions, TopkShape) {
    let mut pairs = Vec::new();
    for u in 0..40u32 {
        let group = if u < 20 { 0..4 } else { 4..8 };
        for i in group {
            if (u + i) % 4 != 0 {
                pairs.push((u, i));
            }
        }
    }
    let shape = TopkShape {
        n_users: 40,
        n_items: 8,
    };
    (toy(&pairs, 40, 8), shape)
}

/// `steps` Adam steps (lr 1e-2) on one batch of every user; the first and last loss.
fn train_on_all_users(m: &mut dyn TopkModel, data: &Interactions, steps: u64) -> (f32, f32) {
    let mut opt = recforge_nn::DenseOptimizer::new(
        recforge_nn::OptimizerKind::parse("adam").unwrap(),
        m.params(),
    );
    let mut rng = StdRng::seed_from_u64(2);
    let users: Vec<u32> = (0..data.n_users as u32).collect();
    let batch = TopkBatch::Users {
        rows: history_rows(&data.train, &users, data.n_items),
        users,
    };
    let (mut first, mut last) = (None, 0.0);
    for step in 1..=steps {
        let (l, grads) = {
            let mut g = Graph::new(m.params(), true);
            let l = m.loss(&mut g, &batch, step, &mut rng);
            (g.value(l).data[0], g.backward(l).params)
        };
        first.get_or_insert(l);
        last = l;
        opt.step(m.params_mut(), &grads, 1e-2, 1.0, 0.0);
    }
    (first.unwrap_or(last), last)
}

/// User 0 (items 1, 2, 3) ranks its group's unseen item 0 above the other group's; user 20
/// (items 5, 6, 7) ranks 4 above items 0..4.
fn ranks_each_groups_unseen_item_first(m: &dyn TopkModel, data: &Interactions) {
    let mut s = vec![0.0; 16];
    m.score_users(&[0, 20], &data.train, &mut s);
    let (u0, u20) = s.split_at(8);
    assert!(
        u0[0] > u0[4..].iter().cloned().fold(f32::MIN, f32::max),
        "{u0:?}"
    );
    assert!(
        u20[4] > u20[..4].iter().cloned().fold(f32::MIN, f32::max),
        "{u20:?}"
    );
}

#[test]
fn diffrec_learns_a_toy_catalogue_and_refuses_what_is_not_built() {
    // two groups of users with disjoint tastes: after training, a user of the first group
    // ranks the group's unseen item above the other group's items
    let (data, shape) = two_groups();
    let c = cfg(&[
        ("model", "DiffRec".into()),
        ("steps", 5.into()),
        ("noise_schedule", "linear-var".into()),
        ("noise_scale", 0.1.into()),
        ("noise_min", 0.01.into()),
        ("noise_max", 0.1.into()),
        ("dims_dnn", serde_json::json!([16])),
    ]);
    let mut m = DiffRec::new(&c, shape, &data.train, 1).unwrap();
    let (first, last) = train_on_all_users(&mut m, &data, 300);
    assert!(last < 0.5 * first, "{first} → {last}");
    ranks_each_groups_unseen_item_first(&m, &data);
    // the step history filled
    assert!(m.step_losses().distribution().is_some());

    for (k, v) in [
        ("mean_type", serde_json::json!("eps")),
        ("sampling_steps", 2.into()),
        ("noise_schedule", "cosine".into()),
        ("mlp_act_func", "swish".into()),
        ("dims_dnn", serde_json::json!([0])),
    ] {
        let e = DiffRec::new(
            &cfg(&[("model", "DiffRec".into()), (k, v)]),
            shape,
            &data.train,
            0,
        )
        .err()
        .unwrap_or_else(|| panic!("{k} accepted"));
        assert!(e.to_string().contains(k), "{k}: {e}");
    }
}

#[test]
fn ldiffrec_splits_its_latent_by_cluster_share_and_learns_a_toy_catalogue() {
    // the two-group catalogue of the DiffRec test, items clustered by their group
    let (data, shape) = two_groups();
    // clusters of 6 and 2 items: latents int(6/8 · 8) = 6 and 8 − 6 = 2
    let uneven = cfg(&[
        ("model", "LDiffRec".into()),
        ("n_cate", 2.into()),
        ("in_dims", serde_json::json!([8])),
        ("item_clusters", serde_json::json!([0, 0, 0, 0, 0, 0, 1, 1])),
    ]);
    let m = LDiffRec::new(&uneven, shape, 0).unwrap();
    let shapes: Vec<(String, usize, usize)> = m
        .params()
        .iter()
        .filter(|(_, p)| p.name.starts_with("autoencoder.encoder") && p.name.ends_with("weight"))
        .map(|(_, p)| (p.name.clone(), p.value.rows, p.value.cols))
        .collect();
    assert_eq!(
        shapes,
        [
            ("autoencoder.encoder.0.0.weight".into(), 6, 12),
            ("autoencoder.encoder.1.0.weight".into(), 2, 4)
        ]
    );
    // λ = max(.03 (1 − c/1000), .005), β = min(.3, c/200)
    let (l, b) = m.weights(0);
    assert!((l - 0.03).abs() < 1e-7 && b == 0.0);
    let (l, b) = m.weights(500);
    assert!((l - 0.015).abs() < 1e-6 && (b - 0.3).abs() < 1e-7);
    assert_eq!(m.weights(5000).0, 0.005);
    // the checkpoint's config carries the clusters in place of the vectors' file
    let saved = m.checkpoint_config(&uneven);
    assert_eq!(
        saved.get("item_clusters"),
        Some(&serde_json::json!([0, 0, 0, 0, 0, 0, 1, 1]))
    );

    let c = cfg(&[
        ("model", "LDiffRec".into()),
        ("n_cate", 2.into()),
        ("in_dims", serde_json::json!([8])),
        ("dims_dnn", serde_json::json!([16])),
        ("item_clusters", serde_json::json!([1, 0, 1, 0, 0, 1, 0, 1])),
        // the plumbing, without the VAE's noise: on 40 users its KL collapses the latent
        ("reparam", false.into()),
        ("vae_anneal_cap", 0.0.into()),
        ("steps", 5.into()),
        ("noise_schedule", "linear-var".into()),
        ("noise_scale", 0.1.into()),
        ("noise_min", 0.01.into()),
        ("noise_max", 0.1.into()),
    ]);
    let mut m = LDiffRec::new(&c, shape, 1).unwrap();
    let (_, last) = train_on_all_users(&mut m, &data, 400);
    assert!(last.is_finite());
    // scores come back in item-id order although the clusters interleave the ids
    ranks_each_groups_unseen_item_first(&m, &data);

    for (k, v) in [
        ("out_dims", serde_json::json!([4])),
        ("item_clusters", serde_json::json!([0, 1])),
        ("n_cate", 3.into()),
    ] {
        let mut pairs = vec![
            ("model", "LDiffRec".into()),
            ("n_cate", 2.into()),
            ("item_clusters", serde_json::json!([0, 0, 0, 0, 1, 1, 1, 1])),
        ];
        pairs.retain(|(name, _)| *name != k);
        pairs.push((k, v));
        let e = LDiffRec::new(&cfg(&pairs), shape, 0)
            .err()
            .unwrap_or_else(|| panic!("{k} accepted"));
        assert!(
            e.to_string().contains("item_clusters") || e.to_string().contains(k),
            "{k}: {e}"
        );
    }
    // clustering by vectors needs the file
    let e = LDiffRec::new(
        &cfg(&[("model", "LDiffRec".into()), ("n_cate", 2.into())]),
        shape,
        0,
    )
    .err()
    .unwrap();
    assert!(e.to_string().contains("item_emb_file"), "{e}");
}
