//! `recforge serve` and `recforge mcp`: the serving crate behind a tokio runtime.

use anyhow::{Context, Result};
use clap::Args;
use recforge_serve::{BatcherConfig, Engine, Limits, ServeOptions};
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

fn admin_token(file: Option<&Path>) -> Result<Option<String>> {
    let token = match file {
        Some(f) => Some(
            std::fs::read_to_string(f)
                .with_context(|| format!("reading the admin token from {}", f.display()))?
                .trim()
                .to_string(),
        ),
        None => std::env::var("RECFORGE_ADMIN_TOKEN").ok(),
    };
    match token {
        Some(t) if t.is_empty() => anyhow::bail!("the admin token is empty"),
        t => Ok(t),
    }
}

async fn ctrl_c() {
    let _ = tokio::signal::ctrl_c().await;
}

pub fn serve(a: ServeArgs) -> Result<()> {
    let engine = a.tuning.engine(&a.model)?;
    let opts = ServeOptions {
        admin_token: admin_token(a.admin_token_file.as_deref())?,
        body_limit: a.body_limit_mib << 20,
        mcp: !a.no_mcp,
    };
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
        recforge_serve::serve(listener, engine, opts, ctrl_c())
            .await
            .context("serving")
    })
}

pub fn mcp(a: McpArgs) -> Result<()> {
    let engine = a.tuning.engine(&a.model)?;
    runtime()?.block_on(recforge_serve::serve_mcp_stdio(engine))?;
    Ok(())
}
