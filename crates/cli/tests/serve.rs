//! `recforge serve` and `recforge mcp` as a client sees them: HTTP with reqwest, MCP with the
//! official SDK's client, against a model trained on generated data.

mod common;

use common::{generate, recforge, start_server, train_small};
use rmcp::model::CallToolRequestParams;
use rmcp::ServiceExt;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

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
    // `line,score` rows
    out.lines()
        .skip(1)
        .map(|l| l.split_once(',').unwrap().1.parse().unwrap())
        .collect()
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
    assert!(m["metrics"]["test"]["auc"].is_number(), "{m}");
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

/// `gen/` with `f4` declared numeric (the generated ids read as numbers), for the tests of
/// numeric input.
fn generate_with_numeric(d: &Path) {
    generate(d, 3000, 5, 20);
    let cfg = d.join("gen/dataset_config.yaml");
    let text = std::fs::read_to_string(&cfg).unwrap();
    let text = text.replace(
        "        - {name: [f0, f1, f2, f3, f4], active: True, dtype: str, type: categorical}",
        "        - {name: [f0, f1, f2, f3], active: True, dtype: str, type: categorical}\n        \
         - {name: f4, active: True, dtype: float, type: numeric}",
    );
    assert!(text.contains("type: numeric"), "{text}");
    std::fs::write(cfg, text).unwrap();
}

const MCP_ACCEPT: &str = "application/json, text/event-stream";

fn initialize_body(id: u64) -> Value {
    json!({
        "jsonrpc": "2.0", "id": id, "method": "initialize",
        "params": {
            "protocolVersion": "2025-06-18", "capabilities": {},
            "clientInfo": { "name": "test", "version": "0" }
        }
    })
}

/// A POST to `/mcp`: status, session id, body text.
async fn mcp_post(
    c: &reqwest::Client,
    base: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, Option<String>, String) {
    let mut req = c
        .post(format!("{base}/mcp"))
        .header("accept", MCP_ACCEPT)
        .header("content-type", "application/json")
        .body(body.to_string());
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let session = resp
        .headers()
        .get("mcp-session-id")
        .map(|v| v.to_str().unwrap().to_string());
    (status, session, resp.text().await.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mcp_http_checks_origin_sessions_token_and_json_rpc() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    generate(d, 2000, 4, 20);
    let model = train(d, "1");
    std::fs::write(d.join("token"), "s3cret\n").unwrap();
    let server = start_server(
        d,
        &model,
        &[
            "--mcp-max-sessions",
            "2",
            "--mcp-allowed-origin",
            "https://app.test:443",
        ],
    );
    let c = reqwest::Client::new();
    let base = &server.base;
    let port = base.rsplit(':').next().unwrap();
    let init = initialize_body(1).to_string();

    // Origin: foreign ones (and `null`) are refused before anything else
    for origin in [
        "http://evil.example",
        "null",
        "http://127.0.0.1.evil.example",
    ] {
        let (status, session, _) = mcp_post(&c, base, &[("origin", origin)], &init).await;
        assert_eq!(status, 403, "Origin {origin}");
        assert_eq!(session, None);
    }
    let own = format!("http://127.0.0.1:{port}");
    let (status, first, body) = mcp_post(&c, base, &[("origin", &own)], &init).await;
    assert_eq!(status, 200, "{body}");
    let first = first.expect("a session id");
    let (status, second, _) = mcp_post(&c, base, &[("origin", "https://app.test")], &init).await;
    assert_eq!(status, 200);
    let second = second.unwrap();

    // the session cap: a third session is refused with 503 until one is closed
    let (status, third, _) = mcp_post(&c, base, &[], &init).await;
    assert_eq!((status, third), (503, None));
    let delete = |id: String| {
        let c = c.clone();
        let url = format!("{base}/mcp");
        async move {
            c.delete(url)
                .header("mcp-session-id", id)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(delete(first.clone()).await, 204);
    assert_eq!(delete(first.clone()).await, 404);
    assert_eq!(delete("no-such-session".into()).await, 404);
    let (status, _, _) = mcp_post(&c, base, &[], &init).await;
    assert_eq!(status, 200);

    // JSON-RPC errors as the spec has them, with the request's id
    let rpc = |body: &'static str| {
        let (c, base, second) = (c.clone(), base.clone(), second.clone());
        async move {
            let (status, _, text) = mcp_post(&c, &base, &[("mcp-session-id", &second)], body).await;
            let v: Value = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{body} → {status} {text}: {e}"));
            (status, v["error"]["code"].as_i64(), v["id"].clone())
        }
    };
    assert_eq!(
        rpc("{not json").await,
        (400, Some(-32700), Value::Null),
        "malformed JSON"
    );
    assert_eq!(
        rpc(r#"{"jsonrpc":"2.0","id":41,"method":7}"#).await,
        (400, Some(-32600), json!(41)),
        "invalid request"
    );
    assert_eq!(
        rpc(r#"{"id":"x","method":"tools/list"}"#).await,
        (400, Some(-32600), json!("x")),
        "no jsonrpc member"
    );
    assert_eq!(
        rpc(r#"{"jsonrpc":"2.0","id":42,"method":"tools/call","params":{"arguments":{}}}"#).await,
        (200, Some(-32602), json!(42)),
        "tools/call without a name"
    );

    // the MCP traffic and the 404s are counted
    let resp = c.get(format!("{base}/no/such/path")).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 404);
    let metrics = c
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("recforge_http_requests_total{route=\"/mcp\",status=\"403\"} 3"),
        "{metrics}"
    );
    assert!(
        metrics.contains("recforge_http_requests_total{route=\"/mcp\",status=\"503\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("recforge_http_requests_total{route=\"unmatched\",status=\"404\"} 1"),
        "{metrics}"
    );
    drop(server);

    // with --mcp-require-token, /mcp needs the bearer token, compared exactly
    let server = start_server(
        d,
        &model,
        &["--admin-token-file", "token", "--mcp-require-token"],
    );
    let base = &server.base;
    let (status, _, _) = mcp_post(&c, base, &[], &init).await;
    assert_eq!(status, 401);
    let (status, _, _) = mcp_post(&c, base, &[("authorization", "Bearer s3cre")], &init).await;
    assert_eq!(status, 401);
    let (status, session, _) =
        mcp_post(&c, base, &[("authorization", "Bearer s3cret")], &init).await;
    assert_eq!(status, 200);
    assert!(session.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_refuses_non_finite_numbers_and_agrees_with_its_document() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    generate_with_numeric(d);
    let model = train(d, "1");
    std::fs::write(d.join("token"), "s3cret\n").unwrap();
    let server = start_server(d, &model, &["--admin-token-file", "token"]);
    let c = reqwest::Client::new();
    let base = &server.base;

    // a value that is not a finite f32 is refused, naming the field
    for bad in [json!("NaN"), json!("inf"), json!("-Infinity"), json!(1e308)] {
        let (status, body) = post(
            &c,
            &format!("{base}/v1/predict"),
            &json!({ "instances": [{ "f0": "1", "f4": bad }] }),
        )
        .await;
        assert_eq!(status, 422, "{bad} → {body}");
        assert_eq!(body["field"], "instances[0].f4", "{body}");
        let (status, body) = post(
            &c,
            &format!("{base}/v1/rank"),
            &json!({ "context": { "f4": 1 }, "candidates": [{ "f4": 2 }, { "f4": bad }] }),
        )
        .await;
        assert_eq!(status, 422, "{bad} → {body}");
        assert_eq!(body["field"], "candidates[1].f4", "{body}");
    }
    let (status, body) = post(
        &c,
        &format!("{base}/v1/rank"),
        &json!({ "candidates": [{ "f4": 2 }, { "f4": "3.5" }], "top_k": 1 }),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(body["ranked"][0]["score"].is_number(), "{body}");

    // the OpenAPI document says what the server does
    let api: Value = c
        .get(format!("{base}/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let schemas = &api["components"]["schemas"];
    assert_eq!(
        schemas["PredictRequest"]["properties"]["instances"]["minItems"],
        1
    );
    assert_eq!(
        schemas["RankRequest"]["properties"]["candidates"]["minItems"],
        1
    );
    assert_eq!(schemas["RankRequest"]["properties"]["top_k"]["minimum"], 1);
    // the largest top_k the document allows is one the server reads; one more is refused
    let max_top_k = schemas["RankRequest"]["properties"]["top_k"]["maximum"].clone();
    let (status, body) = post(
        &c,
        &format!("{base}/v1/rank"),
        &json!({ "candidates": [{}], "top_k": max_top_k }),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let over = max_top_k.as_u64().expect("an integer maximum") + 1;
    let (status, body) = post(
        &c,
        &format!("{base}/v1/rank"),
        &json!({ "candidates": [{}], "top_k": over }),
    )
    .await;
    assert_eq!(status, 422, "{body}");
    let reload = &api["paths"]["/v1/admin/reload"]["post"];
    assert_ne!(reload["requestBody"]["required"], true, "{reload}");
    for code in ["200", "400", "401", "413", "422"] {
        assert!(reload["responses"][code].is_object(), "{code} undocumented");
    }

    // models: no server paths
    let models: Value = c
        .get(format!("{base}/v1/models"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let m = &models["models"][0];
    assert!(m.get("checkpoint").is_none(), "{m}");
    assert!(!m.to_string().contains(d.to_str().unwrap()), "{m}");

    // reload without a model re-reads the one being served, not the startup one
    let second = train(d, "2");
    let reload = |body: Option<Value>| {
        let c = c.clone();
        let url = format!("{base}/v1/admin/reload");
        async move {
            let mut req = c.post(url).bearer_auth("s3cret");
            if let Some(b) = body {
                req = req.json(&b);
            }
            let resp = req.send().await.unwrap();
            (resp.status().as_u16(), resp.json::<Value>().await.unwrap())
        }
    };
    let (status, served) = reload(Some(json!({ "model": second }))).await;
    assert_eq!(status, 200, "{served}");
    for body in [Some(json!({})), None] {
        let (status, again) = reload(body).await;
        assert_eq!(status, 200, "{again}");
        assert_eq!(again["checksum"], served["checksum"], "{again}");
    }
    let (status, body) = reload(Some(json!({ "model": 3 }))).await;
    assert_eq!(status, 422, "{body}");

    // /metrics: OpenMetrics when asked for, else the classic format, each under its type
    let resp = c
        .get(format!("{base}/metrics"))
        .header(
            "accept",
            "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5",
        )
        .send()
        .await
        .unwrap();
    let ct = resp.headers()["content-type"].to_str().unwrap().to_string();
    assert!(ct.starts_with("application/openmetrics-text"), "{ct}");
    let text = resp.text().await.unwrap();
    assert!(text.trim_end().ends_with("# EOF"));
    assert!(text.contains("# TYPE recforge_http_requests counter"));
    let resp = c.get(format!("{base}/metrics")).send().await.unwrap();
    let ct = resp.headers()["content-type"].to_str().unwrap().to_string();
    assert!(ct.starts_with("text/plain; version=0.0.4"), "{ct}");
    let text = resp.text().await.unwrap();
    assert!(text.contains("# TYPE recforge_http_requests_total counter"));
    assert!(!text.contains("# EOF"));
}

/// Raw HTTP/1.1 over TCP, for what reqwest will not send.
fn raw(base: &str) -> std::net::TcpStream {
    let addr = base.trim_start_matches("http://");
    let s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .unwrap();
    s
}

/// Reads until the server closes; how long that took and what was read.
fn read_to_close(s: &mut std::net::TcpStream) -> (std::time::Duration, String) {
    use std::io::Read;
    let start = std::time::Instant::now();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    (start.elapsed(), String::from_utf8_lossy(&out).into_owned())
}

#[test]
fn slow_clients_time_out_and_sigterm_drains() {
    use std::io::Write;
    use std::time::Duration;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    generate(d, 2000, 4, 20);
    let model = train(d, "1");
    let mut server = start_server(
        d,
        &model,
        &[
            "--header-read-timeout-secs",
            "1",
            "--idle-timeout-secs",
            "2",
        ],
    );
    let base = server.base.clone();

    // slowloris: headers that never end are cut off after the header timeout
    let mut s = raw(&base);
    s.write_all(b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nX-Slow: 1\r\n")
        .unwrap();
    let (took, _) = read_to_close(&mut s);
    assert!(took < Duration::from_secs(5), "held for {took:?}");
    // a body that stops coming: cut off after the idle timeout
    let mut s = raw(&base);
    s.write_all(
        b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
          Content-Length: 100\r\n\r\n{\"instances\"",
    )
    .unwrap();
    let (took, _) = read_to_close(&mut s);
    assert!(took < Duration::from_secs(8), "held for {took:?}");

    // SIGTERM with a request in flight: the request is answered, then the server exits 0
    let body = format!(
        "{{\"instances\": {}}}",
        serde_json::to_string(&instances(&d.join("gen/test.csv"), 20)).unwrap()
    );
    let (head, tail) = body.split_at(body.len() / 2);
    let mut s = raw(&base);
    write!(
        s,
        "POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{head}",
        body.len()
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let pid = server.child.id().to_string();
    let killed = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(killed.success());
    std::thread::sleep(Duration::from_millis(300));
    s.write_all(tail.as_bytes()).unwrap();
    let (_, resp) = read_to_close(&mut s);
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(resp.contains("\"predictions\""), "{resp}");
    let status = server.child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "{status:?}");
    // and it no longer accepts connections
    let addr = base.trim_start_matches("http://");
    assert!(std::net::TcpStream::connect(addr).is_err());
}

type StdioLines = tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>;

/// Writes one line to the server and reads its reply.
async fn send_recv(
    io: &mut (&mut tokio::process::ChildStdin, &mut StdioLines),
    line: String,
) -> Value {
    use tokio::io::AsyncWriteExt;
    io.0.write_all(line.as_bytes()).await.unwrap();
    io.0.write_all(b"\n").await.unwrap();
    io.0.flush().await.unwrap();
    let got = tokio::time::timeout(std::time::Duration::from_secs(20), io.1.next_line())
        .await
        .unwrap_or_else(|_| panic!("no reply to {line}"))
        .unwrap()
        .expect("a reply");
    serde_json::from_str(&got).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mcp_stdio_answers_bad_lines_as_json_rpc_says() {
    use tokio::io::AsyncWriteExt;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    generate(d, 2000, 4, 20);
    let model = train(d, "1");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_recforge"))
        .args(["--threads", "2", "mcp", "--model"])
        .arg(&model)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut lines =
        tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(child.stdout.take().unwrap()));
    let mut io = (&mut stdin, &mut lines);
    let r = send_recv(&mut io, "this is not json".into()).await;
    assert_eq!(r["error"]["code"], -32700, "{r}");
    assert_eq!(r["id"], Value::Null);
    let r = send_recv(&mut io, initialize_body(1).to_string()).await;
    assert_eq!(r["id"], 1, "{r}");
    assert!(r["result"]["serverInfo"].is_object(), "{r}");
    io.0.write_all(b"{\"jsonrpc\":\"2.0\",\"method\":\"notifications/initialized\"}\n")
        .await
        .unwrap();
    let r = send_recv(&mut io, r#"{"jsonrpc":"2.0","id":7,"method":9}"#.into()).await;
    assert_eq!(
        (r["error"]["code"].as_i64(), &r["id"]),
        (Some(-32600), &json!(7)),
        "{r}"
    );
    let r = send_recv(
        &mut io,
        r#"{"jsonrpc":"2.0","id":8,"method":"tools/call","params":{}}"#.into(),
    )
    .await;
    assert_eq!(
        (r["error"]["code"].as_i64(), &r["id"]),
        (Some(-32602), &json!(8)),
        "{r}"
    );
    // and the session goes on
    let call = r#"{"jsonrpc":"2.0","id":9,"method":"tools/call","params":{"name":"model_info"}}"#;
    let r = send_recv(&mut io, call.into()).await;
    assert_eq!(r["id"], 9, "{r}");
    assert_eq!(r["result"]["structuredContent"]["model"], "DeepFM", "{r}");
    assert!(
        r["result"]["structuredContent"].get("checkpoint").is_none(),
        "{r}"
    );
    drop(stdin);
    let status = tokio::time::timeout(std::time::Duration::from_secs(20), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status:?}");
}

/// DIN (two embeddings: the sequence per position and its padding mask) is served like the
/// others: the HTTP scores of a behaviour-sequence row equal `recforge predict`'s, and a
/// missing sequence (all padding) is scored, not refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn din_is_served_like_the_other_ctr_models() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut rows = String::from("label,user_id,item_id,history\n");
    for i in 0..600u32 {
        let (user, item) = (i % 23, (i * 7) % 31);
        let history: Vec<String> = (0..i % 5).map(|k| format!("m{}", (i + k) % 31)).collect();
        let label = history.len().is_multiple_of(2) as u8 ^ item.is_multiple_of(3) as u8;
        rows += &format!("{label},u{user},m{item},{}\n", history.join("^"));
    }
    for split in ["train", "valid", "test"] {
        std::fs::write(d.join(format!("{split}.csv")), &rows).unwrap();
    }
    std::fs::write(
        d.join("dataset_config.yaml"),
        "seq:\n  data_root: ./processed/\n  data_format: csv\n  train_data: train.csv\n  \
         valid_data: valid.csv\n  test_data: test.csv\n  feature_cols:\n    - {name: [user_id, \
         item_id], active: true, dtype: str, type: categorical}\n    - {name: history, active: \
         true, dtype: str, type: sequence, max_len: 4, padding: pre, share_embedding: item_id, \
         feature_encoder: null}\n  label_col: {name: label, dtype: float}\n",
    )
    .unwrap();
    std::fs::write(
        d.join("model_config.yaml"),
        "DIN_seq:\n  model: DIN\n  dataset_id: seq\n  embedding_dim: 4\n  batch_size: 64\n  \
         epochs: 2\n  dnn_hidden_units: [8]\n  attention_hidden_units: [6]\n  \
         din_target_field: item_id\n  din_sequence_field: history\n",
    )
    .unwrap();
    let args = [
        "--threads",
        "2",
        "train",
        "--config",
        ".",
        "--expid",
        "DIN_seq",
        "--run-dir",
        "run",
    ];
    let (ok, _, err) = recforge(&args, d);
    assert!(ok, "{err}");
    let model = d.join("run");
    let expected = cli_scores(d, &model, "test.csv");
    let server = start_server(d, &model, &[]);
    let c = reqwest::Client::new();
    let rows = instances(&d.join("test.csv"), 50);
    let url = format!("{}/v1/predict", server.base);
    let (status, body) = post(&c, &url, &json!({ "instances": rows })).await;
    assert_eq!(status, 200, "{body}");
    let got = scores(&body, "predictions");
    assert_eq!(got.len(), 50);
    for (g, e) in got.iter().zip(&expected) {
        assert!((g - e).abs() < 1e-6, "{g} vs {e}");
    }
    let (status, body) = post(
        &c,
        &url,
        &json!({ "instances": [{"user_id": "u1", "item_id": "m3"}] }),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let p = scores(&body, "predictions")[0];
    assert!(p.is_finite() && (0.0..=1.0).contains(&p), "{p}");
}
