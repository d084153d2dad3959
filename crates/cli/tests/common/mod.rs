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
