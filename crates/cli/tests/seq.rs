//! Sequential recommendation through the binary: SASRec, GRU4Rec and DreamRec trained from RecBole-style
//! configs on planted sequences whose next item follows from the last one, `--metrics-json`,
//! both training modes, bad input, and serving (`/v1/recommend` from a user's sequence or a
//! history in order, MCP `recommend_items`).

mod common;

use common::{
    post_json as post, recforge, recommended_items as items, start_server, train_experiment,
};
use serde_json::{json, Value};
use std::path::Path;

/// 120 users over 20 items `i0..i19`: each walks the cycle i_k → i_(k+1 mod 20) from its own
/// start for 8 to 15 steps, so the next item is the last one plus one, whatever came before;
/// popularity is no better than 1 in 20.
fn write_data(d: &Path) {
    let mut text = String::new();
    let mut state = 99u64;
    for u in 0..120u32 {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let start = (state >> 33) % 20;
        let len = 8 + (state >> 40) % 8;
        text += &format!("u{u}");
        for t in 0..len {
            text += &format!(" i{}", (start + t) % 20);
        }
        text.push('\n');
    }
    std::fs::create_dir_all(d.join("data")).unwrap();
    std::fs::write(d.join("data/seqs.txt"), text).unwrap();
    std::fs::create_dir_all(d.join("cfg")).unwrap();
    std::fs::write(
        d.join("cfg/dataset_config.yaml"),
        "cycle:\n  task: seq\n  data_format: user_sequence\n  data_root: ./data\n  train_data: seqs.txt\n",
    )
    .unwrap();
    std::fs::write(
        d.join("cfg/model_config.yaml"),
        r#"
Base:
    dataset_id: cycle
    metrics: [Hit, NDCG, MRR]
    topk: [1, 5]
    valid_metric: hit@5
    learning_rate: 0.01
    seed: 3
    MAX_ITEM_LIST_LENGTH: 10
    train_batch_size: 64
    epochs: 30
    eval_step: 5
    stopping_step: 2
    use_gpu: false
SASRec_cycle: {model: SASRec, hidden_size: 16, inner_size: 32, n_heads: 2, n_layers: 1, hidden_dropout_prob: 0.1, attn_dropout_prob: 0.1}
GRU4Rec_cycle: {model: GRU4Rec, embedding_size: 16, hidden_size: 16, dropout_prob: 0.1}
DreamRec_cycle: {model: DreamRec, hidden_size: 16, inner_size: 32, n_heads: 2, n_layers: 1, hidden_dropout_prob: 0.1, attn_dropout_prob: 0.1, timesteps: 50, beta_sche: linear, w: 2.0, p: 0.1}
"#,
    )
    .unwrap();
}

fn train(d: &Path, model: &str, extra: &[&str]) -> Value {
    let (out, metrics) = train_experiment(d, model, "cycle", extra);
    assert!(out.contains("test  hit@1"), "{out}");
    metrics
}

#[test]
fn sasrec_gru4rec_and_dreamrec_learn_the_next_item_in_both_training_modes() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_data(d);
    for (model, extra) in [
        ("SASRec", vec![]),
        ("SASRec", vec!["--set", "train_mode=prefix"]),
        ("GRU4Rec", vec![]),
        ("DreamRec", vec![]),
        ("DreamRec", vec!["--set", "ce_weight=1.0"]),
    ] {
        let m = train(d, model, &extra);
        let names: Vec<&String> = m["test"].as_object().unwrap().keys().collect();
        assert_eq!(
            names,
            ["hit@1", "hit@5", "mrr@1", "mrr@5", "ndcg@1", "ndcg@5"],
            "{model}"
        );
        // chance is 1/20 for hit@1; the rule is learnable exactly
        let hit1 = m["test"]["hit@1"].as_f64().unwrap();
        assert!(hit1 > 0.8, "{model} {extra:?}: {m}");
    }
}

#[test]
fn bad_sequence_files_name_the_line_or_are_counted() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_data(d);
    let path = d.join("data/seqs.txt");
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.insert_str(0, "u0 i1 i2\n\n");
    std::fs::write(&path, text).unwrap();
    let args = [
        "train",
        "--config",
        "cfg",
        "--expid",
        "GRU4Rec_cycle",
        "--run-dir",
        "runs/bad",
        "--set",
        "epochs=1",
        "--set",
        "eval_step=1",
    ];
    let (ok, _, err) = recforge(&args, d);
    assert!(!ok);
    assert!(
        err.contains("seqs.txt:2") && err.contains("empty line"),
        "{err}"
    );
    let mut skip = args.to_vec();
    skip.extend(["--on-bad-row", "skip"]);
    let (ok, _, err) = recforge(&skip, d);
    assert!(ok, "{err}");
    // the empty line, and the user `u0` repeated on line 3; the first `u0` line has too few
    // items for leave-one-out and is left out (counted)
    assert!(err.contains("skipped 2 malformed lines"), "{err}");
    assert!(
        err.contains("(1 with fewer than 3 items left out)"),
        "{err}"
    );
    // an unknown key is an error naming it
    let (ok, _, err) = recforge(
        &[
            "train",
            "--config",
            "cfg",
            "--expid",
            "SASRec_cycle",
            "--set",
            "n_head=2",
        ],
        d,
    );
    assert!(!ok && err.contains("n_head"), "{err}");
}

#[test]
fn evaluate_on_the_sequence_file_reproduces_the_test_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_data(d);
    let trained = train(d, "GRU4Rec", &[]);
    // every user has ≥ 8 items, so the file's last items are exactly the test split
    let (ok, out, err) = recforge(
        &[
            "evaluate",
            "--model",
            "runs/GRU4Rec",
            "--data",
            "data/seqs.txt",
            "--metrics-json",
            "e.json",
        ],
        d,
    );
    assert!(ok, "{err}");
    assert!(out.starts_with("120 users"), "{out}");
    let m: Value = serde_json::from_slice(&std::fs::read(d.join("e.json")).unwrap()).unwrap();
    assert_eq!(m["test"], trained["test"]);
    // an item the model never saw is named by line
    std::fs::write(d.join("other.txt"), "a i1 i2 i3\nb i4 zz i6\nc i7\n").unwrap();
    let args = ["evaluate", "--model", "runs/GRU4Rec", "--data", "other.txt"];
    let (ok, _, err) = recforge(&args, d);
    assert!(
        !ok && err.contains("other.txt:2") && err.contains("`zz`"),
        "{err}"
    );
    let mut skip = args.to_vec();
    skip.extend(["--on-bad-row", "skip"]);
    let (ok, out, err) = recforge(&skip, d);
    assert!(ok, "{err}");
    // line 2 skipped, line 3 has nothing to rank
    assert!(
        out.starts_with("1 users") && err.contains("2 lines skipped"),
        "{out} {err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serving_continues_a_users_sequence_or_a_history_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_data(d);
    train(d, "SASRec", &[]);
    let server = start_server(d, Path::new("runs/SASRec"), &[]);
    let c = reqwest::Client::new();
    let url = |p: &str| format!("{}{p}", server.base);

    // the cycle continues after the history's last item, in the order sent
    let (s, r) = post(
        &c,
        url("/v1/recommend"),
        json!({"history": ["i3", "i4", "i5"], "top_k": 3}),
    )
    .await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(items(&r)[0], "i6", "{r}");
    let (_, r) = post(
        &c,
        url("/v1/recommend"),
        json!({"history": ["i12", "i13"], "top_k": 1}),
    )
    .await;
    assert_eq!(items(&r), ["i14"], "{r}");
    // a known user: after the whole sequence (u0's last item is its line's last token)
    let text = std::fs::read_to_string(d.join("data/seqs.txt")).unwrap();
    let u0: Vec<&str> = text.lines().next().unwrap().split(' ').skip(1).collect();
    let last: u32 = u0.last().unwrap()[1..].parse().unwrap();
    let (s, r) = post(
        &c,
        url("/v1/recommend"),
        json!({"user": "u0", "top_k": 1, "exclude_seen": false}),
    )
    .await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(items(&r), [format!("i{}", (last + 1) % 20)], "{r}");
    // seen items are left out by default
    let (_, r) = post(&c, url("/v1/recommend"), json!({"user": "u0", "top_k": 20})).await;
    let got = items(&r);
    assert!(got.iter().all(|i| !u0.contains(&i.as_str())), "{got:?}");
    assert_eq!(got.len(), 20 - u0.len().min(20));
    for (body, field) in [
        (json!({"user": "nobody"}), "user"),
        (json!({"history": ["i1", "zzz"]}), "history[1]"),
    ] {
        let (s, r) = post(&c, url("/v1/recommend"), body.clone()).await;
        assert_eq!((s, r["field"].as_str()), (422, Some(field)), "{body} → {r}");
    }
    let (s, r) = post(&c, url("/v1/predict"), json!({"instances": [{}]})).await;
    assert_eq!(s, 422);
    assert!(r["error"].as_str().unwrap().contains("sequential"), "{r}");
    let (s, _) = post(&c, url("/v1/similar_items"), json!({"item": "i1"})).await;
    assert_eq!(s, 422);
    let models: Value = c
        .get(url("/v1/models"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(models["models"][0]["family"], "seq");
    assert_eq!(models["models"][0]["items"], 20);

    // MCP: recommend_items only
    use rmcp::model::CallToolRequestParams;
    use rmcp::ServiceExt;
    let transport = rmcp::transport::StreamableHttpClientTransport::from_uri(url("/mcp"));
    let client = ().serve(transport).await.unwrap();
    let tools = client.list_all_tools().await.unwrap();
    let names: Vec<&str> = tools.iter().map(|t| t.name.as_ref()).collect();
    assert_eq!(names, ["model_info", "recommend_items"]);
    let args = json!({"history": ["i3", "i4", "i5"], "top_k": 1})
        .as_object()
        .unwrap()
        .clone();
    let r = client
        .call_tool(CallToolRequestParams::new("recommend_items").with_arguments(args))
        .await
        .unwrap();
    assert_eq!(items(&r.structured_content.unwrap()), ["i6"]);
    client.cancel().await.unwrap();
}
