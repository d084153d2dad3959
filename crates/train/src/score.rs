//! Scoring files with a saved model: load a checkpoint, stream a file through the model's
//! fitted feature map (unseen values → OOV, as at training time) in batches.

use crate::checkpoint::{CheckpointMeta, VerifiedCheckpoint};
use crate::{Result, TrainError};
use recforge_data::features::{column_index, field_indices, OnBadRow};
use recforge_data::{reader, Batch, DataError, DatasetConfig};
use recforge_models::Model;
use std::path::{Path, PathBuf};

/// One scored batch, row by row in file order.
pub struct ScoredBatch<'a> {
    pub probs: &'a [f32],
    /// Labels, when the file has the label column.
    pub labels: Option<&'a [f32]>,
    /// The 1-based line (or Parquet row) each score belongs to: skipped rows leave gaps, so
    /// scores never shift against their inputs.
    pub lines: &'a [u64],
    /// The value of the requested id column for each row.
    pub ids: Option<&'a [String]>,
}

/// Receives each scored batch.
pub type ScoreSink<'a> = dyn FnMut(&ScoredBatch) -> Result<()> + 'a;

pub struct LoadedModel {
    pub model: Model,
    pub meta: CheckpointMeta,
    pub path: PathBuf,
}

/// Accepts a checkpoint file or a run directory (then its `model.safetensors`).
pub fn resolve_checkpoint(path: &Path) -> PathBuf {
    if path.is_dir() {
        path.join("model.safetensors")
    } else {
        path.to_path_buf()
    }
}

/// Loads a checkpoint: verified first, so no model is built from metadata that does not
/// match its checksum.
pub fn load_model(path: &Path) -> Result<LoadedModel> {
    let path = resolve_checkpoint(path);
    let ckpt = VerifiedCheckpoint::open(&path)?;
    let mut model = recforge_models::build(&ckpt.meta.model_config, &ckpt.meta.feature_map)?;
    ckpt.load_into(&mut model, None)?;
    Ok(LoadedModel {
        model,
        meta: ckpt.meta,
        path,
    })
}

/// Streams `input` through the model. `sink` gets each batch's probabilities, labels (when
/// the file has the label column), line numbers and, with `id_column`, that column's values.
/// Returns (rows scored, rows skipped).
pub fn score_file(
    lm: &LoadedModel,
    input: &Path,
    on_bad: OnBadRow,
    batch_size: usize,
    id_column: Option<&str>,
    sink: &mut ScoreSink,
) -> Result<(usize, u64)> {
    let fmap = &lm.meta.feature_map;
    let specs: Vec<_> = fmap.fields.iter().map(|f| f.spec.clone()).collect();
    let cfg = DatasetConfig::for_file(input, specs.clone(), &fmap.label)?;
    let mut r = reader::open(input, &cfg)?;
    let has_label = r.columns().iter().any(|c| c == &fmap.label);
    // scoring files need no label column
    let idx = field_indices(&specs, r.as_ref())?;
    let label_idx = if has_label {
        Some(column_index(r.as_ref(), &fmap.label)?)
    } else {
        None
    };
    let id_idx = id_column.map(|c| column_index(r.as_ref(), c)).transpose()?;
    let mut lines: Vec<u64> = Vec::new();
    let mut ids: Vec<String> = Vec::new();
    let mut rec = Vec::new();
    let mut values: Vec<String> = Vec::new();
    let mut batch = Batch {
        size: 0,
        width: fmap.width,
        labels: Vec::new(),
        slots: Vec::new(),
    };
    let mut row = vec![0u32; fmap.width];
    let (mut rows, mut skipped) = (0usize, 0u64);
    let mut flush =
        |batch: &mut Batch, lines: &mut Vec<u64>, ids: &mut Vec<String>| -> Result<()> {
            if batch.size > 0 {
                let p = lm.model.predict(batch);
                if let Some(bad) = p.iter().position(|x| !x.is_finite()) {
                    return Err(TrainError::Checkpoint {
                        path: lm.path.clone(),
                        msg: format!(
                        "the model scores line {} of {} as {} (a model with non-finite weights?)",
                        lines[bad],
                        input.display(),
                        p[bad]
                    ),
                    });
                }
                sink(&ScoredBatch {
                    probs: &p,
                    labels: has_label.then_some(&batch.labels[..]),
                    lines,
                    ids: id_idx.is_some().then_some(&ids[..]),
                })?;
                batch.size = 0;
                batch.labels.clear();
                batch.slots.clear();
                lines.clear();
                ids.clear();
            }
            Ok(())
        };
    while let Some(line) = reader::next_record(r.as_mut(), &mut rec, on_bad, &mut skipped)? {
        values.clear();
        values.extend(idx.iter().map(|&i| rec[i].clone()));
        let label = match label_idx {
            Some(l) => {
                recforge_data::FeatureMap::parse_label(&rec[l]).map_err(|m| (fmap.label.clone(), m))
            }
            None => Ok(0.0),
        };
        match label.and_then(|l| fmap.encode_fields(&values, &mut row).map(|_| l)) {
            Ok(l) => {
                batch.labels.push(l);
                batch.slots.extend_from_slice(&row);
                batch.size += 1;
                rows += 1;
                lines.push(line);
                if let Some(i) = id_idx {
                    ids.push(std::mem::take(&mut rec[i]));
                }
            }
            Err((field, msg)) if on_bad == OnBadRow::Error => {
                return Err(TrainError::Data(DataError::BadRow {
                    path: input.to_path_buf(),
                    line,
                    field,
                    msg,
                }))
            }
            Err(_) => skipped += 1,
        }
        if batch.size >= batch_size {
            flush(&mut batch, &mut lines, &mut ids)?;
        }
    }
    flush(&mut batch, &mut lines, &mut ids)?;
    Ok((rows, skipped))
}
