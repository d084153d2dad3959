//! MCP over standard input/output, with each line checked ([`super::jsonrpc`]) before rmcp
//! reads it: rmcp talks to an in-memory pipe, a reader task forwards well-formed lines to it
//! and answers malformed ones itself, and one writer task owns the output so that rmcp's
//! messages and those answers are never interleaved within a line.

use super::jsonrpc::{check, Refusal, Verdict, PARSE_ERROR};
use super::McpServer;
use crate::engine::Engine;
use crate::error::ServeError;
use std::sync::Arc;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;

/// Longest line read (larger ones are answered with a parse error and skipped).
const MAX_LINE: usize = 64 << 20;

/// Serves the MCP tools over `input`/`output` until `input` closes.
pub async fn serve_lines<R, W>(engine: Arc<Engine>, input: R, output: W) -> Result<(), ServeError>
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    use rmcp::ServiceExt;
    let (ours, theirs) = tokio::io::duplex(1 << 16);
    let (from_rmcp, mut to_rmcp) = tokio::io::split(ours);
    let (out_tx, mut out_rx) = mpsc::channel::<Vec<u8>>(64);

    let writer = tokio::spawn(async move {
        let mut output = output;
        while let Some(mut line) = out_rx.recv().await {
            if line.last() != Some(&b'\n') {
                line.push(b'\n');
            }
            if output.write_all(&line).await.is_err() || output.flush().await.is_err() {
                break;
            }
        }
    });

    let rmcp_out = out_tx.clone();
    let relay = tokio::spawn(async move {
        let mut lines = BufReader::new(from_rmcp);
        loop {
            let mut line = Vec::new();
            match lines.read_until(b'\n', &mut line).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    if rmcp_out.send(line).await.is_err() {
                        break;
                    }
                }
            }
        }
    });

    /// Discards the rest of a line, a buffer at a time: however long, it is never held.
    async fn skip_line<R: tokio::io::AsyncBufRead + Unpin>(r: &mut R) -> std::io::Result<()> {
        use tokio::io::AsyncBufReadExt;
        loop {
            let buf = r.fill_buf().await?;
            if buf.is_empty() {
                return Ok(());
            }
            match buf.iter().position(|&b| b == b'\n') {
                Some(i) => {
                    r.consume(i + 1);
                    return Ok(());
                }
                None => {
                    let n = buf.len();
                    r.consume(n);
                }
            }
        }
    }

    let reader = tokio::spawn(async move {
        let mut input = BufReader::new(input);
        loop {
            let mut line = Vec::new();
            let n = match (&mut input)
                .take(MAX_LINE as u64 + 1)
                .read_until(b'\n', &mut line)
                .await
            {
                Ok(n) => n,
                Err(_) => break,
            };
            if n == 0 {
                break;
            }
            let oversized = n > MAX_LINE && line.last() != Some(&b'\n');
            if oversized && skip_line(&mut input).await.is_err() {
                break;
            }
            let text = line.strip_suffix(b"\n").unwrap_or(&line);
            let text = text.strip_suffix(b"\r").unwrap_or(text);
            if text.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let verdict = if oversized {
                Verdict::Refuse(Refusal::new(
                    PARSE_ERROR,
                    serde_json::Value::Null,
                    format!("Parse error: line longer than {MAX_LINE} bytes"),
                ))
            } else {
                check(text)
            };
            match verdict {
                Verdict::Forward => {
                    let mut msg = text.to_vec();
                    msg.push(b'\n');
                    if to_rmcp.write_all(&msg).await.is_err() {
                        break;
                    }
                }
                Verdict::Refuse(r) => {
                    let reply = serde_json::to_vec(&r.reply).unwrap_or_default();
                    if out_tx.send(reply).await.is_err() {
                        break;
                    }
                }
                Verdict::Drop => {}
            }
        }
        // end of input: closing rmcp's side ends the session
        let _ = to_rmcp.shutdown().await;
    });

    let (rmcp_read, rmcp_write) = tokio::io::split(theirs);
    let served = McpServer::new(engine).serve((rmcp_read, rmcp_write)).await;
    let result = match served {
        Ok(running) => running
            .waiting()
            .await
            .map(drop)
            .map_err(|e| ServeError::Internal(format!("MCP session failed: {e}"))),
        Err(e) => Err(ServeError::Internal(format!(
            "MCP initialization failed: {e}"
        ))),
    };
    reader.abort();
    let _ = relay.await;
    let _ = writer.await;
    result
}
