//! Errors as values: each maps to one HTTP status and one MCP tool error, and each names the
//! field of the request it is about.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The request is well-formed JSON but a value is unusable.
    #[error("{field}: {msg}")]
    Invalid { field: String, msg: String },
    /// The body is not JSON, or not the JSON this route takes.
    #[error("{0}")]
    Malformed(String),
    #[error("request body is larger than {limit} bytes")]
    TooLarge { limit: usize },
    /// The scoring queue is full: back off and retry.
    #[error("server is overloaded: scoring queue full")]
    Overloaded,
    #[error("cannot serve checkpoint {}: {msg}", path.display())]
    Load { path: PathBuf, msg: String },
    #[error("missing or wrong bearer token")]
    Unauthorized,
    #[error("internal error: {0}")]
    Internal(String),
}

impl ServeError {
    pub fn invalid(field: impl Into<String>, msg: impl Into<String>) -> Self {
        ServeError::Invalid {
            field: field.into(),
            msg: msg.into(),
        }
    }
}

/// `(field, message)` as the feature map reports a value it cannot encode.
impl From<(String, String)> for ServeError {
    fn from((field, msg): (String, String)) -> Self {
        ServeError::Invalid { field, msg }
    }
}
