//! The binary as a user runs it, on generated data.

mod common;

use common::{generate, recforge, train_small};

fn number_after(text: &str, line_start: &str, key: &str) -> f64 {
    let line = text
        .lines()
        .find(|l| l.starts_with(line_start))
        .unwrap_or_else(|| panic!("no `{line_start}` line in {text}"));
    let rest = &line[line.find(key).unwrap() + key.len()..];
    rest.split_whitespace().next().unwrap().parse().unwrap()
}

#[test]
fn generate_train_predict_evaluate_agree() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let out = generate(d, 20000, 6, 50);
    assert!(out.contains("Bayes-optimal test AUC"), "{out}");
    let (ok, out, err) = recforge(
        &[
            "--threads",
            "2",
            "train",
            "--config",
            "gen",
            "--expid",
            "DeepFM_synthetic",
            "--set",
            "epochs=2",
            "--set",
            "hidden_units=[16,16]",
        ],
        d,
    );
    assert!(ok, "{err}");
    assert!(err.contains("valid_auc"), "epoch table missing: {err}");
    let test_auc = number_after(&out, "test", "AUC");
    assert!(test_auc > 0.6, "{out}");
    let run = d.join("gen/checkpoints/synthetic/DeepFM_synthetic");
    // evaluate prints the same AUC as training's test line
    let (ok, out_eval, err) = recforge(
        &[
            "evaluate",
            "--model",
            run.to_str().unwrap(),
            "--data",
            "gen/test.csv",
        ],
        d,
    );
    assert!(ok, "{err}");
    assert!(
        (number_after(&out_eval, "", "AUC") - test_auc).abs() < 1e-6,
        "{out_eval} vs {test_auc}"
    );
    // predict on the test rows without their label column gives the same scores' AUC
    let test = std::fs::read_to_string(d.join("gen/test.csv")).unwrap();
    let labels: Vec<f32> = test
        .lines()
        .skip(1)
        .map(|l| l.split(',').next().unwrap().parse().unwrap())
        .collect();
    let unlabelled: String = test
        .lines()
        .map(|l| l.split_once(',').unwrap().1.to_string() + "\n")
        .collect();
    std::fs::write(d.join("nolabel.csv"), unlabelled).unwrap();
    let (ok, _, err) = recforge(
        &[
            "predict",
            "--model",
            run.to_str().unwrap(),
            "--input",
            "nolabel.csv",
            "--output",
            "scores.csv",
        ],
        d,
    );
    assert!(ok, "{err}");
    let scores: Vec<f32> = std::fs::read_to_string(d.join("scores.csv"))
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| l.split_once(',').unwrap().1.parse().unwrap())
        .collect();
    assert_eq!(scores.len(), labels.len());
    let auc = recforge_metrics_auc(&labels, &scores);
    assert!(
        (auc - test_auc).abs() < 1e-6,
        "predict AUC {auc} vs train {test_auc}"
    );
}

/// Pairwise AUC, written independently of the library's rank-based one.
fn recforge_metrics_auc(labels: &[f32], scores: &[f32]) -> f64 {
    let pos: Vec<f32> = labels
        .iter()
        .zip(scores)
        .filter(|(l, _)| **l > 0.5)
        .map(|(_, s)| *s)
        .collect();
    let neg: Vec<f32> = labels
        .iter()
        .zip(scores)
        .filter(|(l, _)| **l <= 0.5)
        .map(|(_, s)| *s)
        .collect();
    let mut wins = 0.0;
    for p in &pos {
        for n in &neg {
            wins += if p > n {
                1.0
            } else if p == n {
                0.5
            } else {
                0.0
            };
        }
    }
    wins / (pos.len() * neg.len()) as f64
}

#[test]
fn bad_rows_fail_with_location_or_are_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    generate(d, 2000, 3, 20);
    let train = std::fs::read_to_string(d.join("gen/train.csv")).unwrap();
    let mut lines: Vec<&str> = train.lines().collect();
    lines[5] = "1,2";
    std::fs::write(d.join("gen/train.csv"), lines.join("\n") + "\n").unwrap();
    let (ok, _, err) = recforge(
        &[
            "train",
            "--config",
            "gen",
            "--expid",
            "LR_synthetic",
            "--set",
            "epochs=1",
        ],
        d,
    );
    assert!(!ok);
    assert!(
        err.contains("train.csv:6") && err.contains("expected 4 columns"),
        "{err}"
    );
    let (ok, _, err) = recforge(
        &[
            "train",
            "--config",
            "gen",
            "--expid",
            "LR_synthetic",
            "--set",
            "epochs=1",
            "--on-bad-row",
            "skip",
        ],
        d,
    );
    assert!(ok, "{err}");
    assert!(err.contains("skipped 1 malformed rows"), "{err}");
}

#[test]
fn unknown_experiment_lists_the_known_ones() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    generate(d, 1000, 2, 5);
    let (ok, _, err) = recforge(&["train", "--config", "gen", "--expid", "Nope"], d);
    assert!(!ok);
    assert!(
        err.contains("Nope") && err.contains("DeepFM_synthetic"),
        "{err}"
    );
}

#[test]
fn pretrain_then_finetune_from_the_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    generate(d, 6000, 5, 40);
    for method in ["mfp", "rfd"] {
        let out = format!("pt_{method}");
        let (ok, stdout, err) = recforge(
            &[
                "--threads",
                "2",
                "pretrain",
                "--config",
                "gen",
                "--expid",
                "DeepFM_synthetic",
                "--method",
                method,
                "--set",
                "pt_epochs=2",
                "--set",
                "hidden_units=[16,16]",
                "--out",
                &out,
            ],
            d,
        );
        assert!(ok, "{err}");
        // the progress table has a row for the second epoch
        assert!(
            err.lines()
                .any(|l| l.split_whitespace().next() == Some("2")),
            "{err}"
        );
        assert!(stdout.contains("pretrained checkpoint"), "{stdout}");
        let run = format!("ft_{method}");
        let (ok, out_train, err) = train_small(
            d,
            &[
                "--set",
                "label_fraction=0.5",
                "--init-from",
                &out,
                "--run-dir",
                &run,
            ],
        );
        assert!(ok, "{err}");
        assert!(
            err.contains("initialised") && err.contains("click head fresh"),
            "{err}"
        );
        assert!(err.contains("training on 2400 labelled rows"), "{err}");
        assert!(number_after(&out_train, "test", "AUC") > 0.5, "{out_train}");
    }
    // a model without an encoder cannot be pretrained, and says so
    let (ok, _, err) = recforge(
        &[
            "pretrain",
            "--config",
            "gen",
            "--expid",
            "LR_synthetic",
            "--method",
            "mfp",
        ],
        d,
    );
    assert!(!ok && err.contains("no encoder"), "{err}");
    // a checkpoint from another dataset is refused, naming the field
    generate(d, 3000, 5, 12);
    let (ok, _, err) = recforge(
        &[
            "train",
            "--config",
            "gen",
            "--expid",
            "DeepFM_synthetic",
            "--set",
            "epochs=1",
            "--set",
            "hidden_units=[16,16]",
            "--rebuild-cache",
            "--init-from",
            "pt_mfp",
        ],
        d,
    );
    assert!(
        !ok && err.contains("does not match the pretrained"),
        "{err}"
    );
}

/// The README's first command, as a newcomer runs it: DeepFM within 0.01 of the Bayes-optimal
/// AUC, and above LR on the same rows.
#[test]
fn quickstart_comes_within_a_hundredth_of_the_bayes_optimum() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, out, err) = recforge(&["--threads", "2", "quickstart"], dir.path());
    assert!(ok, "{err}");
    let deepfm = number_after(&out, "test", "AUC");
    let lr = number_after(&out, "LR test", "AUC");
    let bayes = number_after(&out, "Bayes-optimal", "AUC");
    assert!(deepfm > bayes - 0.01 && deepfm <= bayes + 0.002, "{out}");
    assert!(deepfm > lr + 0.03, "{out}");
}
