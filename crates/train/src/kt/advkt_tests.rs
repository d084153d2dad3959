use super::*;
use rand::SeedableRng;

fn student(items: &[(u32, u32, u8)]) -> KtSequence {
    let mut s = KtSequence::default();
    for &(p, c, r) in items {
        s.push(p, &[c], r);
    }
    s
}

fn config() -> AdversarialConfig {
    let cfg = ModelConfig::new("AdvKT_test", serde_json::Map::new());
    AdversarialConfig::from_config(&cfg).unwrap()
}

#[test]
fn gae_sums_discounted_td_errors_as_by_hand() {
    // A_2 = 1; A_1 = −2 + 0.5·1 = −1.5; A_0 = 0.5 + 0.5·(−1.5) = −0.25
    assert_eq!(gae(&[0.5, -2.0, 1.0], 0.5), vec![-0.25, -1.5, 1.0]);
    assert!(gae(&[], 0.9).is_empty());
}

/// Problem p has concept p % 3 + 1; problem 1 is always right, 2 half, 3 always wrong.
fn tables() -> (Vec<KtSequence>, QuestionTables) {
    let train = vec![
        student(&[(1, 2, 1), (2, 3, 1), (3, 1, 0), (1, 2, 1)]),
        student(&[(2, 3, 0), (3, 1, 0), (1, 2, 1)]),
    ];
    let t = QuestionTables::new(&train, 4, true);
    (train, t)
}

#[test]
fn tables_rank_questions_by_training_accuracy_and_walk_observed_transitions() {
    let (_, t) = tables();
    assert_eq!(t.by_accuracy, vec![3, 2, 1]);
    assert_eq!(t.concepts[2], vec![3]);
    let mut rng = StdRng::seed_from_u64(1);
    for _ in 0..20 {
        let w = t.walk(6, &mut rng);
        assert_eq!(w.len(), 6);
        for k in 1..6 {
            let (a, b) = (w.problems[k - 1], w.problems[k]);
            // 1 → 2, 2 → 3, 3 → 1 are the only transitions training shows
            assert_eq!(b, a % 3 + 1, "walk {:?}", w.problems);
            assert_eq!(w.concepts_of(k), t.concepts[b as usize].as_slice());
        }
    }
    // a correct answer is replaced by a question at least as easy, a wrong one by one at least as hard
    for _ in 0..20 {
        assert!([2, 1].contains(&t.replacement(2, true, &mut rng)));
        assert!([3, 2].contains(&t.replacement(2, false, &mut rng)));
        assert_eq!(t.replacement(1, true, &mut rng), 1);
    }
}

#[test]
fn augmentations_keep_what_each_promises() {
    let (train, t) = tables();
    let cfg = config();
    let aug = Augment {
        tables: &t,
        cfg: &cfg,
        mask_question: 4,
        mask_concept: 9,
    };
    let s = student(&[
        (1, 2, 1),
        (2, 3, 0),
        (3, 1, 0),
        (1, 2, 1),
        (2, 3, 1),
        (3, 1, 1),
        (1, 2, 0),
        (2, 3, 1),
        (3, 1, 0),
        (1, 2, 1),
    ]);
    let mut rng = StdRng::seed_from_u64(2);
    let mut masked = 0;
    for _ in 0..50 {
        let m = aug.mask(&s, &mut rng);
        assert_eq!(m.responses, s.responses);
        for k in 0..s.len() {
            if m.problems[k] == 4 {
                assert_eq!(m.concepts_of(k), &[9]);
                masked += 1;
            } else {
                assert_eq!(m.problems[k], s.problems[k]);
            }
        }
    }
    // p = 0.6 over 500 interactions
    assert!((250..350).contains(&masked), "{masked}");
    let c = aug.crop(&s, &mut rng);
    assert!(c.len() <= 6 && !c.is_empty());
    let start = (0..s.len()).find(|&i| s.slice(i, c.len()) == c);
    assert!(start.is_some(), "a crop is a contiguous slice");
    for _ in 0..20 {
        let p = aug.permute(&s, &mut rng);
        let mut a: Vec<_> = (0..s.len())
            .map(|k| (s.problems[k], s.responses[k]))
            .collect();
        let mut b: Vec<_> = (0..s.len())
            .map(|k| (p.problems[k], p.responses[k]))
            .collect();
        // the last interaction never moves (the span ends before it)
        assert_eq!(a.last(), b.last());
        a.sort();
        b.sort();
        assert_eq!(a, b, "a permutation of the same interactions");
        let r = aug.replace(&s, &mut rng);
        assert_eq!(r.responses, s.responses);
    }
    drop(train);
}
