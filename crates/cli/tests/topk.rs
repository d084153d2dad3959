//! Top-K recommendation through the binary: train every model from RecBole-style configs on a
//! planted two-community interaction log, `--metrics-json`, `evaluate` on a file, bad input,
//! and serving (`/v1/recommend`, `/v1/similar_items`, MCP `recommend_items`).

mod common;

use common::{
    post_json as post, recforge, recommended_items as items, start_server, train_experiment,
};
use serde_json::{json, Value};
use std::path::Path;

/// 80 users × 40 items in two communities: users `u0..u39` interact with items `i0..i19`,
/// the rest with `i20..i39`; each user has 12 items of their community (a deterministic
/// pseudo-random choice) plus item `i0` or `i39`, so the globally popular items are no
/// better than chance for half the users. Per user the last two items go to valid and test.
fn write_data(d: &Path) {
    let header = "user_id:token\titem_id:token\ttimestamp:float\n";
    let (mut train, mut valid, mut test) =
        (header.to_string(), header.to_string(), header.to_string());
    let mut state = 12345u64;
    for u in 0..80u32 {
        let base = if u < 40 { 0 } else { 20 };
        let mut items: Vec<u32> = Vec::new();
        while items.len() < 12 {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let i = base + ((state >> 33) % 20) as u32;
            if !items.contains(&i) {
                items.push(i);
            }
        }
        for (t, i) in items.iter().enumerate() {
            let line = format!("u{u}\ti{i}\t{t}\n");
            match t {
                10 => valid += &line,
                11 => test += &line,
                _ => train += &line,
            }
        }
        let popular = if u % 2 == 0 { 0 } else { 39 };
        if !items.contains(&popular) {
            train += &format!("u{u}\ti{popular}\t99\n");
        }
    }
    std::fs::create_dir_all(d.join("data")).unwrap();
    std::fs::write(d.join("data/train.inter"), train).unwrap();
    std::fs::write(d.join("data/valid.inter"), valid).unwrap();
    std::fs::write(d.join("data/test.inter"), test).unwrap();
    std::fs::create_dir_all(d.join("cfg")).unwrap();
    std::fs::write(
        d.join("cfg/dataset_config.yaml"),
        "toy:\n  task: topk\n  data_format: inter\n  data_root: ./data\n  train_data: train.inter\n  \
         valid_data: valid.inter\n  test_data: test.inter\n",
    )
    .unwrap();
    std::fs::write(
        d.join("cfg/model_config.yaml"),
        r#"
Base:
    dataset_id: toy
    metrics: [Recall, NDCG, Hit, MRR]
    topk: [5, 10]
    valid_metric: recall@10
    learning_rate: 0.01
    seed: 7
    use_gpu: false
Pop_toy: {model: Pop}
EASE_toy: {model: EASE, reg_weight: 10.0}
BPR_toy: {model: BPR, embedding_size: 16, train_batch_size: 64, epochs: 40, eval_step: 5, stopping_step: 3}
LightGCN_toy: {model: LightGCN, embedding_size: 16, n_layers: 2, train_batch_size: 64, epochs: 40, eval_step: 5, stopping_step: 3}
MultiVAE_toy: {model: MultiVAE, mlp_hidden_size: [32], latent_dimension: 16, train_batch_size: 16, epochs: 60, eval_step: 5, stopping_step: 3, total_anneal_steps: 0}
DiffRec_toy: {model: DiffRec, steps: 10, noise_schedule: linear-var, noise_scale: 0.1, noise_min: 0.01, noise_max: 0.1, dims_dnn: [32], train_batch_size: 16, epochs: 60, eval_step: 5, stopping_step: 3}
LDiffRec_toy: {model: LDiffRec, n_cate: 2, item_emb_file: item_emb.npy, in_dims: [16], dims_dnn: [16], reparam: false, steps: 10, noise_schedule: linear-var, noise_scale: 0.1, noise_min: 0.01, noise_max: 0.1, train_batch_size: 16, epochs: 60, eval_step: 5, stopping_step: 3}
TDiffRec_toy: {model: DiffRec, time-aware: true, steps: 10, noise_schedule: linear-var, noise_scale: 0.1, noise_min: 0.01, noise_max: 0.1, dims_dnn: [32], train_batch_size: 16, epochs: 60, eval_step: 5, stopping_step: 3}
"#,
    )
    .unwrap();
}

fn train(d: &Path, model: &str, extra: &[&str]) -> Value {
    let (out, metrics) = train_experiment(d, model, "toy", extra);
    assert!(out.contains("test  recall@5"), "{out}");
    metrics
}

#[test]
fn every_model_trains_writes_metrics_json_and_beats_popularity_on_planted_communities() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_data(d);
    let mut recall = std::collections::HashMap::new();
    let models = [
        "Pop", "EASE", "BPR", "LightGCN", "MultiVAE", "DiffRec", "TDiffRec",
    ];
    for model in models {
        let m = train(d, model, &[]);
        for split in ["valid", "test"] {
            let names: Vec<&String> = m[split].as_object().unwrap().keys().collect();
            assert_eq!(
                names,
                [
                    "hit@10",
                    "hit@5",
                    "mrr@10",
                    "mrr@5",
                    "ndcg@10",
                    "ndcg@5",
                    "recall@10",
                    "recall@5"
                ],
                "{model} {split}"
            );
            for (k, v) in m[split].as_object().unwrap() {
                let v = v.as_f64().unwrap();
                assert!((0.0..=1.0).contains(&v), "{model} {split} {k} = {v}");
            }
        }
        recall.insert(model, m["test"]["recall@10"].as_f64().unwrap());
        // one held-out item per user: recall and hit agree
        assert_eq!(m["test"]["recall@10"], m["test"]["hit@10"]);
    }
    let pop = recall["Pop"];
    for model in &models[1..] {
        assert!(
            recall[model] > pop + 0.15,
            "{model} {} vs Pop {pop}",
            recall[model]
        );
    }
    // per-user values for paired comparisons
    let per_user = std::fs::read_to_string(d.join("runs/BPR/test_per_user.csv")).unwrap();
    assert!(
        per_user.starts_with("user,recall@5,recall@10,ndcg@5"),
        "{per_user}"
    );
    assert_eq!(per_user.lines().count(), 81);
}

/// `recforge evaluate` of `runs/<model>` on the test file with validation masked gives the
/// test metrics `train` wrote; returns its output.
fn evaluate_reproduces_test_metrics(d: &Path, model: &str, trained: &Value) -> String {
    let run = format!("runs/{model}");
    let (ok, out, err) = recforge(
        &[
            "evaluate",
            "--model",
            &run,
            "--data",
            "data/test.inter",
            "--exclude",
            "data/valid.inter",
            "--metrics-json",
            "eval.json",
        ],
        d,
    );
    assert!(ok, "{err}");
    let e: Value = serde_json::from_slice(&std::fs::read(d.join("eval.json")).unwrap()).unwrap();
    assert_eq!(e["test"], trained["test"], "{model}");
    out
}

#[test]
fn ldiffrec_clusters_lightgcn_item_vectors_and_its_checkpoint_needs_no_vector_file() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_data(d);
    let pop = train(d, "Pop", &[]);
    train(d, "LightGCN", &[]);
    let (ok, _, err) = recforge(
        &[
            "item-vectors",
            "--model",
            "runs/LightGCN",
            "--out",
            "item_emb.npy",
        ],
        d,
    );
    assert!(ok, "{err}");
    assert!(err.contains("40 item vectors of 16 values"), "{err}");
    let m = train(d, "LDiffRec", &[]);
    let (r, p) = (
        m["test"]["recall@10"].as_f64().unwrap(),
        pop["test"]["recall@10"].as_f64().unwrap(),
    );
    assert!(r > p + 0.15, "L-DiffRec {r} vs Pop {p}");
    // the saved model keeps its clusters: it evaluates with the vectors' file gone
    std::fs::remove_file(d.join("item_emb.npy")).unwrap();
    evaluate_reproduces_test_metrics(d, "LDiffRec", &m);
    // a model without item vectors says so
    let (ok, _, err) = recforge(
        &["item-vectors", "--model", "runs/Pop", "--out", "pop.npy"],
        d,
    );
    assert!(
        !ok && err.contains("a Pop model has no item vectors"),
        "{err}"
    );
}

#[test]
fn evaluate_on_a_file_reproduces_the_test_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_data(d);
    let m = train(d, "BPR", &["--set", "epochs=10"]);
    let out = evaluate_reproduces_test_metrics(d, "BPR", &m);
    assert!(out.starts_with("80 users"), "{out}");
    // without the validation mask the numbers are those of another protocol, not an error
    let (ok, _, err) = recforge(
        &[
            "evaluate",
            "--model",
            "runs/BPR",
            "--data",
            "data/test.inter",
        ],
        d,
    );
    assert!(ok, "{err}");
    // an unknown item names the file, line and field
    std::fs::write(
        d.join("bad.inter"),
        "user_id:token\titem_id:token\nu1\ti3\nu2\tnope\n",
    )
    .unwrap();
    let (ok, _, err) = recforge(
        &["evaluate", "--model", "runs/BPR", "--data", "bad.inter"],
        d,
    );
    assert!(!ok);
    assert!(
        err.contains("bad.inter:3") && err.contains("unknown item `nope`"),
        "{err}"
    );
}

#[test]
fn bad_interaction_rows_are_errors_or_counted_skips() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_data(d);
    let path = d.join("data/train.inter");
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.insert_str(text.find('\n').unwrap() + 1, "u1\ti2\tnot-a-time\nu1\n");
    std::fs::write(&path, text).unwrap();
    let (ok, _, err) = recforge(
        &[
            "train",
            "--config",
            "cfg",
            "--expid",
            "Pop_toy",
            "--run-dir",
            "r",
        ],
        d,
    );
    assert!(!ok);
    assert!(
        err.contains("train.inter:2") && err.contains("field `timestamp`"),
        "{err}"
    );
    let (ok, _, err) = recforge(
        &[
            "train",
            "--config",
            "cfg",
            "--expid",
            "Pop_toy",
            "--run-dir",
            "r2",
            "--on-bad-row",
            "skip",
        ],
        d,
    );
    assert!(ok, "{err}");
    assert!(err.contains("skipped 2 malformed rows"), "{err}");
    // unknown keys are errors; RecBole settings that change nothing are warnings
    let (ok, _, err) = recforge(
        &[
            "train",
            "--config",
            "cfg",
            "--expid",
            "BPR_toy",
            "--run-dir",
            "r3",
            "--set",
            "embeding_size=8",
        ],
        d,
    );
    assert!(!ok);
    assert!(
        err.contains("embeding_size") && err.contains("embedding_size"),
        "{err}"
    );
    let (ok, _, err) = recforge(
        &[
            "train",
            "--config",
            "cfg",
            "--expid",
            "Pop_toy",
            "--run-dir",
            "r4",
            "--set",
            "valid_metric=recall@50",
        ],
        d,
    );
    assert!(!ok);
    assert!(
        err.contains("valid_metric `recall@50` is not among the metrics"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serving_recommends_for_users_and_histories_and_offers_the_right_tools() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_data(d);
    train(d, "BPR", &["--set", "epochs=10"]);
    train(d, "EASE", &[]);
    let server = start_server(d, Path::new("runs/BPR"), &[]);
    let c = reqwest::Client::new();
    let url = |p: &str| format!("{}{p}", server.base);

    let (s, r) = post(&c, url("/v1/recommend"), json!({"user": "u3", "top_k": 5})).await;
    assert_eq!(s, 200, "{r}");
    let got = items(&r);
    assert_eq!(got.len(), 5);
    let train = std::fs::read_to_string(d.join("data/train.inter")).unwrap();
    let seen: Vec<&str> = train
        .lines()
        .filter_map(|l| l.strip_prefix("u3\t"))
        .map(|l| l.split('\t').next().unwrap())
        .collect();
    assert!(
        got.iter().all(|i| !seen.contains(&i.as_str())),
        "{got:?} ∩ {seen:?}"
    );
    let scores: Vec<f64> = r["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["score"].as_f64().unwrap())
        .collect();
    assert!(scores.windows(2).all(|w| w[0] >= w[1]), "{scores:?}");
    // seen items come back only when asked
    let (_, all) = post(
        &c,
        url("/v1/recommend"),
        json!({"user": "u3", "top_k": 40, "exclude_seen": false}),
    )
    .await;
    assert_eq!(items(&all).len(), 40);
    let (_, ex) = post(
        &c,
        url("/v1/recommend"),
        json!({"user": "u3", "top_k": 5, "exclude": [got[0].clone()]}),
    )
    .await;
    assert!(!items(&ex).contains(&got[0]));

    let (s, r) = post(
        &c,
        url("/v1/recommend"),
        json!({"history": ["i1", "i2", "i3"], "top_k": 3}),
    )
    .await;
    assert_eq!(s, 200, "{r}");
    assert!(items(&r)
        .iter()
        .all(|i| !["i1", "i2", "i3"].contains(&i.as_str())));
    let (s, r) = post(&c, url("/v1/recommend"), json!({"history": []})).await;
    assert_eq!(s, 200, "cold start ranks by popularity: {r}");
    assert!(items(&r)[..2].contains(&"i0".to_string()));

    for (body, field) in [
        (json!({"user": "nobody"}), "user"),
        (json!({"history": ["i1", "zzz"]}), "history[1]"),
        (json!({"user": "u1", "exclude": ["zzz"]}), "exclude[0]"),
    ] {
        let (s, r) = post(&c, url("/v1/recommend"), body.clone()).await;
        assert_eq!((s, r["field"].as_str()), (422, Some(field)), "{body} → {r}");
    }
    for body in [
        json!({}),
        json!({"user": "u1", "history": []}),
        json!({"user": "u1", "top_k": 0}),
    ] {
        let (s, r) = post(&c, url("/v1/recommend"), body.clone()).await;
        assert!(s == 400 || s == 422, "{body} → {s} {r}");
    }
    let (s, r) = post(&c, url("/v1/predict"), json!({"instances": [{}]})).await;
    assert_eq!(s, 422);
    assert!(
        r["error"].as_str().unwrap().contains("top-K recommender"),
        "{r}"
    );

    let (s, r) = post(
        &c,
        url("/v1/similar_items"),
        json!({"item": "i5", "top_k": 4}),
    )
    .await;
    assert_eq!(s, 200, "{r}");
    assert!(!items(&r).contains(&"i5".to_string()));
    assert_eq!(items(&r).len(), 4);

    let doc: Value = c
        .get(url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(doc["paths"]["/v1/recommend"]["post"].is_object());
    assert!(doc["paths"]["/v1/similar_items"]["post"].is_object());
    let models: Value = c
        .get(url("/v1/models"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(models["models"][0]["family"], "topk");
    assert_eq!(models["models"][0]["items"], 40);

    // MCP: the top-K tools, and not the CTR ones
    use rmcp::model::CallToolRequestParams;
    use rmcp::ServiceExt;
    let transport = rmcp::transport::StreamableHttpClientTransport::from_uri(url("/mcp"));
    let client = ().serve(transport).await.unwrap();
    let tools = client.list_all_tools().await.unwrap();
    let names: Vec<&str> = tools.iter().map(|t| t.name.as_ref()).collect();
    assert_eq!(names, ["model_info", "recommend_items", "similar_items"]);
    let args = json!({"user": "u3", "top_k": 5})
        .as_object()
        .unwrap()
        .clone();
    let r = client
        .call_tool(CallToolRequestParams::new("recommend_items").with_arguments(args))
        .await
        .unwrap();
    assert_eq!(items(&r.structured_content.unwrap()), got);
    let args = json!({"instances": [{}]}).as_object().unwrap().clone();
    let r = client
        .call_tool(CallToolRequestParams::new("predict_ctr").with_arguments(args))
        .await;
    assert!(r.is_err(), "predict_ctr is not offered for a top-K model");
    client.cancel().await.unwrap();
    drop(server);

    // EASE has no item vectors: no similar_items
    let server = start_server(d, Path::new("runs/EASE"), &[]);
    let transport =
        rmcp::transport::StreamableHttpClientTransport::from_uri(format!("{}/mcp", server.base));
    let client = ().serve(transport).await.unwrap();
    let tools = client.list_all_tools().await.unwrap();
    let names: Vec<&str> = tools.iter().map(|t| t.name.as_ref()).collect();
    assert_eq!(names, ["model_info", "recommend_items"]);
    client.cancel().await.unwrap();
    let (s, _) = post(
        &c,
        format!("{}/v1/similar_items", server.base),
        json!({"item": "i1"}),
    )
    .await;
    assert_eq!(s, 422);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_diffusion_model_serves_users_and_histories_from_its_own_community() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_data(d);
    train(d, "TDiffRec", &[]);
    let server = start_server(d, Path::new("runs/TDiffRec"), &[]);
    let c = reqwest::Client::new();
    let url = |p: &str| format!("{}{p}", server.base);
    let community = |items: &[String]| -> usize {
        // how many of the items belong to the first community (i0..i19)
        items
            .iter()
            .filter(|i| i[1..].parse::<u32>().unwrap() < 20)
            .count()
    };
    // u3 is a user of the first community, u50 of the second
    let (s, r) = post(&c, url("/v1/recommend"), json!({"user": "u3", "top_k": 5})).await;
    assert_eq!(s, 200, "{r}");
    assert!(community(&items(&r)) >= 4, "{r}");
    let (s, r) = post(&c, url("/v1/recommend"), json!({"user": "u50", "top_k": 5})).await;
    assert_eq!(s, 200, "{r}");
    assert!(community(&items(&r)) <= 1, "{r}");
    // an ad-hoc history, weighted in the order sent, from the second community
    let (s, r) = post(
        &c,
        url("/v1/recommend"),
        json!({"history": ["i21", "i25", "i30", "i33"], "top_k": 5}),
    )
    .await;
    assert_eq!(s, 200, "{r}");
    assert!(community(&items(&r)) <= 1, "{r}");
}
