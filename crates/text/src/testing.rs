//! A tiny BERT sentence encoder (20-token vocabulary, width 8, 2 layers) with random weights,
//! for tests and examples that need the encoder's behaviour but not its knowledge.

use crate::bert::{Bert, BertConfig};
use crate::encoder::{Pooling, SentenceEncoder};
use crate::error::{io_err, Result, TextError};
use std::path::Path;

/// The words it knows (besides `[PAD] [UNK] [CLS] [SEP]`).
pub const WORDS: [&str; 16] = [
    "the", "cat", "dog", "sat", "on", "mat", "a", "red", "blue", "car", "drove", "fast", "slow",
    "bird", "flew", "home",
];

pub fn tiny_config() -> BertConfig {
    BertConfig {
        vocab_size: 4 + WORDS.len(),
        hidden_size: 8,
        num_hidden_layers: 2,
        num_attention_heads: 2,
        intermediate_size: 16,
        max_position_embeddings: 32,
        type_vocab_size: 2,
        layer_norm_eps: 1e-12,
        hidden_act: "gelu".into(),
        hidden_dropout_prob: 0.0,
        attention_probs_dropout_prob: 0.0,
    }
}

/// all-MiniLM-L6-v2's tokenizer pipeline (BERT normaliser, pre-tokenizer, WordPiece,
/// `[CLS] … [SEP]`) over the tiny vocabulary, as `tokenizer.json` text.
pub fn tiny_tokenizer_json() -> String {
    let vocab: serde_json::Map<String, serde_json::Value> = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]
        .iter()
        .chain(WORDS.iter())
        .enumerate()
        .map(|(i, w)| (w.to_string(), serde_json::json!(i)))
        .collect();
    serde_json::json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": [],
        "normalizer": {"type": "BertNormalizer", "clean_text": true, "handle_chinese_chars": true,
                       "strip_accents": null, "lowercase": true},
        "pre_tokenizer": {"type": "BertPreTokenizer"},
        "post_processor": {"type": "BertProcessing", "sep": ["[SEP]", 3], "cls": ["[CLS]", 2]},
        "decoder": null,
        "model": {"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##",
                  "max_input_chars_per_word": 100, "vocab": vocab}
    })
    .to_string()
}

/// The tiny encoder in memory: mean pooling, normalised, at most 16 tokens.
pub fn tiny_encoder(seed: u64) -> SentenceEncoder {
    let tokenizer = tiny_tokenizer_json()
        .parse()
        .expect("the tiny tokenizer's JSON is valid");
    SentenceEncoder::new(
        Bert::random(tiny_config(), seed),
        tokenizer,
        16,
        Pooling::Mean,
        true,
    )
    .expect("the tiny encoder's settings are valid")
}

/// Writes the tiny encoder as a sentence-transformers directory (what `SentenceEncoder::load`
/// and `scripts/fetch-minilm.sh` deal in).
pub fn write_tiny_model_dir(dir: &Path, seed: u64) -> Result<()> {
    let write = |name: &str, text: String| -> Result<()> {
        let p = dir.join(name);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).map_err(io_err(parent))?;
        }
        std::fs::write(&p, text).map_err(io_err(&p))
    };
    let config = serde_json::to_string_pretty(&tiny_config())
        .map_err(|e| TextError::Invalid(e.to_string()))?;
    write("config.json", config)?;
    write("tokenizer.json", tiny_tokenizer_json())?;
    write(
        "sentence_bert_config.json",
        r#"{"max_seq_length": 16, "do_lower_case": false}"#.into(),
    )?;
    write(
        "1_Pooling/config.json",
        r#"{"word_embedding_dimension": 8, "pooling_mode_mean_tokens": true}"#.into(),
    )?;
    write(
        "modules.json",
        r#"[{"idx": 0, "type": "sentence_transformers.models.Transformer"},
            {"idx": 1, "type": "sentence_transformers.models.Pooling"},
            {"idx": 2, "type": "sentence_transformers.models.Normalize"}]"#
            .into(),
    )?;
    Bert::random(tiny_config(), seed).save(&dir.join("model.safetensors"))
}
