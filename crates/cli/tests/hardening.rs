//! What a careless or hostile user does to `recforge train` and `predict`: every mistake is an
//! error naming what is wrong, never a silently ignored setting or a shifted output.

mod common;

use common::{generate, recforge, train_small};

#[test]
fn config_mistakes_are_errors_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    generate(d, 600, 3, 10);
    for (set, expected) in [
        ("epochz=3", "unknown key `epochz` (did you mean `epochs`?)"),
        ("hiden_units=[8]", "did you mean `hidden_units`?"),
        ("loss=mse", "loss \"mse\" is not supported"),
        ("metrics=[\"RMSE\"]", "`RMSE` is not a CTR metric"),
        (
            "learning_rate=-0.1",
            "`learning_rate` should be a positive number",
        ),
        (
            "learning_rate=1e-50",
            "a positive number that fits a 32-bit float",
        ),
        (
            "pt_learning_rate=1e60",
            "a positive number that fits a 32-bit float",
        ),
        (
            "monitor={\"AUC\": \"one\"}",
            "the weight of `AUC` should be a number",
        ),
        ("group_id=nope", "group_id `nope` is not a field"),
        (
            "embedding_dim=0",
            "`embedding_dim` should be a positive integer",
        ),
        (
            "hidden_units=[0]",
            "`hidden_units`: every layer needs at least one unit",
        ),
        (
            "net_regularizer=-1",
            "`net_regularizer` should be a non-negative number",
        ),
        (
            "embedding_regularizer=1e60",
            "a non-negative number that fits a 32-bit float",
        ),
        ("epochs=0", "`epochs` should be a positive integer"),
    ] {
        let (ok, _, err) = train_small(d, &["--set", set]);
        assert!(!ok, "--set {set} was accepted");
        assert!(err.contains(expected), "--set {set}: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
    // FuxiCTR's run settings that change nothing here: a warning, not an error
    let (ok, _, err) = train_small(d, &["--set", "num_workers=4"]);
    assert!(ok, "{err}");
    assert!(
        err.contains("warning: model config `DeepFM_synthetic`: `num_workers` is not used"),
        "{err}"
    );
}

#[test]
fn config_file_mistakes_are_errors_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    generate(d, 600, 3, 10);
    let model = std::fs::read_to_string(d.join("gen/model_config.yaml")).unwrap();
    let dataset = std::fs::read_to_string(d.join("gen/dataset_config.yaml")).unwrap();
    let cases = [
        // YAML's NaN has no JSON form: it must not fall back to the default
        (
            "model_config.yaml",
            model.replacen("learning_rate: 0.001", "learning_rate: .nan", 1),
            "`LR_synthetic.learning_rate` is not a finite number",
        ),
        (
            "dataset_config.yaml",
            dataset.replace("[f0, f1, f2]", "[f0, f1, f2, f1]"),
            "field `f1` is listed twice",
        ),
        (
            "dataset_config.yaml",
            dataset.replace(
                "min_categr_count: 1",
                "min_categr_count: 1\n    train_dat: x",
            ),
            "unknown field `train_dat`",
        ),
        (
            "dataset_config.yaml",
            dataset.replace("type: categorical}", "type: categorical, embedding_dim: 0}"),
            "embedding_dim must be positive",
        ),
    ];
    for (file, text, expected) in cases {
        let path = d.join("gen").join(file);
        let original = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, &text).unwrap();
        let (ok, _, err) = train_small(d, &[]);
        std::fs::write(&path, original).unwrap();
        assert!(!ok && err.contains(expected), "{file}: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
}

#[test]
fn predict_keeps_each_score_on_its_input_line_and_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    generate(d, 2000, 3, 20);
    let (ok, _, err) = train_small(d, &[]);
    assert!(ok, "{err}");
    let run = d.join("gen/checkpoints/synthetic/DeepFM_synthetic");
    let run = run.to_str().unwrap();
    let test = std::fs::read_to_string(d.join("gen/test.csv")).unwrap();
    let mut lines: Vec<String> = test.lines().take(11).map(str::to_string).collect();
    lines[4] = "1,a,NaN".into(); // line 5: wrong column count and a bad label
    std::fs::write(d.join("in.csv"), lines.join("\n") + "\n").unwrap();
    let (ok, _, err) = recforge(
        &[
            "predict",
            "--model",
            run,
            "--input",
            "in.csv",
            "--output",
            "out.csv",
            "--on-bad-row",
            "skip",
        ],
        d,
    );
    assert!(ok, "{err}");
    assert!(err.contains("10 rows read: 9 scored, 1 skipped"), "{err}");
    let out = std::fs::read_to_string(d.join("out.csv")).unwrap();
    let numbers: Vec<u64> = out
        .lines()
        .skip(1)
        .map(|l| l.split(',').next().unwrap().parse().unwrap())
        .collect();
    assert!(out.starts_with("line,score\n"), "{out}");
    assert_eq!(numbers, [2, 3, 4, 6, 7, 8, 9, 10, 11]);
    // each score equals the score of its row scored alone
    let (ok, alone, err) = recforge(&["predict", "--model", run, "--input", "gen/test.csv"], d);
    assert!(ok, "{err}");
    let alone: Vec<&str> = alone.lines().collect();
    for l in out.lines().skip(1) {
        let n: usize = l.split(',').next().unwrap().parse().unwrap();
        assert_eq!(alone[n - 1], l, "line {n}");
    }
    // a failing predict leaves neither the output nor its temporary file
    let (ok, _, err) = recforge(
        &[
            "predict", "--model", run, "--input", "in.csv", "--output", "fail.csv",
        ],
        d,
    );
    assert!(!ok && err.contains("in.csv:5"), "{err}");
    assert!(!d.join("fail.csv").exists() && !d.join("fail.csv.tmp").exists());
}
