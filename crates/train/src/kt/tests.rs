use super::*;
use crate::fit::Silent;
use rand::Rng;
use recforge_nn::{NodeId, ParamStore, Tensor};

/// Predicts that the previous response repeats: logit +2 after a correct answer, −2 after a
/// wrong one.
struct CopyLast(ParamStore);

impl KtModel for CopyLast {
    fn name(&self) -> &'static str {
        "copy-last"
    }
    fn params(&self) -> &ParamStore {
        &self.0
    }
    fn params_mut(&mut self) -> &mut ParamStore {
        &mut self.0
    }
    fn logits(&self, g: &mut Graph, batch: &KtBatch, _: &mut StdRng) -> NodeId {
        let z: Vec<f32> = batch
            .previous_of_scored()
            .iter()
            .map(|&t| {
                if batch.responses[t as usize] == 1 {
                    2.0
                } else {
                    -2.0
                }
            })
            .collect();
        g.input(Tensor::from_vec(z.len(), 1, z), false)
    }
}

fn seq(responses: &[u8]) -> KtSequence {
    let mut s = KtSequence::default();
    for (t, &r) in responses.iter().enumerate() {
        s.push(0, &[1 + t as u32 % 3], r);
    }
    s
}

#[test]
fn multi_step_on_a_copy_last_oracle_gives_the_hand_computed_aucs() {
    // window 1: h = 4 given [1 0 1 1], steps 4..7 with labels [0 0 1 0]; its own guesses
    // repeat the last given response, 1, so it scores "high" four times. Teacher-forced it
    // copies r3..r6 = [1 0 0 1]. Window 2: h = 3 given [0 1 0], labels [0 1 1]; free-running
    // "low" three times, teacher-forced copies [0 0 1]. A window of 3 is too short.
    let seqs = [
        seq(&[1, 0, 1, 1, 0, 0, 1, 0]),
        seq(&[0, 1, 0, 0, 1, 1]),
        seq(&[1, 1, 0]),
    ];
    let windows = windows(&seqs, 200);
    assert_eq!(windows.len(), 3);
    let m = CopyLast(ParamStore::new());
    let cfg = MultiStepConfig {
        windows: 1000,
        horizon: 10,
    };
    for block in [1, 2, 64] {
        let r = multi_step(&m, &seqs, &windows, cfg, block);
        assert_eq!(r.windows, 2);
        assert_eq!(
            r.labels,
            [vec![0.0, 0.0], vec![0.0, 1.0], vec![1.0, 1.0], vec![0.0]]
        );
        let mt = r.metrics();
        let get = |k: &str| mt.get(k).unwrap_or_else(|| panic!("{k} missing"));
        // pooled: positives {high, low, low}, negatives {high ×3, low}: (2.5 + 0.5 + 0.5) / 12
        assert!((get("multistep_auc") - 3.5 / 12.0).abs() < 1e-12);
        // pooled accuracy: one right in each window
        assert!((get("multistep_acc") - 2.0 / 7.0).abs() < 1e-12);
        // step 2: high on a wrong answer, low on a right one; steps 1, 3, 4 have one class
        assert_eq!(get("multistep_auc@2"), 0.0);
        for k in [1, 3, 4] {
            assert!(mt.get(&format!("multistep_auc@{k}")).is_none());
        }
        // teacher-forced: positives {low, low, high}, negatives {high, low, high, low}
        assert!((get("multistep_teacher_forced_auc") - 5.0 / 12.0).abs() < 1e-12);
    }
    // the horizon and the window cap are honoured
    let r = multi_step(
        &m,
        &seqs,
        &windows,
        MultiStepConfig {
            windows: 1,
            horizon: 2,
        },
        8,
    );
    assert_eq!((r.windows, r.labels.len()), (1, 2));
}

/// Bayesian knowledge tracing with known parameters per skill: (initial mastery, learning,
/// guess, slip).
const BKT: [(f64, f64, f64, f64); 4] = [
    (0.2, 0.15, 0.2, 0.1),
    (0.5, 0.05, 0.25, 0.15),
    (0.1, 0.3, 0.15, 0.05),
    (0.35, 0.1, 0.3, 0.1),
];

/// Students simulated by BKT (skills 1..=4 at random), with the oracle's prediction of each
/// answer from the answers before it.
fn bkt_students(n: usize, len: usize, rng: &mut StdRng) -> (Vec<KtSequence>, Vec<Vec<f32>>) {
    let (mut seqs, mut oracle) = (Vec::new(), Vec::new());
    for _ in 0..n {
        let mut knows: Vec<bool> = BKT.iter().map(|p| rng.gen::<f64>() < p.0).collect();
        let mut belief: Vec<f64> = BKT.iter().map(|p| p.0).collect();
        let (mut s, mut o) = (KtSequence::default(), Vec::new());
        for _ in 0..len {
            let k = rng.gen_range(0..BKT.len());
            let (_, learn, guess, slip) = BKT[k];
            let p_right = if knows[k] { 1.0 - slip } else { guess };
            let r = rng.gen::<f64>() < p_right;
            // the oracle: P(right) from the belief, then Bayes and the learning step
            let b = belief[k];
            let pred = b * (1.0 - slip) + (1.0 - b) * guess;
            o.push(pred as f32);
            let post = if r {
                b * (1.0 - slip) / pred
            } else {
                b * slip / (1.0 - pred)
            };
            belief[k] = post + (1.0 - post) * learn;
            if !knows[k] {
                knows[k] = rng.gen::<f64>() < learn;
            }
            s.push(0, &[k as u32 + 1], u8::from(r));
        }
        seqs.push(s);
        oracle.push(o);
    }
    (seqs, oracle)
}

#[test]
fn dkt_on_bkt_students_comes_within_a_hundredth_of_the_oracle_auc() {
    let mut rng = StdRng::seed_from_u64(17);
    let (train, _) = bkt_students(1500, 50, &mut rng);
    let (valid, _) = bkt_students(200, 50, &mut rng);
    let (test, oracle) = bkt_students(600, 50, &mut rng);
    // the oracle scores every position but each student's first, as the models do
    let labels: Vec<f32> = test
        .iter()
        .flat_map(|s| s.responses[1..].iter().map(|&r| r as f32))
        .collect();
    let oracle: Vec<f32> = oracle.iter().flat_map(|o| o[1..].to_vec()).collect();
    let oracle_auc = recforge_metrics::auc(&labels, &oracle).unwrap();

    let data = KtData {
        train,
        valid,
        test,
        num_concepts: BKT.len() + 1,
        num_problems: 0,
    };
    let shape = KtShape {
        num_concepts: data.num_concepts,
        num_problems: 0,
        max_seq_len: 200,
    };
    let mcfg = ModelConfig::new(
        "DKT_bkt",
        [
            ("model", "DKT".into()),
            ("emb_size", 32.into()),
            ("dropout", 0.1.into()),
            ("batch_size", 32.into()),
            ("learning_rate", 0.005.into()),
            ("multistep_windows", 100.into()),
        ]
        .into_iter()
        .map(|(k, v): (&str, Value)| (k.to_string(), v))
        .collect(),
    );
    let cfg = KtTrainConfig::from_config(&mcfg).unwrap();
    let model = kt::build(&mcfg, shape).unwrap();
    let dataset: recforge_data::kt::KtDatasetConfig = serde_json::from_value(serde_json::json!({
        "task": "kt", "data_format": "three_line", "train_data": "train.txt", "test_data": "test.txt"
    }))
    .unwrap();
    let mut task = KtTask::new(model, &data, &dataset, shape, cfg, &mcfg).unwrap();
    let mut best = (0.0, 0);
    for epoch in 1..=12 {
        task.train_epoch(epoch, 0.005, &mut Silent).unwrap();
        let v = task.evaluate(Split::Valid).unwrap().unwrap();
        let auc = v.get("auc").unwrap();
        if auc > best.0 {
            best = (auc, epoch);
        } else if epoch - best.1 >= 3 {
            break;
        }
    }
    let t = task.evaluate(Split::Test).unwrap().unwrap();
    let auc = t.get("auc").unwrap();
    assert!(
        (auc - oracle_auc).abs() < 0.01,
        "DKT test AUC {auc:.4} vs the BKT oracle's {oracle_auc:.4}"
    );
    // the multi-step metrics come with every test evaluation
    assert!(t.get("multistep_auc").is_some() && t.get("multistep_auc@1").is_some());
}

#[test]
fn free_run_on_a_copy_last_oracle_gives_the_hand_computed_auc() {
    // Free-running, copy-last repeats each window's first response forever: windows 1 and 3
    // start right ("high" on labels [0 1 1 0 0 1 0] and [1 0]), window 2 wrong ("low" on
    // [1 0 0 1 1]). Positives 7, negatives 7: high-vs-low wins 4·2 = 8, ties 4·5 + 3·2 = 26.
    let seqs = [
        seq(&[1, 0, 1, 1, 0, 0, 1, 0]),
        seq(&[0, 1, 0, 0, 1, 1]),
        seq(&[1, 1, 0]),
    ];
    let windows = windows(&seqs, 200);
    let m = CopyLast(ParamStore::new());
    for block in [1, 2, 64] {
        let r = free_run(&m, &seqs, &windows, FreeRunConfig { windows: 10 }, block);
        assert_eq!((r.windows, r.labels.len()), (3, 14));
        let mt = r.metrics();
        assert!((mt.get("freerun_auc").unwrap() - 21.0 / 49.0).abs() < 1e-12);
        assert!((mt.get("freerun_acc").unwrap() - 6.0 / 14.0).abs() < 1e-12);
        // the guesses start at 0: windows 1 and 3 settle one position a pass and need one
        // more to see nothing change (8 and 3 passes), window 2 is at its answer at once
        assert_eq!(r.passes, 8 + 1 + 3);
    }
    let r = free_run(&m, &seqs, &windows, FreeRunConfig { windows: 1 }, 4);
    assert_eq!((r.windows, r.labels.len()), (1, 7));
    assert!(
        free_run(&m, &seqs, &windows, FreeRunConfig { windows: 0 }, 4)
            .metrics()
            .0
            .is_empty()
    );
}

/// The free-running predictions the slow way: position `j` from a pass over the window's
/// first `j + 1` tokens, the guesses before it fed back.
fn free_run_by_prefixes(model: &dyn KtModel, seqs: &[KtSequence], wins: &[KtWindow]) -> Vec<f32> {
    let mut out = Vec::new();
    for w in wins {
        let (seq, start, len) = (&seqs[w.student as usize], w.start as usize, w.len as usize);
        let mut responses = vec![seq.responses[start]];
        for j in 1..len {
            responses.push(0);
            let b = KtBatch::from_parts([(seq, start, j + 1, Some(&responses[..]))]);
            let p = *model.predict(&b).last().unwrap();
            out.push(p);
            *responses.last_mut().unwrap() = u8::from(p >= 0.5);
        }
    }
    out
}

#[test]
fn free_run_passes_give_exactly_the_sequential_predictions_of_every_model() {
    let mut rng = StdRng::seed_from_u64(5);
    let seqs: Vec<KtSequence> = (0..6)
        .map(|_| {
            let mut s = KtSequence::default();
            for _ in 0..rng.gen_range(2..40) {
                s.push(
                    rng.gen_range(1..6),
                    &[rng.gen_range(1..5)],
                    rng.gen_range(0..2),
                );
            }
            s
        })
        .collect();
    let wins = windows(&seqs, 16);
    let shape = KtShape {
        num_concepts: 5,
        num_problems: 6,
        max_seq_len: 16,
    };
    for name in kt::model_names() {
        let mcfg = ModelConfig::new(
            "free_run",
            [
                ("model", name.into()),
                ("emb_size", 8.into()),
                ("d_model", 8.into()),
                ("dim", 8.into()),
                ("dim_s", 8.into()),
                ("size_m", 4.into()),
                ("num_attn_heads", 2.into()),
                ("n_blocks", 1.into()),
                ("num_en", 1.into()),
                ("d_ff", 8.into()),
                ("final_fc_dim", 8.into()),
            ]
            .into_iter()
            .filter(|(k, _)| *k == "model" || kt::model_keys(name).unwrap().contains(k))
            .map(|(k, v): (&str, Value)| (k.to_string(), v))
            .collect(),
        );
        let model = kt::build(&mcfg, shape).unwrap();
        let want = free_run_by_prefixes(model.as_ref(), &seqs, &wins);
        let got = free_run(
            model.as_ref(),
            &seqs,
            &wins,
            FreeRunConfig { windows: 99 },
            3,
        );
        assert_eq!(got.probs.len(), want.len(), "{name}");
        for (a, b) in got.probs.iter().zip(&want) {
            assert!((a - b).abs() < 1e-5, "{name}: {a} vs {b}");
        }
        let naive: usize = wins.iter().map(|w| w.len as usize - 1).sum();
        eprintln!(
            "{name}: {} passes over a window, {naive} prefix passes",
            got.passes
        );
    }
}

#[test]
fn the_monitor_is_one_of_the_validation_metrics_a_run_computes() {
    let with = |m: &str| {
        ModelConfig::new(
            "DKT_x",
            [("model", "DKT".into()), ("monitor", m.into())]
                .into_iter()
                .map(|(k, v): (&str, Value)| (k.to_string(), v))
                .collect(),
        )
    };
    for m in KT_MONITORS {
        let cfg = KtTrainConfig::from_config(&with(m)).unwrap();
        assert_eq!(cfg.fit_config().monitor.describe(), *m);
    }
    let err = KtTrainConfig::from_config(&with("ndcg@10")).unwrap_err();
    assert!(err.to_string().contains("monitor `ndcg@10`"), "{err}");
}
