//! `recforge serve` and `recforge mcp` as a client sees them: HTTP with reqwest, MCP with the
//! official SDK's client, against a model trained on generated data.

mod common;

use common::{generate, recforge, train_small};
use rmcp::model::CallToolRequestParams;
use rmcp::ServiceExt;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// A `recforge serve` child process on a free loopback port, killed on drop.
struct Server {
    child: Child,
    base: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_server(cwd: &Path, model: &Path, extra: &[&str]) -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_recforge"))
        .args([
            "--threads",
            "2",
            "serve",
            "--addr",
            "127.0.0.1:0",
            "--model",
        ])
        .arg(model)
        .args(extra)
        .current_dir(cwd)
        .stderr(Stdio::piped())
        .spawn()
        .expect("start recforge serve");
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let first = lines.next().expect("server output").expect("server output");
    let addr = first
        .split("http://")
        .nth(1)
        .and_then(|r| r.split(';').next())
        .unwrap_or_else(|| panic!("no address in `{first}`"))
        .to_string();
    std::thread::spawn(move || lines.for_each(drop));
    Server {
        child,
        base: format!("http://{addr}"),
    }
}

fn train(d: &Path, seed: &str) -> PathBuf {
    let run = format!("run{seed}");
    let seed = format!("seed={seed}");
    let (ok, _, err) = train_small(d, &["--set", &seed, "--run-dir", &run]);
    assert!(ok, "{err}");
    d.join(run)
}

/// Rows of a CSV as JSON instances (strings, as read), without the label.
fn instances(csv_path: &Path, n: usize) -> Vec<Value> {
    let mut r = csv::Reader::from_path(csv_path).unwrap();
    let header = r.headers().unwrap().clone();
    r.records()
        .take(n)
        .map(|rec| {
            let rec = rec.unwrap();
            let obj: serde_json::Map<String, Value> = header
                .iter()
                .zip(rec.iter())
                .filter(|(k, _)| *k != "label")
                .map(|(k, v)| (k.to_string(), Value::String(v.to_string())))
                .collect();
            Value::Object(obj)
        })
        .collect()
}

fn cli_scores(d: &Path, model: &Path, input: &str) -> Vec<f32> {
    let (ok, out, err) = recforge(
        &[
            "predict",
            "--model",
            model.to_str().unwrap(),
            "--input",
            input,
        ],
        d,
    );
    assert!(ok, "{err}");
    out.lines().skip(1).map(|l| l.parse().unwrap()).collect()
}

fn scores(v: &Value, key: &str) -> Vec<f32> {
    v[key]
        .as_array()
        .unwrap_or_else(|| panic!("no {key} in {v}"))
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

async fn get(c: &reqwest::Client, url: String) -> reqwest::Response {
    c.get(url).send().await.unwrap()
}

async fn post(c: &reqwest::Client, url: &str, body: &Value) -> (u16, Value) {
    let resp = c.post(url).json(body).send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_api_scores_like_predict_and_refuses_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    generate(d, 4000, 5, 30);
    let model = train(d, "1");
    let server = start_server(
        d,
        &model,
        &["--max-instances", "300", "--body-limit-mib", "1"],
    );
    let c = reqwest::Client::new();
    let base = &server.base;

    // the same rows score the same over HTTP as with `recforge predict`
    let rows = instances(&d.join("gen/test.csv"), 200);
    let expected = cli_scores(d, &model, "gen/test.csv");
    let (status, body) = post(
        &c,
        &format!("{base}/v1/predict"),
        &json!({ "instances": rows }),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let got = scores(&body, "predictions");
    assert_eq!(got.len(), 200);
    for (g, e) in got.iter().zip(&expected) {
        assert!((g - e).abs() < 1e-6, "{g} vs {e}");
    }
    // numbers mean what their text means in the CSV; unseen values and missing fields are
    // OOV/defaults, as in training; unknown fields are ignored
    let first = rows[0].as_object().unwrap();
    let mut as_numbers = serde_json::Map::new();
    for (k, v) in first {
        let n: i64 = v.as_str().unwrap().parse().unwrap();
        as_numbers.insert(k.clone(), json!(n));
    }
    as_numbers.insert("not_a_field".into(), json!("x"));
    let unseen = json!({ "f0": "never-seen", "f1": "never-seen" });
    let (status, body) = post(
        &c,
        &format!("{base}/v1/predict"),
        &json!({ "instances": [as_numbers, unseen, {}] }),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let p = scores(&body, "predictions");
    assert!((p[0] - expected[0]).abs() < 1e-6);
    assert!(
        (p[1] - p[2]).abs() < 1e-6,
        "unseen values should score as missing ones: {p:?}"
    );

    // rank: the same scores, sorted, cut at top_k
    let context = json!({ "f0": rows[0]["f0"], "f1": rows[0]["f1"] });
    let candidates: Vec<Value> = rows
        .iter()
        .map(|r| json!({ "f2": r["f2"], "f3": r["f3"], "f4": r["f4"] }))
        .collect();
    let merged: Vec<Value> = candidates
        .iter()
        .map(|cand| {
            let mut m = context.as_object().unwrap().clone();
            m.extend(cand.as_object().unwrap().clone());
            Value::Object(m)
        })
        .collect();
    let (_, body) = post(
        &c,
        &format!("{base}/v1/predict"),
        &json!({ "instances": merged }),
    )
    .await;
    let merged_scores = scores(&body, "predictions");
    let (status, body) = post(
        &c,
        &format!("{base}/v1/rank"),
        &json!({ "context": context, "candidates": candidates, "top_k": 10 }),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let ranked = body["ranked"].as_array().unwrap();
    assert_eq!(ranked.len(), 10);
    let mut order: Vec<usize> = (0..merged_scores.len()).collect();
    order.sort_by(|&a, &b| {
        merged_scores[b]
            .total_cmp(&merged_scores[a])
            .then(a.cmp(&b))
    });
    for (r, &i) in ranked.iter().zip(&order) {
        assert_eq!(r["index"].as_u64().unwrap() as usize, i);
        assert!((r["score"].as_f64().unwrap() as f32 - merged_scores[i]).abs() < 1e-6);
    }

    // bad input: 4xx with a message naming the field, never a crash
    let bad = [
        (
            json!({ "instances": [{ "f0": { "nested": 1 } }] }),
            422,
            "instances[0].f0",
        ),
        (json!({ "instances": [[1, 2]] }), 422, "instances[0]"),
        (json!({ "instances": "all" }), 422, "instances"),
        (json!({ "instance": [] }), 422, "instance"),
        (json!({ "instances": [] }), 422, "instances"),
        (
            json!({ "instances": vec![json!({}); 301] }),
            422,
            "instances",
        ),
    ];
    for (body, code, field) in bad {
        let (status, resp) = post(&c, &format!("{base}/v1/predict"), &body).await;
        assert_eq!(status, code, "{body} → {resp}");
        assert_eq!(resp["field"], field, "{resp}");
    }
    let (status, resp) = post(
        &c,
        &format!("{base}/v1/rank"),
        &json!({ "candidates": [{}], "top_k": -1 }),
    )
    .await;
    assert_eq!(
        (status, resp["field"].as_str()),
        (422, Some("top_k")),
        "{resp}"
    );
    let resp = c
        .post(format!("{base}/v1/predict"))
        .header("content-type", "application/json")
        .body("{\"instances\": [")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    let big = format!(
        "{{\"instances\": [{{\"f0\": \"{}\"}}]}}",
        "x".repeat(2 << 20)
    );
    // (its own client: the server answers before reading the body and closes the connection)
    let once = reqwest::Client::new();
    let resp = once
        .post(format!("{base}/v1/predict"))
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 413);

    // concurrent requests are merged into shared batches and each gets its own answers
    let tasks: Vec<_> = (0..24)
        .map(|i| {
            let (c, url) = (c.clone(), format!("{base}/v1/predict"));
            let chunk: Vec<Value> = rows[i * 8..i * 8 + 8].to_vec();
            tokio::spawn(async move { (i, post(&c, &url, &json!({ "instances": chunk })).await) })
        })
        .collect();
    for t in tasks {
        let (i, (status, body)) = t.await.unwrap();
        assert_eq!(status, 200);
        for (g, e) in scores(&body, "predictions").iter().zip(&expected[i * 8..]) {
            assert!((g - e).abs() < 1e-6);
        }
    }

    // operations endpoints
    for path in ["/healthz", "/readyz"] {
        assert_eq!(get(&c, format!("{base}{path}")).await.status(), 200);
    }
    let models: Value = get(&c, format!("{base}/v1/models"))
        .await
        .json()
        .await
        .unwrap();
    let m = &models["models"][0];
    assert_eq!(m["model"], "DeepFM");
    assert_eq!(m["fields"].as_array().unwrap().len(), 5);
    assert_eq!(m["checksum"].as_str().unwrap().len(), 64);
    assert!(m["metrics"]["test"]["AUC"].is_number(), "{m}");
    let metrics = get(&c, format!("{base}/metrics"))
        .await
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("recforge_http_requests_total{route=\"/v1/predict\",status=\"200\"}"));
    assert!(
        metrics.contains("recforge_http_requests_total{route=\"/v1/predict\",status=\"422\"} 6")
    );
    assert!(metrics.contains("recforge_http_request_duration_seconds_bucket"));
    assert!(metrics.contains("recforge_batch_rows_bucket"));
    // some batch carried more than one request (the concurrent burst above)
    let value = |name: &str| -> f64 {
        let line = metrics.lines().find(|l| l.starts_with(name)).unwrap();
        line.rsplit(' ').next().unwrap().parse().unwrap()
    };
    let (merged, batches) = (
        value("recforge_batch_requests_sum"),
        value("recforge_batch_requests_count"),
    );
    eprintln!("requests {merged} in {batches} batches");
    assert!(
        merged > batches,
        "no two requests shared a batch: {merged} requests in {batches} batches"
    );
    assert!(metrics.contains("recforge_model_version 1"));
    let api: Value = get(&c, format!("{base}/openapi.json"))
        .await
        .json()
        .await
        .unwrap();
    for path in [
        "/v1/predict",
        "/v1/rank",
        "/v1/models",
        "/healthz",
        "/readyz",
        "/metrics",
    ] {
        assert!(
            api["paths"][path].is_object(),
            "{path} missing from the OpenAPI document"
        );
    }
    // without a token configured, there is no admin route
    let resp = c
        .post(format!("{base}/v1/admin/reload"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_swaps_models_and_refuses_a_broken_one() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    generate(d, 3000, 4, 20);
    let first = train(d, "1");
    let second = train(d, "2");
    std::fs::write(d.join("token"), "s3cret\n").unwrap();
    // a broken checkpoint: the tensors no longer match the checkpoint's checksum
    let broken = d.join("broken");
    std::fs::create_dir(&broken).unwrap();
    std::fs::copy(
        second.join("model.safetensors"),
        broken.join("model.safetensors"),
    )
    .unwrap();
    let mut bytes = std::fs::read(broken.join("model.safetensors")).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(broken.join("model.safetensors"), bytes).unwrap();

    let server = start_server(d, &first, &["--admin-token-file", "token"]);
    let c = reqwest::Client::new();
    let base = &server.base;
    let rows = json!({ "instances": instances(&d.join("gen/test.csv"), 50) });
    let (_, before) = post(&c, &format!("{base}/v1/predict"), &rows).await;
    let reload = |token: &'static str, body: Value| {
        let c = c.clone();
        let url = format!("{base}/v1/admin/reload");
        async move {
            let resp = c
                .post(url)
                .bearer_auth(token)
                .json(&body)
                .send()
                .await
                .unwrap();
            (resp.status().as_u16(), resp.json::<Value>().await.unwrap())
        }
    };
    assert_eq!(reload("wrong", json!({})).await.0, 401);
    let (status, body) = reload("s3cret", json!({ "model": broken })).await;
    assert_eq!(status, 422, "{body}");
    assert!(body["error"].as_str().unwrap().contains("broken"), "{body}");
    let (_, still) = post(&c, &format!("{base}/v1/predict"), &rows).await;
    assert_eq!(
        still, before,
        "a refused reload must leave the old model serving"
    );

    let (status, body) = reload("s3cret", json!({ "model": second })).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["version"], 2);
    let (_, after) = post(&c, &format!("{base}/v1/predict"), &rows).await;
    assert_eq!(after["model_version"], 2);
    let expected = cli_scores(d, &second, "gen/test.csv");
    for (g, e) in scores(&after, "predictions").iter().zip(&expected) {
        assert!((g - e).abs() < 1e-6);
    }
    assert_ne!(
        scores(&after, "predictions"),
        scores(&before, "predictions")
    );
    let metrics = get(&c, format!("{base}/metrics"))
        .await
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("recforge_model_reloads_total{outcome=\"refused\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("recforge_model_version 2"));
}

async fn call<S: rmcp::service::Service<rmcp::RoleClient>>(
    client: &rmcp::service::RunningService<rmcp::RoleClient, S>,
    tool: &'static str,
    args: &Value,
) -> rmcp::model::CallToolResult {
    let args = args.as_object().expect("arguments are an object").clone();
    client
        .call_tool(CallToolRequestParams::new(tool).with_arguments(args))
        .await
        .unwrap()
}

/// initialize, tools/list, and tools/call with valid and invalid arguments.
async fn exercise_mcp<S: rmcp::service::Service<rmcp::RoleClient>>(
    client: &rmcp::service::RunningService<rmcp::RoleClient, S>,
    instance: &Value,
    expected: f32,
) {
    let info = client.peer_info().expect("initialized");
    assert_eq!(
        info.server_info.as_ref().map(|s| s.name.as_str()),
        Some("recforge")
    );
    let tools = client.list_all_tools().await.unwrap();
    let names: Vec<&str> = tools.iter().map(|t| t.name.as_ref()).collect();
    assert_eq!(names, ["predict_ctr", "rank_candidates", "model_info"]);
    let predict = &tools[0];
    assert_eq!(predict.input_schema["type"], "object");
    assert!(predict.input_schema["properties"]["instances"].is_object());

    let args = json!({ "instances": [instance] });
    let r = call(client, "predict_ctr", &args).await;
    assert_ne!(r.is_error, Some(true), "{r:?}");
    let p = r.structured_content.unwrap()["predictions"][0]
        .as_f64()
        .unwrap() as f32;
    assert!((p - expected).abs() < 1e-6, "{p} vs {expected}");

    let args = json!({ "candidates": [instance, {}], "top_k": 1 });
    let r = call(client, "rank_candidates", &args).await;
    assert_eq!(
        r.structured_content.unwrap()["ranked"]
            .as_array()
            .unwrap()
            .len(),
        1
    );

    let r = call(client, "model_info", &json!({})).await;
    assert_eq!(r.structured_content.unwrap()["model"], "DeepFM");

    // invalid arguments are a tool error the agent can read, not a protocol failure
    for args in [
        json!({ "instances": 3 }),
        json!({}),
        json!({ "instances": [{ "f0": [1] }] }),
    ] {
        let r = call(client, "predict_ctr", &args).await;
        assert_eq!(r.is_error, Some(true), "{args} → {r:?}");
    }
    // and the server still answers afterwards
    let r = call(client, "model_info", &json!({})).await;
    assert_ne!(r.is_error, Some(true));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mcp_over_stdio_and_http() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    generate(d, 3000, 4, 20);
    let model = train(d, "1");
    let instance = &instances(&d.join("gen/test.csv"), 1)[0];
    let expected = cli_scores(d, &model, "gen/test.csv")[0];

    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_recforge"));
    cmd.args(["--threads", "2", "mcp", "--model"]).arg(&model);
    let transport = rmcp::transport::TokioChildProcess::new(cmd).unwrap();
    let client = ().serve(transport).await.unwrap();
    exercise_mcp(&client, instance, expected).await;
    client.cancel().await.unwrap();

    let server = start_server(d, &model, &[]);
    let transport =
        rmcp::transport::StreamableHttpClientTransport::from_uri(format!("{}/mcp", server.base));
    let client = ().serve(transport).await.unwrap();
    exercise_mcp(&client, instance, expected).await;
    client.cancel().await.unwrap();
}
