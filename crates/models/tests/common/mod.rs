//! What the reference tests share: reading a fixture's number lists.

use serde_json::Value;

/// A JSON list of numbers as f32.
pub fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .expect("a list")
        .iter()
        .map(|x| x.as_f64().expect("a number") as f32)
        .collect()
}
