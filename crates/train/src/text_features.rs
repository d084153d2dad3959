//! `type: text` fields: each distinct text of a field (its vocabulary, which spans every split)
//! is encoded once by the sentence encoder, frozen, and enters the model as that vector times
//! a learned projection to the field's embedding size. Vectors are cached by text hash in the
//! dataset's cache directory, so a second run encodes nothing.

use crate::{Result, TrainError};
use recforge_data::EncodedDataset;
use recforge_models::Model;
use recforge_nn::Tensor;
use recforge_text::vectors::TextCache;
use recforge_text::{default_model_dir, SentenceEncoder};
use std::path::PathBuf;

/// Texts per forward pass of the encoder.
const BATCH: usize = 64;

/// The vectors of one text field: row `i` is the vector of vocabulary row `i` (padding and
/// out-of-vocabulary rows are zero).
pub struct TextVectors {
    pub field: String,
    pub vectors: Tensor,
}

/// Encodes the text fields of `ds` (recording each one's vector size in the feature map, which
/// the model's shape depends on). A dataset without text fields costs nothing.
pub fn encode_text_fields(ds: &mut EncodedDataset, log: &dyn Fn(&str)) -> Result<Vec<TextVectors>> {
    let fields: Vec<usize> = (0..ds.feature_map.fields.len())
        .filter(|&i| {
            let f = &ds.feature_map.fields[i];
            f.spec.text && f.vocab_owner == i
        })
        .collect();
    let mut out = Vec::new();
    let mut encoder: Option<(PathBuf, SentenceEncoder)> = None;
    for i in fields {
        let spec = ds.feature_map.fields[i].spec.clone();
        let dir = spec
            .text_model
            .as_ref()
            .map(PathBuf::from)
            .unwrap_or_else(default_model_dir);
        if encoder.as_ref().is_none_or(|(d, _)| *d != dir) {
            log(&format!("loading the text encoder {}", dir.display()));
            encoder = Some((dir.clone(), SentenceEncoder::load(&dir)?));
        }
        let (_, enc) = encoder.as_ref().expect("loaded above");
        let cache_path = ds.dir.join(format!("text_{}.safetensors", spec.name));
        let mut cache = TextCache::open(&cache_path, &enc.model_id, enc.dim())?;
        let vocab = &ds.feature_map.vocabs[i];
        let texts: Vec<&str> = vocab.tokens.iter().map(String::as_str).collect();
        let (encoded, fresh) = enc.encode_cached(&texts, BATCH, &mut cache, |_, _| {})?;
        if fresh > 0 {
            cache.save(&cache_path)?;
        }
        log(&format!(
            "text field `{}`: {} texts, {fresh} encoded, {} from the cache",
            spec.name,
            texts.len(),
            texts.len() - fresh
        ));
        // vocabulary rows: 0 padding, 1..=n the texts, n+1 out-of-vocabulary
        let dim = enc.dim();
        let mut vectors = Tensor::zeros(vocab.size(), dim);
        vectors.data[dim..dim * (texts.len() + 1)].copy_from_slice(&encoded.data);
        ds.feature_map.fields[i].text_dim = Some(dim);
        out.push(TextVectors {
            field: spec.name.clone(),
            vectors,
        });
    }
    Ok(out)
}

/// Builds the model of `cfg` for `ds`, its text fields encoded and set.
pub fn build_model(
    cfg: &recforge_data::ModelConfig,
    ds: &mut EncodedDataset,
    log: &dyn Fn(&str),
) -> Result<Model> {
    let text = encode_text_fields(ds, log)?;
    let mut model = recforge_models::build(cfg, &ds.feature_map)?;
    for t in &text {
        model
            .set_text_vectors(&t.field, &t.vectors)
            .map_err(TrainError::Config)?;
    }
    Ok(model)
}
