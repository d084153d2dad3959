use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {msg}")]
    Config { path: PathBuf, msg: String },
    /// A malformed record; `field` is "-" when the whole row is at fault (e.g. column count).
    #[error("{path}:{line}: {}{msg}", field_prefix(.field))]
    BadRow {
        path: PathBuf,
        line: u64,
        field: String,
        msg: String,
    },
    #[error("{path}: {msg}")]
    Format { path: PathBuf, msg: String },
    #[error("{0}")]
    Other(String),
}

impl DataError {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        DataError::Io {
            path: path.into(),
            source,
        }
    }
    pub fn config(path: impl Into<PathBuf>, msg: impl Into<String>) -> Self {
        DataError::Config {
            path: path.into(),
            msg: msg.into(),
        }
    }
    pub fn format(path: impl Into<PathBuf>, msg: impl Into<String>) -> Self {
        DataError::Format {
            path: path.into(),
            msg: msg.into(),
        }
    }
}

fn field_prefix(field: &str) -> String {
    if field == "-" {
        String::new()
    } else {
        format!("field `{field}`: ")
    }
}

pub type Result<T, E = DataError> = std::result::Result<T, E>;
