//! `recforge embed` and `recforge search`: sentence vectors from the in-process text encoder,
//! and exact nearest neighbours over them.

use anyhow::{bail, Context, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use recforge_data::reader::read_column;
use recforge_nn::Tensor;
use recforge_text::search::{top_k, Metric};
use recforge_text::vectors::{self, TextCache};
use recforge_text::{default_model_dir, SentenceEncoder};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(Args)]
pub struct EmbedArgs {
    /// Texts to encode: .csv/.tsv (with a header line), .parquet or .jsonl.
    #[arg(long)]
    input: PathBuf,
    /// The column (JSON key) holding the text.
    #[arg(long)]
    column: String,
    /// Where the vectors go, one row per input row: .safetensors (tensor `embeddings`) or .npy.
    #[arg(long)]
    out: PathBuf,
    /// A sentence-transformers model directory [default: $RECFORGE_MODELS/all-MiniLM-L6-v2,
    /// RECFORGE_MODELS defaulting to ./models].
    #[arg(long)]
    model: Option<PathBuf>,
    /// Texts per forward pass.
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// A cache of vectors by text hash (safetensors), read and updated: texts seen before
    /// are not encoded again.
    #[arg(long)]
    cache: Option<PathBuf>,
}

#[derive(Args)]
pub struct SearchArgs {
    /// Stored vectors (from `recforge embed`): .safetensors or .npy.
    #[arg(long)]
    vectors: PathBuf,
    /// A query text (repeatable).
    #[arg(long = "query")]
    queries: Vec<String>,
    /// A file of queries (.csv/.tsv/.parquet/.jsonl), read from `--query-column`.
    #[arg(long)]
    queries_file: Option<PathBuf>,
    #[arg(long, default_value = "text")]
    query_column: String,
    /// The file the stored vectors were made from, to print each hit's text and id.
    #[arg(long)]
    corpus: Option<PathBuf>,
    /// The corpus column holding the text.
    #[arg(long, default_value = "text")]
    corpus_column: String,
    /// The corpus column holding an id to print with each hit.
    #[arg(long)]
    id_column: Option<String>,
    /// Hits per query.
    #[arg(long, default_value_t = 10)]
    top_k: usize,
    /// Score by dot product instead of cosine similarity (for vectors that are normalised
    /// already the two agree).
    #[arg(long)]
    dot: bool,
    #[arg(long)]
    model: Option<PathBuf>,
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
}

fn load_encoder(model: &Option<PathBuf>) -> Result<SentenceEncoder> {
    let dir = model.clone().unwrap_or_else(default_model_dir);
    SentenceEncoder::load(&dir)
        .with_context(|| format!("loading the text encoder from {}", dir.display()))
}

fn progress_bar(len: usize) -> ProgressBar {
    let bar = ProgressBar::new(len as u64);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} texts {per_sec} eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar
}

/// Encodes `texts` (each distinct one once), through `cache` when given.
fn encode(
    enc: &SentenceEncoder,
    texts: &[String],
    batch_size: usize,
    cache: Option<&Path>,
) -> Result<(Tensor, usize)> {
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let mut store = match cache {
        Some(p) => TextCache::open(p, &enc.model_id, enc.dim())?,
        None => TextCache::new(&enc.model_id, enc.dim()),
    };
    let bar = progress_bar(0);
    let (vectors, encoded) = enc.encode_cached(&refs, batch_size, &mut store, |done, total| {
        bar.set_length(total as u64);
        bar.set_position(done as u64)
    })?;
    bar.finish_and_clear();
    if let Some(p) = cache {
        store.save(p)?;
    }
    Ok((vectors, encoded))
}

pub fn embed(a: EmbedArgs) -> Result<()> {
    let texts = read_column(&a.input, &a.column)?;
    if texts.is_empty() {
        bail!("{}: no rows to encode", a.input.display());
    }
    let enc = load_encoder(&a.model)?;
    let start = Instant::now();
    let (vectors, encoded) = encode(&enc, &texts, a.batch_size, a.cache.as_deref())?;
    let secs = start.elapsed().as_secs_f64();
    vectors::save(&a.out, &vectors)?;
    eprintln!(
        "{} rows -> {} ({} x {}); encoded {encoded} distinct new texts in {secs:.2}s ({:.0}/s)",
        texts.len(),
        a.out.display(),
        vectors.rows,
        vectors.cols,
        encoded as f64 / secs.max(1e-9)
    );
    Ok(())
}

pub fn search(a: SearchArgs) -> Result<()> {
    let stored = vectors::load(&a.vectors)?;
    let mut queries = a.queries.clone();
    if let Some(f) = &a.queries_file {
        queries.extend(read_column(f, &a.query_column)?);
    }
    if queries.is_empty() {
        bail!("no queries: give --query TEXT or --queries-file FILE");
    }
    let corpus = match &a.corpus {
        Some(p) => {
            let texts = read_column(p, &a.corpus_column)?;
            if texts.len() != stored.rows {
                bail!(
                    "{} has {} rows but {} holds {} vectors: not the file they were made from",
                    p.display(),
                    texts.len(),
                    a.vectors.display(),
                    stored.rows
                );
            }
            let ids = match &a.id_column {
                Some(c) => Some(read_column(p, c)?),
                None => None,
            };
            Some((texts, ids))
        }
        None => None,
    };
    let enc = load_encoder(&a.model)?;
    let (qv, _) = encode(&enc, &queries, a.batch_size, None)?;
    let metric = if a.dot { Metric::Dot } else { Metric::Cosine };
    let hits = top_k(&qv, &stored, a.top_k, metric)?;
    let mut out = std::io::stdout().lock();
    for (q, hs) in queries.iter().zip(hits) {
        let hits: Vec<serde_json::Value> = hs
            .iter()
            .map(|h| {
                let mut v = serde_json::json!({"index": h.index, "score": h.score});
                if let Some((texts, ids)) = &corpus {
                    v["text"] = texts[h.index].clone().into();
                    if let Some(ids) = ids {
                        v["id"] = ids[h.index].clone().into();
                    }
                }
                v
            })
            .collect();
        writeln!(out, "{}", serde_json::json!({"query": q, "hits": hits}))?;
    }
    Ok(())
}
