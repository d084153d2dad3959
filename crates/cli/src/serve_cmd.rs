//! `recforge serve` and `recforge mcp`: the serving crate behind a tokio runtime.

use anyhow::{Context, Result};
use clap::Args;
use recforge_serve::conn::Timeouts;
use recforge_serve::{BatcherConfig, Engine, Limits, McpHttpOptions, ServeOptions};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

#[derive(Args)]
pub struct ServeArgs {
    /// A checkpoint (.safetensors) or a run directory.
    #[arg(long)]
    model: PathBuf,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    addr: String,
    /// File holding the bearer token for /v1/admin/* (else $RECFORGE_ADMIN_TOKEN; without
    /// either, the admin routes are off).
    #[arg(long)]
    admin_token_file: Option<PathBuf>,
    #[command(flatten)]
    tuning: Tuning,
    /// Largest request body, in MiB (larger: 413).
    #[arg(long, default_value_t = 16)]
    body_limit_mib: usize,
    /// Do not serve the MCP tools at /mcp.
    #[arg(long)]
    no_mcp: bool,
    /// A browser origin allowed on /mcp besides loopback and the bound address
    /// (`https://app.example.com:443`; `:*` for any port). Repeatable. Other origins get 403.
    #[arg(long = "mcp-allowed-origin", value_name = "ORIGIN")]
    mcp_allowed_origins: Vec<String>,
    /// Most MCP sessions open at once; an `initialize` beyond it gets 503.
    #[arg(long, default_value_t = 64)]
    mcp_max_sessions: usize,
    /// Seconds after which an unused MCP session is closed.
    #[arg(long, default_value_t = 300)]
    mcp_session_idle_secs: u64,
    /// Require the admin bearer token on /mcp too.
    #[arg(long)]
    mcp_require_token: bool,
    /// Seconds a client may take to send a request's headers (also the longest a kept-alive
    /// connection waits for its next request).
    #[arg(long, default_value_t = 10)]
    header_read_timeout_secs: u64,
    /// Seconds without a byte read or written after which a connection is closed.
    #[arg(long, default_value_t = 60)]
    idle_timeout_secs: u64,
    /// On SIGTERM or Ctrl-C, seconds to let requests in flight finish before exiting.
    #[arg(long, default_value_t = 30)]
    drain_timeout_secs: u64,
}

#[derive(Args)]
pub struct McpArgs {
    /// A checkpoint (.safetensors) or a run directory.
    #[arg(long)]
    model: PathBuf,
    #[command(flatten)]
    tuning: Tuning,
}

#[derive(Args)]
struct Tuning {
    /// Rows at which a micro-batch is closed.
    #[arg(long, default_value_t = 4096)]
    max_batch_rows: usize,
    /// Longest a request waits for concurrent ones to join its batch (µs).
    #[arg(long, default_value_t = 1000)]
    batch_wait_us: u64,
    /// Most instances per predict request and candidates per rank request.
    #[arg(long, default_value_t = 10_000)]
    max_instances: usize,
}

impl Tuning {
    fn engine(&self, model: &Path) -> Result<Arc<Engine>> {
        let batching = BatcherConfig {
            max_rows: self.max_batch_rows,
            max_wait: Duration::from_micros(self.batch_wait_us),
            ..BatcherConfig::default()
        };
        let limits = Limits {
            max_instances: self.max_instances,
        };
        Ok(Arc::new(Engine::open(model, batching, limits)?))
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// The admin token: the file's first line (its line ending dropped), else
/// `$RECFORGE_ADMIN_TOKEN`. The token is compared byte for byte, and HTTP drops whitespace
/// around a header value, so a token with whitespace in it could never match: refused.
fn admin_token(file: Option<&Path>) -> Result<Option<String>> {
    let token = match file {
        Some(f) => {
            let text = std::fs::read_to_string(f)
                .with_context(|| format!("reading the admin token from {}", f.display()))?;
            let line = text.strip_suffix('\n').unwrap_or(&text);
            Some(line.strip_suffix('\r').unwrap_or(line).to_string())
        }
        None => std::env::var("RECFORGE_ADMIN_TOKEN").ok(),
    };
    match token {
        Some(t) if t.is_empty() => anyhow::bail!("the admin token is empty"),
        Some(t) if !t.bytes().all(|b| b.is_ascii_graphic()) => anyhow::bail!(
            "the admin token must be printable ASCII without spaces (is there trailing \
             whitespace in it?)"
        ),
        t => Ok(t),
    }
}

/// Resolves on Ctrl-C (SIGINT) or SIGTERM (what systemd and Kubernetes send).
async fn shutdown_signal() {
    #[cfg(unix)]
    let term = async {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                eprintln!("cannot listen for SIGTERM: {e}");
                std::future::pending::<()>().await
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
    eprintln!("shutting down: finishing the requests in flight");
}

pub fn serve(a: ServeArgs) -> Result<()> {
    let engine = a.tuning.engine(&a.model)?;
    let opts = ServeOptions {
        admin_token: admin_token(a.admin_token_file.as_deref())?,
        body_limit: a.body_limit_mib << 20,
        mcp: !a.no_mcp,
        mcp_http: McpHttpOptions {
            allowed_origins: a.mcp_allowed_origins.clone(),
            max_sessions: a.mcp_max_sessions,
            session_idle: Duration::from_secs(a.mcp_session_idle_secs),
            ..McpHttpOptions::default()
        },
        mcp_require_token: a.mcp_require_token,
        timeouts: Timeouts {
            header_read: Duration::from_secs(a.header_read_timeout_secs),
            idle: Duration::from_secs(a.idle_timeout_secs),
            drain: Duration::from_secs(a.drain_timeout_secs),
        },
    };
    if opts.mcp_require_token && opts.admin_token.is_none() {
        anyhow::bail!(
            "--mcp-require-token needs an admin token (--admin-token-file or \
            $RECFORGE_ADMIN_TOKEN)"
        );
    }
    if a.mcp_max_sessions == 0 {
        anyhow::bail!("--mcp-max-sessions must be at least 1");
    }
    for (flag, secs) in [
        ("--mcp-session-idle-secs", a.mcp_session_idle_secs),
        ("--header-read-timeout-secs", a.header_read_timeout_secs),
        ("--idle-timeout-secs", a.idle_timeout_secs),
    ] {
        if secs == 0 {
            anyhow::bail!("{flag} must be at least 1");
        }
    }
    runtime()?.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&a.addr)
            .await
            .with_context(|| format!("binding {}", a.addr))?;
        let info = engine.info();
        // the first line names the bound address (a test or script can pass port 0)
        eprintln!(
            "serving {} ({}, version {}) on http://{}{}{}",
            info.name,
            info.model,
            info.version,
            listener.local_addr()?,
            if opts.mcp { "; MCP at /mcp" } else { "" },
            if opts.admin_token.is_some() {
                "; admin routes on"
            } else {
                ""
            },
        );
        recforge_serve::serve(listener, engine, opts, shutdown_signal())
            .await
            .context("serving")
    })
}

pub fn mcp(a: McpArgs) -> Result<()> {
    let engine = a.tuning.engine(&a.model)?;
    runtime()?.block_on(recforge_serve::serve_mcp_stdio(engine))?;
    Ok(())
}
