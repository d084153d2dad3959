//! Helpers shared by the binary's test files.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

pub fn recforge(args: &[&str], cwd: &Path) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_recforge"))
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("run recforge");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `recforge data generate` into `d/gen`; returns its standard output.
/// `recforge train` of experiment `<model>_<suffix>` in `cfg/`, into `runs/<model>`, with
/// `--metrics-json <model>.json`; its stdout and the metrics.
pub fn train_experiment(
    d: &Path,
    model: &str,
    suffix: &str,
    extra: &[&str],
) -> (String, serde_json::Value) {
    let expid = format!("{model}_{suffix}");
    let run = format!("runs/{model}");
    let json = format!("{model}.json");
    let mut args = vec![
        "--threads",
        "2",
        "train",
        "--config",
        "cfg",
        "--expid",
        &expid,
        "--run-dir",
        &run,
        "--metrics-json",
        &json,
    ];
    args.extend_from_slice(extra);
    let (ok, out, err) = recforge(&args, d);
    assert!(ok, "{model}: {err}");
    let metrics = serde_json::from_slice(&std::fs::read(d.join(json)).unwrap()).unwrap();
    (out, metrics)
}

pub fn generate(d: &Path, rows: usize, fields: usize, vocab: usize) -> String {
    let (rows, fields, vocab) = (rows.to_string(), fields.to_string(), vocab.to_string());
    let args = [
        "data", "generate", "--out", "gen", "--rows", &rows, "--fields", &fields, "--vocab", &vocab,
    ];
    let (ok, out, err) = recforge(&args, d);
    assert!(ok, "{err}");
    out
}

/// `recforge train` of the generated `DeepFM_synthetic` with a small MLP for one epoch, plus
/// `extra` arguments.
pub fn train_small(d: &Path, extra: &[&str]) -> (bool, String, String) {
    let mut args = vec![
        "--threads",
        "2",
        "train",
        "--config",
        "gen",
        "--expid",
        "DeepFM_synthetic",
        "--set",
        "epochs=1",
        "--set",
        "hidden_units=[16,16]",
    ];
    args.extend_from_slice(extra);
    recforge(&args, d)
}

/// A `recforge serve` child process on a free loopback port, killed on drop.
pub struct Server {
    pub child: Child,
    pub base: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn start_server(cwd: &Path, model: &Path, extra: &[&str]) -> Server {
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

/// POSTs `body` as JSON; the status and the JSON answer (null when it is not JSON).
pub async fn post_json(
    c: &reqwest::Client,
    url: String,
    body: serde_json::Value,
) -> (u16, serde_json::Value) {
    let resp = c.post(url).json(&body).send().await.unwrap();
    (
        resp.status().as_u16(),
        resp.json().await.unwrap_or(serde_json::Value::Null),
    )
}

/// The item ids of a `/v1/recommend` or `/v1/similar_items` answer, best first.
pub fn recommended_items(v: &serde_json::Value) -> Vec<String> {
    v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["item"].as_str().unwrap().to_string())
        .collect()
}
