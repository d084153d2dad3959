//! Knowledge tracing through the binary: DKT, SAKT, DKVMN and AKT trained from pyKT-style configs on
//! simulated students whose answers follow from what they mastered, `--metrics-json` with the
//! multi-step metrics, `recforge evaluate` on a file, both line formats, bad input, and
//! serving (`/v1/kt/*` and the MCP tool `diagnose_student`).

mod common;

use common::{post_json as post, recforge, start_server, train_experiment};
use serde_json::{json, Value};
use std::path::Path;

/// Students over 6 concepts: each masters a random subset and answers a question on a mastered
/// concept right (else wrong), with 5% slips either way. A student's earlier answers on a
/// concept predict the next one; the base rate alone does not.
fn students(n: usize, seed: u64, four_line: bool) -> String {
    let mut state = seed;
    let mut next = move || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        state >> 33
    };
    let mut text = String::new();
    for _ in 0..n {
        let mastered = next() % 64;
        let len = 20 + (next() % 30) as usize;
        let (mut qs, mut rs) = (Vec::new(), Vec::new());
        for _ in 0..len {
            let c = 1 + next() % 6;
            let right = (mastered >> (c - 1)) & 1 == 1;
            let slip = next() % 100 < 5;
            qs.push(c.to_string());
            rs.push(if right != slip { "1" } else { "0" });
        }
        text += &format!("{len}\n");
        if four_line {
            // problem ids: one per attempt
            let ps: Vec<String> = (0..len).map(|t| (1 + t % 40).to_string()).collect();
            text += &format!("{}\n", ps.join(","));
        }
        text += &format!("{}\n{}\n", qs.join(","), rs.join(","));
    }
    text
}

fn write_data(d: &Path) {
    std::fs::create_dir_all(d.join("data")).unwrap();
    for (name, n, seed) in [("train", 240, 1), ("valid", 60, 2), ("test", 60, 3)] {
        std::fs::write(d.join(format!("data/{name}.txt")), students(n, seed, false)).unwrap();
        std::fs::write(d.join(format!("data/{name}4.txt")), students(n, seed, true)).unwrap();
    }
    std::fs::create_dir_all(d.join("cfg")).unwrap();
    std::fs::write(
        d.join("cfg/dataset_config.yaml"),
        r#"
mastery:
    task: kt
    data_format: three_line
    data_root: ./data
    train_data: train.txt
    valid_data: valid.txt
    test_data: test.txt
    max_seq_len: 30
mastery4:
    task: kt
    data_format: four_line
    data_root: ./data
    train_data: [train4.txt, valid4.txt]
    valid_every: 5
    test_data: test4.txt
    form: collapsed
    max_seq_len: 30
"#,
    )
    .unwrap();
    std::fs::write(
        d.join("cfg/model_config.yaml"),
        r#"
Base:
    learning_rate: 0.01
    batch_size: 32
    num_epochs: 25
    early_stop_patience: 3
    multistep_windows: 50
    multistep_horizon: 4
    seed: 5
DKT_mastery: {model: DKT, dataset_id: mastery, emb_size: 32, dropout: 0.1}
SAKT_mastery: {model: SAKT, dataset_id: mastery, emb_size: 32, num_attn_heads: 2, num_en: 1, dropout: 0.1}
DKT_mastery4: {model: DKT, dataset_id: mastery4, emb_size: 32, dropout: 0.1}
AdvKT_mastery: {model: AdvKT, dataset_id: mastery, dim: 16, batch_size: 32, num_epochs: 12, monitor: multistep_auc, walk_min_len: 20, walk_max_len: 30, short_questions: 6}
AdvKT_mastery4: {model: AdvKT, dataset_id: mastery4, dim: 16, batch_size: 32, num_epochs: 12, walk_min_len: 20, walk_max_len: 30, short_questions: 40}
DKVMN_mastery: {model: DKVMN, dataset_id: mastery, dim_s: 32, size_m: 8, dropout: 0.1}
AKT_mastery: {model: AKT, dataset_id: mastery, d_model: 16, d_ff: 16, num_attn_heads: 2, n_blocks: 1, final_fc_dim: 16, dropout: 0.05}
AKT_mastery4: {model: AKT, dataset_id: mastery4, d_model: 16, d_ff: 16, num_attn_heads: 2, n_blocks: 1, final_fc_dim: 16, dropout: 0.05}
"#,
    )
    .unwrap();
}

#[test]
fn dkt_sakt_dkvmn_and_akt_learn_mastery_and_report_next_and_multi_step_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_data(d);
    for (model, suffix) in [
        ("DKT", "mastery"),
        ("SAKT", "mastery"),
        ("DKT", "mastery4"),
        ("DKVMN", "mastery"),
        ("AKT", "mastery"),
        // with problem ids: the Rasch term
        ("AKT", "mastery4"),
    ] {
        let (out, m) = train_experiment(d, model, suffix, &[]);
        assert!(out.contains("test  auc"), "{out}");
        let test = m["test"].as_object().unwrap();
        for key in [
            "auc",
            "acc",
            "multistep_auc",
            "multistep_acc",
            "multistep_auc@1",
            "multistep_auc@4",
            "multistep_teacher_forced_auc",
            "freerun_auc",
            "freerun_acc",
        ] {
            assert!(test.contains_key(key), "{model}_{suffix}: no {key} in {m}");
        }
        assert!(m["valid"]["auc"].is_number(), "{m}");
        // the Bayes rule's AUC is about 0.9 once a concept has been seen; chance is 0.5
        let auc = test["auc"].as_f64().unwrap();
        assert!(auc > 0.8, "{model}_{suffix}: {m}");
        // with 5% slips, feeding back its own thresholded guesses costs little here
        let ms = test["multistep_auc"].as_f64().unwrap();
        assert!(ms > 0.7, "{model}_{suffix}: {m}");
    }
}

#[test]
fn evaluate_on_the_test_file_reproduces_the_test_metrics_and_names_bad_lines() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_data(d);
    let (_, trained) = train_experiment(d, "DKT", "mastery", &[]);
    let (ok, out, err) = recforge(
        &[
            "evaluate",
            "--model",
            "runs/DKT",
            "--data",
            "data/test.txt",
            "--metrics-json",
            "e.json",
        ],
        d,
    );
    assert!(ok, "{err}");
    assert!(out.starts_with("60 students"), "{out}");
    let m: Value = serde_json::from_slice(&std::fs::read(d.join("e.json")).unwrap()).unwrap();
    assert_eq!(m["test"], trained["test"]);
    // a response that is not 0/1 is named by file, line and field; under skip it is counted
    let mut text = students(4, 9, false);
    text = text.replacen(",0\n", ",7\n", 1);
    std::fs::write(d.join("bad.txt"), &text).unwrap();
    let args = ["evaluate", "--model", "runs/DKT", "--data", "bad.txt"];
    let (ok, _, err) = recforge(&args, d);
    assert!(!ok && err.contains("bad.txt:"), "{err}");
    let mut skip = args.to_vec();
    skip.extend(["--on-bad-row", "skip"]);
    let (ok, out, err) = recforge(&skip, d);
    assert!(ok, "{err}");
    assert!(
        out.starts_with("3 students") && err.contains("1 skipped"),
        "{out} {err}"
    );
    // a concept beyond the model's table is an error, not a panic
    std::fs::write(d.join("wide.txt"), "2\n1,99\n1,0\n").unwrap();
    let (ok, _, err) = recforge(
        &["evaluate", "--model", "runs/DKT", "--data", "wide.txt"],
        d,
    );
    assert!(!ok && err.contains("concept 99"), "{err}");
    // an unknown key is an error naming it
    let (ok, _, err) = recforge(
        &[
            "train",
            "--config",
            "cfg",
            "--expid",
            "SAKT_mastery",
            "--set",
            "num_head=2",
        ],
        d,
    );
    assert!(!ok && err.contains("num_head"), "{err}");
}

/// `n` answers on concept `c`, all right or all wrong.
fn answers(c: u32, correct: bool, n: usize) -> Vec<Value> {
    (0..n)
        .map(|_| json!({"concepts": [c], "correct": correct}))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serving_predicts_recommends_and_diagnoses_from_a_students_answers() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_data(d);
    train_experiment(d, "DKT", "mastery", &[]);
    let server = start_server(d, Path::new("runs/DKT"), &[]);
    let c = reqwest::Client::new();
    let url = |p: &str| format!("{}{p}", server.base);

    // concept 1 answered right five times, concept 2 wrong five times: the simulated
    // student has mastered 1 and not 2
    let mut history = answers(1, true, 5);
    history.extend(answers(2, false, 5));
    let questions = json!([{"concepts": [1]}, {"concepts": [2]}]);
    let (s, r) = post(
        &c,
        url("/v1/kt/predict"),
        json!({"history": history, "questions": questions}),
    )
    .await;
    assert_eq!(s, 200, "{r}");
    let p: Vec<f64> = r["predictions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    assert!(p[0] > 0.7 && p[1] < 0.3, "{r}");

    // every concept's mastery, and the same numbers as predict
    let (s, r) = post(&c, url("/v1/kt/diagnose"), json!({"history": history})).await;
    assert_eq!(s, 200, "{r}");
    let concepts = r["concepts"].as_array().unwrap();
    assert_eq!(concepts.len(), 6, "{r}");
    assert_eq!(concepts[0]["concept"], 1);
    let mastery = |k: usize| concepts[k]["mastery"].as_f64().unwrap();
    assert!((mastery(0) - p[0]).abs() < 1e-6 && (mastery(1) - p[1]).abs() < 1e-6);

    // recommend: nearest the target first, over every concept by default
    let (s, r) = post(
        &c,
        url("/v1/kt/recommend"),
        json!({"history": history, "target": 0.5, "top_k": 6}),
    )
    .await;
    assert_eq!(s, 200, "{r}");
    let gaps: Vec<f64> = r["questions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| (q["success"].as_f64().unwrap() - 0.5).abs())
        .collect();
    assert_eq!(gaps.len(), 6);
    assert!(gaps.windows(2).all(|w| w[0] <= w[1]), "{r}");
    let (_, r) = post(
        &c,
        url("/v1/kt/recommend"),
        json!({"history": history, "questions": questions, "target": 0.9, "top_k": 1}),
    )
    .await;
    assert_eq!(r["questions"][0]["question"]["concepts"], json!([1]), "{r}");

    // bad requests name their field
    for (route, body, field) in [
        (
            "/v1/kt/predict",
            json!({"history": [], "questions": questions}),
            "history",
        ),
        (
            "/v1/kt/predict",
            json!({"history": history, "questions": [{"concepts": [7]}]}),
            "questions[0].concepts[0]",
        ),
        (
            "/v1/kt/predict",
            json!({"history": [{"concepts": [1], "problem": 3, "correct": true}],
                   "questions": questions}),
            "history[0].problem",
        ),
        (
            "/v1/kt/recommend",
            json!({"history": history, "target": 1.5}),
            "target",
        ),
        (
            "/v1/kt/diagnose",
            json!({"history": [{"concepts": [], "correct": true}]}),
            "history[0].concepts",
        ),
    ] {
        let (s, r) = post(&c, url(route), body.clone()).await;
        assert_eq!(
            (s, r["field"].as_str()),
            (422, Some(field)),
            "{route} {body} → {r}"
        );
    }
    let (s, r) = post(&c, url("/v1/predict"), json!({"instances": [{}]})).await;
    assert_eq!(s, 422);
    assert!(
        r["error"].as_str().unwrap().contains("knowledge-tracing"),
        "{r}"
    );
    let get = |p: &str| {
        let c = c.clone();
        let u = url(p);
        async move {
            c.get(u)
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        }
    };
    assert_eq!(get("/v1/models").await["models"][0]["family"], "kt");
    let api = get("/openapi.json").await;
    for route in ["/v1/kt/predict", "/v1/kt/recommend", "/v1/kt/diagnose"] {
        assert!(
            api["paths"][route]["post"].is_object(),
            "{route} not in the OpenAPI document"
        );
    }

    // MCP: diagnose_student appears for a KT model, and agrees with the route
    use rmcp::model::CallToolRequestParams;
    use rmcp::ServiceExt;
    let transport = rmcp::transport::StreamableHttpClientTransport::from_uri(url("/mcp"));
    let client = ().serve(transport).await.unwrap();
    let tools = client.list_all_tools().await.unwrap();
    let names: Vec<&str> = tools.iter().map(|t| t.name.as_ref()).collect();
    assert_eq!(names, ["model_info", "diagnose_student"]);
    let args = json!({"history": history}).as_object().unwrap().clone();
    let r = client
        .call_tool(CallToolRequestParams::new("diagnose_student").with_arguments(args))
        .await
        .unwrap();
    let got = r.structured_content.unwrap();
    assert!(
        (got["concepts"][0]["mastery"].as_f64().unwrap() - p[0]).abs() < 1e-6,
        "{got}"
    );
    client.cancel().await.unwrap();
}

#[test]
fn advkt_trains_adversarially_reports_every_metric_and_a_seeded_rerun_is_identical() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_data(d);
    for suffix in ["mastery", "mastery4"] {
        let (out, m) = train_experiment(d, "AdvKT", suffix, &[]);
        assert!(out.contains("test  auc"), "{out}");
        let test = m["test"].as_object().unwrap();
        for key in [
            "auc",
            "acc",
            "multistep_auc",
            "multistep_teacher_forced_auc",
            "freerun_auc",
        ] {
            let v = test[key].as_f64().unwrap_or(f64::NAN);
            assert!((0.0..=1.0).contains(&v), "AdvKT_{suffix}: {key} in {m}");
        }
        if suffix == "mastery" {
            // the epoch was picked on the validation multi-step AUC, so validation has it
            assert!(m["valid"]["multistep_auc"].is_number(), "{m}");
            // rollouts, walks, augmentations and both optimizers are all seeded
            let (_, again) = train_experiment(d, "AdvKT", suffix, &[]);
            assert_eq!(m, again);
        }
    }
}
