//! The MCP JSON-RPC line handler (stdio lines and `/mcp` POST bodies): every input is let
//! through or refused with a JSON-RPC error object that serialises, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use recforge_serve::mcp::jsonrpc::{check, Verdict};

fuzz_target!(|data: &[u8]| {
    if let Verdict::Refuse(r) = check(data) {
        let text = serde_json::to_string(&r.reply).expect("a refusal serialises");
        let v: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
        assert_eq!(v["jsonrpc"], "2.0");
        assert_eq!(v["error"]["code"].as_i64(), Some(r.code));
        // an id, when there is one, is a string or an integer (or null when unreadable)
        assert!(v["id"].is_null() || v["id"].is_string() || v["id"].is_i64() || v["id"].is_u64());
    }
});
