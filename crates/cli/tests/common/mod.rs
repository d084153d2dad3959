//! Helpers shared by the binary's test files.
#![allow(dead_code)]

use std::path::Path;
use std::process::Command;

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
