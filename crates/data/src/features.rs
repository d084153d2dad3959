//! Vocabularies and the encoding of records into fixed-width integer rows.
//!
//! Vocabularies follow FuxiCTR: fitted on the training split only; index 0 is padding, tokens
//! by descending count then token, the last index is OOV; tokens seen fewer than
//! `min_categr_count` times and the `fill_na` token map to OOV, as do unseen values later.
//! An encoded row is `[label as f32 bits, slots…]`: one slot per categorical or numeric field
//! (numeric as f32 bits), `max_len` slots per sequence field.

use crate::config::{normalize_number, DatasetConfig, FieldKind, FieldSpec, Preprocess};
use crate::error::{DataError, Result};
use crate::reader::RecordReader;
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::collections::HashMap;

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Vocab {
    /// Token of index `i + 1`.
    pub tokens: Vec<String>,
    #[serde(skip)]
    index: HashMap<String, u32>,
}

impl Vocab {
    pub fn from_counts(counts: HashMap<String, u64>, min_count: usize) -> Self {
        let mut kept: Vec<(String, u64)> = counts
            .into_iter()
            .filter(|(_, c)| *c as usize >= min_count)
            .collect();
        kept.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        let mut v = Vocab {
            tokens: kept.into_iter().map(|(t, _)| t).collect(),
            index: HashMap::new(),
        };
        v.build_index();
        v
    }

    /// Tokens `"1"..="n"` (benchmarks and tests that need a vocabulary of a given size).
    pub fn numbered(n: usize) -> Self {
        let mut v = Vocab {
            tokens: (1..=n).map(|i| i.to_string()).collect(),
            index: HashMap::new(),
        };
        v.build_index();
        v
    }

    pub fn build_index(&mut self) {
        self.index = self
            .tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), i as u32 + 1))
            .collect();
    }

    /// Rows of the embedding table: padding + tokens + OOV.
    pub fn size(&self) -> usize {
        self.tokens.len() + 2
    }

    pub fn oov(&self) -> u32 {
        self.tokens.len() as u32 + 1
    }

    pub fn lookup(&self, token: &str) -> u32 {
        self.index.get(token).copied().unwrap_or_else(|| self.oov())
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FieldInfo {
    pub spec: FieldSpec,
    /// Index of the field whose vocabulary (and embedding table) this field uses.
    pub vocab_owner: usize,
    /// Slot offset in an encoded row, after the label.
    pub offset: usize,
    pub width: usize,
    /// For a text field, the size of its sentence vectors once they are encoded.
    #[serde(default)]
    pub text_dim: Option<usize>,
}

/// The fitted encoder of a dataset: fields, vocabularies, row layout.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FeatureMap {
    pub dataset_id: String,
    pub label: String,
    pub fields: Vec<FieldInfo>,
    /// Vocabulary per field (empty for numeric fields and fields sharing another's).
    pub vocabs: Vec<Vocab>,
    /// Slots per row after the label.
    pub width: usize,
}

/// What to do with a malformed row.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum OnBadRow {
    #[default]
    Error,
    Skip,
}

/// FuxiCTR's `convert_to_bucket`.
pub fn convert_to_bucket(x: f64) -> i64 {
    if x > 2.0 {
        (x.ln().powi(2)).floor() as i64
    } else {
        x.trunc() as i64
    }
}

/// A raw cell after a string-valued preprocess (`convert_hour`, `extract_country_code`, …);
/// empty when the function finds no value (the field's `fill_na` then stands in).
fn preprocessed<'a>(spec: &FieldSpec, raw: &'a str) -> std::result::Result<Cow<'a, str>, String> {
    match spec.preprocess {
        Some(p) if p != Preprocess::ConvertToBucket => Ok(p
            .apply_text(raw)?
            .map_or(Cow::Borrowed(""), |v| Cow::Owned(v.into_owned()))),
        _ => Ok(Cow::Borrowed(raw)),
    }
}

/// The categorical token of a raw value (after preprocessing and `fill_na`).
fn categorical_token(spec: &FieldSpec, raw: &str) -> std::result::Result<String, String> {
    let raw = preprocessed(spec, raw)?;
    let raw = raw.trim();
    let v = if raw.is_empty() {
        spec.fill_na.as_str()
    } else {
        raw
    };
    if !spec.numeric_dtype {
        return Ok(v.to_string());
    }
    let x = parse_finite(v)?;
    Ok(match spec.preprocess {
        Some(Preprocess::ConvertToBucket) => convert_to_bucket(x).to_string(),
        _ => normalize_number(v),
    })
}

/// A number that must be finite in f32 (`NaN`, `inf` and overflowing values like `1e400` or
/// `1e39` are refused: one of them poisons every weight it reaches).
fn parse_finite(v: &str) -> std::result::Result<f64, String> {
    let x: f64 = v.parse().map_err(|_| format!("`{v}` is not a number"))?;
    if !x.is_finite() || !(x as f32).is_finite() {
        return Err(format!("`{v}` is not a finite number"));
    }
    Ok(x)
}

/// The value of a numeric field (`fill_na` when empty).
fn numeric_value(spec: &FieldSpec, raw: &str) -> std::result::Result<f32, String> {
    let r = preprocessed(spec, raw)?;
    let r = r.trim();
    let r = if r.is_empty() {
        spec.fill_na.as_str()
    } else {
        r
    };
    parse_finite(r).map(|x| x as f32)
}

/// The token `fill_na` stands for; borrowed for string fields, which are most fields.
fn na_token(spec: &FieldSpec) -> std::borrow::Cow<'_, str> {
    if spec.numeric_dtype {
        categorical_token(spec, "").unwrap_or_default().into()
    } else {
        spec.fill_na.as_str().into()
    }
}

fn sequence_tokens<'a>(raw: &'a str, splitter: &'a str) -> impl Iterator<Item = &'a str> {
    raw.split(splitter).map(str::trim).filter(|t| !t.is_empty())
}

/// Position of column `name` in a reader's columns.
pub fn column_index(reader: &dyn RecordReader, name: &str) -> Result<usize> {
    let cols = reader.columns();
    cols.iter().position(|c| c == name).ok_or_else(|| {
        DataError::format(
            reader.path(),
            format!("no column `{name}` (columns: {})", cols.join(", ")),
        )
    })
}

/// Position of each field's column in a reader's columns: its own, or the column its
/// preprocess derives it from.
pub fn field_indices(fields: &[FieldSpec], reader: &dyn RecordReader) -> Result<Vec<usize>> {
    let cols = reader.columns();
    fields
        .iter()
        .map(|f| {
            let sources = f.source_columns();
            if sources == [f.name.as_str()] {
                return column_index(reader, &f.name);
            }
            sources
                .iter()
                .find_map(|s| cols.iter().position(|c| c == s))
                .ok_or_else(|| {
                    DataError::format(
                        reader.path(),
                        format!(
                            "field `{}` is derived by its preprocess from column `{}`, which the \
                             file does not have (columns: {})",
                            f.name,
                            sources.join("` or `"),
                            cols.join(", ")
                        ),
                    )
                })
        })
        .collect()
}

impl FeatureMap {
    /// A map of categorical fields `f0, f1, …` whose vocabularies are the numbers below each
    /// size (benchmarks and tests that make up their batches).
    pub fn numbered_categorical(dataset_id: &str, vocab_sizes: &[usize]) -> Self {
        let fields = (0..vocab_sizes.len())
            .map(|i| FieldInfo {
                spec: FieldSpec {
                    name: format!("f{i}"),
                    kind: FieldKind::Categorical,
                    numeric_dtype: false,
                    preprocess: None,
                    preprocess_arg: None,
                    fill_na: String::new(),
                    min_count: 1,
                    embedding_dim: None,
                    share_embedding: None,
                    text: false,
                    text_model: None,
                },
                vocab_owner: i,
                offset: i,
                width: 1,
                text_dim: None,
            })
            .collect();
        FeatureMap {
            dataset_id: dataset_id.into(),
            label: "label".into(),
            fields,
            vocabs: vocab_sizes.iter().map(|&n| Vocab::numbered(n)).collect(),
            width: vocab_sizes.len(),
        }
    }

    /// Adds the texts of `reader`'s rows (another split) to the vocabularies of text fields.
    /// A text's vector is encoded, not learned, so a text first seen in validation or test
    /// still gets its own row — what lets text help items the training split never had.
    /// Rows that do not parse are left to the encoder to report.
    pub fn extend_text_vocabs(&mut self, reader: &mut dyn RecordReader) -> Result<()> {
        let text_fields: Vec<usize> = (0..self.fields.len())
            .filter(|&i| self.fields[i].spec.text && self.fields[i].vocab_owner == i)
            .collect();
        if text_fields.is_empty() {
            return Ok(());
        }
        let specs: Vec<FieldSpec> = text_fields
            .iter()
            .map(|&i| self.fields[i].spec.clone())
            .collect();
        let idx = field_indices(&specs, reader)?;
        let mut rec = Vec::new();
        while let Ok(Some(_)) = reader.next_record(&mut rec) {
            for ((&f, spec), &col) in text_fields.iter().zip(&specs).zip(&idx) {
                let Some(raw) = rec.get(col) else { continue };
                if let Ok(t) = categorical_token(spec, raw) {
                    let vocab = &mut self.vocabs[f];
                    if t != na_token(spec) && vocab.lookup(&t) == vocab.oov() {
                        vocab.tokens.push(t);
                        let id = vocab.tokens.len() as u32;
                        vocab
                            .index
                            .insert(vocab.tokens[id as usize - 1].clone(), id);
                    }
                }
            }
        }
        Ok(())
    }

    /// Fits vocabularies on the training split, streaming it once.
    pub fn fit(
        cfg: &DatasetConfig,
        reader: &mut dyn RecordReader,
        on_bad: OnBadRow,
    ) -> Result<(Self, u64)> {
        let specs = &cfg.fields;
        let owner: Vec<usize> = specs
            .iter()
            .enumerate()
            .map(|(i, f)| {
                f.share_embedding
                    .as_ref()
                    .and_then(|s| specs.iter().position(|g| &g.name == s))
                    .unwrap_or(i)
            })
            .collect();
        let label_idx = column_index(reader, &cfg.raw.label_col.name)?;
        let idx = field_indices(specs, reader)?;
        let na: Vec<String> = specs.iter().map(|s| na_token(s).into_owned()).collect();
        let mut counts: Vec<HashMap<String, u64>> = vec![HashMap::new(); specs.len()];
        let mut rec = Vec::new();
        let mut skipped = 0u64;
        while let Some(line) = crate::reader::next_record(reader, &mut rec, on_bad, &mut skipped)? {
            let mut row_tokens: Vec<(usize, String)> = Vec::new();
            // a row the encoder will refuse must not count towards the vocabularies either
            let mut bad = Self::parse_label(&rec[label_idx])
                .err()
                .map(|m| (cfg.raw.label_col.name.clone(), m));
            for (i, spec) in specs.iter().enumerate() {
                if bad.is_some() {
                    break;
                }
                let raw = &rec[idx[i]];
                match &spec.kind {
                    FieldKind::Categorical => match categorical_token(spec, raw) {
                        Ok(t) if t != na[i] => row_tokens.push((owner[i], t)),
                        Ok(_) => {}
                        Err(msg) => {
                            bad = Some((spec.name.clone(), msg));
                            break;
                        }
                    },
                    FieldKind::Sequence { splitter, .. } => {
                        row_tokens.extend(
                            sequence_tokens(raw, splitter)
                                .filter(|t| *t != na[i])
                                .map(|t| (owner[i], t.to_string())),
                        );
                    }
                    FieldKind::Numeric => {
                        if let Err(msg) = numeric_value(spec, raw) {
                            bad = Some((spec.name.clone(), msg));
                        }
                    }
                }
            }
            match bad {
                Some((field, msg)) if on_bad == OnBadRow::Error => {
                    return Err(DataError::BadRow {
                        path: reader.path().to_path_buf(),
                        line,
                        field,
                        msg,
                    })
                }
                Some(_) => skipped += 1,
                None => {
                    for (o, t) in row_tokens {
                        *counts[o].entry(t).or_insert(0) += 1;
                    }
                }
            }
        }
        let mut fields = Vec::new();
        let mut vocabs = Vec::new();
        let mut offset = 0;
        for (i, (spec, c)) in specs.iter().zip(counts).enumerate() {
            let width = match spec.kind {
                FieldKind::Sequence { max_len, .. } => max_len,
                _ => 1,
            };
            let vocab = if owner[i] == i && spec.kind != FieldKind::Numeric {
                Vocab::from_counts(c, spec.min_count)
            } else {
                Vocab::default()
            };
            vocabs.push(vocab);
            fields.push(FieldInfo {
                spec: spec.clone(),
                vocab_owner: owner[i],
                offset,
                width,
                text_dim: None,
            });
            offset += width;
        }
        Ok((
            FeatureMap {
                dataset_id: cfg.dataset_id.clone(),
                label: cfg.raw.label_col.name.clone(),
                fields,
                vocabs,
                width: offset,
            },
            skipped,
        ))
    }

    pub fn vocab_of(&self, field: usize) -> &Vocab {
        &self.vocabs[self.fields[field].vocab_owner]
    }

    /// Rebuilds lookup indexes after deserializing.
    pub fn build_indexes(&mut self) {
        self.vocabs.iter_mut().for_each(Vocab::build_index);
    }

    pub fn field_index(&self, name: &str) -> Option<usize> {
        self.fields.iter().position(|f| f.spec.name == name)
    }

    /// Encodes one record's field values (`values[i]` for field `i`) into `out`
    /// (`width` slots). On a malformed value returns `(field name, message)`.
    pub fn encode_fields<S: AsRef<str>>(
        &self,
        values: &[S],
        out: &mut [u32],
    ) -> std::result::Result<(), (String, String)> {
        for (i, f) in self.fields.iter().enumerate() {
            let raw = values[i].as_ref();
            let slots = &mut out[f.offset..f.offset + f.width];
            match &f.spec.kind {
                FieldKind::Categorical => {
                    let tok =
                        categorical_token(&f.spec, raw).map_err(|m| (f.spec.name.clone(), m))?;
                    let v = self.vocab_of(i);
                    slots[0] = if tok == na_token(&f.spec) {
                        v.oov()
                    } else {
                        v.lookup(&tok)
                    };
                }
                FieldKind::Numeric => {
                    let x = numeric_value(&f.spec, raw).map_err(|m| (f.spec.name.clone(), m))?;
                    slots[0] = x.to_bits();
                }
                FieldKind::Sequence {
                    max_len,
                    splitter,
                    pad_post,
                } => {
                    let v = self.vocab_of(i);
                    let ids: Vec<u32> = sequence_tokens(raw, splitter)
                        .map(|t| v.lookup(t))
                        .collect();
                    // FuxiCTR truncates on the padding side: `pre` keeps the last max_len
                    // tokens, `post` the first
                    let ids = if *pad_post {
                        &ids[..ids.len().min(*max_len)]
                    } else {
                        &ids[ids.len().saturating_sub(*max_len)..]
                    };
                    slots.fill(0);
                    if *pad_post {
                        slots[..ids.len()].copy_from_slice(ids);
                    } else {
                        slots[max_len - ids.len()..].copy_from_slice(ids);
                    }
                }
            }
        }
        Ok(())
    }

    /// Parses a click label for binary cross-entropy: a number in [0, 1], with `-1` read as 0
    /// (libSVM's negative class). Anything else (`2`, `NaN`, `-3`) is outside the loss's
    /// domain and refused.
    pub fn parse_label(raw: &str) -> std::result::Result<f32, String> {
        let v = raw.trim();
        let x = parse_finite(v)? as f32;
        if x == -1.0 {
            return Ok(0.0);
        }
        if !(0.0..=1.0).contains(&x) {
            return Err(format!(
                "label `{v}` is outside [0, 1] (binary cross-entropy; -1 is read as 0)"
            ));
        }
        Ok(x)
    }

    pub fn num_fields(&self) -> usize {
        self.fields.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucketing_matches_fuxictr() {
        assert_eq!(convert_to_bucket(0.0), 0);
        assert_eq!(convert_to_bucket(2.0), 2);
        assert_eq!(convert_to_bucket(3.0), 1); // ln(3)^2 = 1.207
        assert_eq!(convert_to_bucket(100.0), 21); // ln(100)^2 = 21.2
        assert_eq!(convert_to_bucket(-1.0), -1);
    }

    #[test]
    fn vocab_orders_by_count_then_token_and_drops_rare() {
        let counts = HashMap::from([
            ("b".to_string(), 3),
            ("a".to_string(), 3),
            ("c".to_string(), 5),
            ("rare".to_string(), 1),
        ]);
        let v = Vocab::from_counts(counts, 2);
        assert_eq!(v.tokens, ["c", "a", "b"]);
        assert_eq!(v.lookup("c"), 1);
        assert_eq!(v.lookup("rare"), 4);
        assert_eq!(v.oov(), 4);
        assert_eq!(v.size(), 5);
    }
}
