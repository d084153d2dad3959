//! A JSON-RPC 2.0 check of each incoming MCP message before rmcp sees it, for both
//! transports. rmcp 3.11 drops unparsable stdio lines without a reply, answers a malformed
//! message with `-32600` but without its `id`, answers malformed JSON over HTTP with 415,
//! and reads a `tools/call` without a tool name as an unknown method (`-32601`). Here such
//! messages get the reply JSON-RPC 2.0 prescribes: `-32700` for text that is not JSON,
//! `-32600` (with the message's `id` when it has a usable one) for JSON that is not a
//! JSON-RPC message, and `-32602` for a known method with unusable parameters.

use rmcp::model::{CallToolRequestParams, InitializeRequestParams, PaginatedRequestParams};
use serde::de::DeserializeOwned;
use serde_json::{json, Map, Value};

pub const PARSE_ERROR: i64 = -32700;
pub const INVALID_REQUEST: i64 = -32600;
pub const INVALID_PARAMS: i64 = -32602;

/// Why a message is refused, with the JSON-RPC error object to send back.
#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    pub code: i64,
    /// The error response, ready to serialize.
    pub reply: Value,
}

impl Refusal {
    pub(crate) fn new(code: i64, id: Value, message: impl Into<String>) -> Self {
        let message = message.into();
        Refusal {
            code,
            reply: json!({
                "jsonrpc": "2.0",
                "id": id,
                "error": { "code": code, "message": message },
            }),
        }
    }
}

/// What to do with one incoming message.
#[derive(Debug, PartialEq)]
pub enum Verdict {
    /// Well-formed: hand it to rmcp.
    Forward,
    /// Answer with this error and do not forward.
    Refuse(Refusal),
    /// Malformed, but a notification: JSON-RPC forbids a reply, so drop it.
    Drop,
}

/// An id MCP accepts: a string or an integer.
fn usable_id(id: Option<&Value>) -> Option<Value> {
    match id? {
        Value::String(s) => Some(Value::String(s.clone())),
        Value::Number(n) if n.is_i64() || n.is_u64() => Some(Value::Number(n.clone())),
        _ => None,
    }
}

fn params_as<T: DeserializeOwned>(params: Option<&Value>, optional: bool) -> Result<(), String> {
    match params {
        None if optional => Ok(()),
        None => Err("missing params".into()),
        Some(p) => serde_json::from_value::<T>(p.clone())
            .map(drop)
            .map_err(|e| e.to_string()),
    }
}

/// Checks the parameters of the methods whose typed parameters rmcp would otherwise fail to
/// read (and so answer as an unknown method).
fn check_params(method: &str, params: Option<&Value>) -> Result<(), String> {
    if let Some(p) = params {
        if !p.is_object() {
            return Err("params must be an object".into());
        }
    }
    match method {
        "initialize" => params_as::<InitializeRequestParams>(params, false),
        "tools/call" => params_as::<CallToolRequestParams>(params, false),
        "tools/list" => params_as::<PaginatedRequestParams>(params, true),
        _ => Ok(()),
    }
}

/// Checks one message (a stdio line or an HTTP POST body).
pub fn check(bytes: &[u8]) -> Verdict {
    let value: Value = match serde_json::from_slice(bytes) {
        Ok(v) => v,
        Err(e) => {
            return Verdict::Refuse(Refusal::new(
                PARSE_ERROR,
                Value::Null,
                format!("Parse error: {e}"),
            ))
        }
    };
    let Value::Object(obj) = value else {
        let what = if value.is_array() {
            "batches are not supported"
        } else {
            "a message must be a JSON object"
        };
        return Verdict::Refuse(Refusal::new(
            INVALID_REQUEST,
            Value::Null,
            format!("Invalid Request: {what}"),
        ));
    };
    check_object(&obj)
}

fn check_object(obj: &Map<String, Value>) -> Verdict {
    let has_id = obj.contains_key("id");
    let id = usable_id(obj.get("id"));
    let invalid = |msg: &str| {
        Verdict::Refuse(Refusal::new(
            INVALID_REQUEST,
            id.clone().unwrap_or(Value::Null),
            format!("Invalid Request: {msg}"),
        ))
    };
    if has_id && id.is_none() {
        return invalid("`id` must be a string or an integer");
    }
    if obj.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return invalid("`jsonrpc` must be \"2.0\"");
    }
    match obj.get("method") {
        Some(Value::String(method)) => match check_params(method, obj.get("params")) {
            Ok(()) => Verdict::Forward,
            Err(_) if !has_id => Verdict::Drop,
            Err(e) => Verdict::Refuse(Refusal::new(
                INVALID_PARAMS,
                id.unwrap_or(Value::Null),
                format!("Invalid params for `{method}`: {e}"),
            )),
        },
        Some(_) => invalid("`method` must be a string"),
        // a response to a request of the server's
        None => {
            let (result, error) = (obj.contains_key("result"), obj.contains_key("error"));
            if !has_id {
                invalid("a request needs a `method`; a response needs an `id`")
            } else if result == error {
                invalid("a response carries exactly one of `result` and `error`")
            } else {
                Verdict::Forward
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(text: &str) -> (i64, Value) {
        match check(text.as_bytes()) {
            Verdict::Refuse(r) => (r.code, r.reply["id"].clone()),
            other => panic!("{text} → {other:?}"),
        }
    }

    #[test]
    fn well_formed_messages_pass() {
        for m in [
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#,
            r#"{"jsonrpc":"2.0","id":"a","method":"tools/call","params":{"name":"model_info"}}"#,
            r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
            r#"{"jsonrpc":"2.0","id":2,"result":{}}"#,
            r#"{"jsonrpc":"2.0","id":3,"method":"ping"}"#,
        ] {
            assert_eq!(check(m.as_bytes()), Verdict::Forward, "{m}");
        }
    }

    #[test]
    fn garbage_is_a_parse_error() {
        assert_eq!(refused("not json"), (PARSE_ERROR, Value::Null));
        assert_eq!(
            refused(r#"{"jsonrpc":"2.0","id":1"#),
            (PARSE_ERROR, Value::Null)
        );
    }

    #[test]
    fn invalid_requests_keep_their_id() {
        assert_eq!(
            refused(r#"{"jsonrpc":"1.0","id":7,"method":"ping"}"#),
            (INVALID_REQUEST, json!(7))
        );
        assert_eq!(
            refused(r#"{"id":"x","method":"ping"}"#),
            (INVALID_REQUEST, json!("x"))
        );
        assert_eq!(
            refused(r#"{"jsonrpc":"2.0","id":8,"method":5}"#),
            (INVALID_REQUEST, json!(8))
        );
        assert_eq!(
            refused(r#"{"jsonrpc":"2.0","id":{"a":1},"method":"ping"}"#),
            (INVALID_REQUEST, Value::Null)
        );
        assert_eq!(refused("[1,2]"), (INVALID_REQUEST, Value::Null));
        assert_eq!(refused("3"), (INVALID_REQUEST, Value::Null));
        assert_eq!(
            refused(r#"{"jsonrpc":"2.0","id":9}"#),
            (INVALID_REQUEST, json!(9))
        );
    }

    #[test]
    fn unusable_params_of_a_known_method_are_invalid_params() {
        assert_eq!(
            refused(r#"{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{}}"#),
            (INVALID_PARAMS, json!(4))
        );
        assert_eq!(
            refused(r#"{"jsonrpc":"2.0","id":5,"method":"tools/call"}"#),
            (INVALID_PARAMS, json!(5))
        );
        assert_eq!(
            refused(r#"{"jsonrpc":"2.0","id":6,"method":"tools/call","params":{"name":3}}"#),
            (INVALID_PARAMS, json!(6))
        );
        assert_eq!(
            refused(r#"{"jsonrpc":"2.0","id":6,"method":"initialize","params":{}}"#),
            (INVALID_PARAMS, json!(6))
        );
        // a notification gets no reply, even a malformed one
        assert_eq!(
            check(br#"{"jsonrpc":"2.0","method":"tools/call","params":[]}"#),
            Verdict::Drop
        );
    }
}
