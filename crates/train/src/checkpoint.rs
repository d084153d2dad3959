//! Checkpoints: one safetensors file. Tensors: dense parameters as `dense.<name>`, embedding
//! tables as `<embedding>.<field>`, optimizer moments under `opt1.`/`opt2.` when saved for
//! resuming. The header's metadata holds the model config, the feature map, metrics and
//! trainer state as JSON (`recforge`), and a SHA-256 over that JSON and every tensor's name,
//! shape and bytes (`sha256`). One file written to a temporary name and renamed once: an
//! interrupted write leaves the previous checkpoint whole, and any edited byte is refused.

use crate::{Result, TrainError};
use recforge_data::cache::{write_atomic_hooked, WriteStage};
use recforge_data::{FeatureMap, ModelConfig};
use recforge_models::Model;
use recforge_nn::{DenseOptimizer, ParamStore};
use safetensors::tensor::{Dtype, TensorView};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::path::Path;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CheckpointMeta {
    pub format: String,
    pub model: String,
    pub model_config: ModelConfig,
    pub feature_map: FeatureMap,
    #[serde(default)]
    pub metrics: serde_json::Map<String, serde_json::Value>,
    /// Trainer state for `--resume` (absent in a best-model checkpoint).
    #[serde(default)]
    pub resume: Option<serde_json::Value>,
    /// SHA-256 of the whole checkpoint (this JSON and every tensor), as stored in the file.
    #[serde(skip)]
    pub tensors_sha256: String,
}

pub const FORMAT: &str = "recforge-ctr-v1";

fn to_bytes(x: &[f32]) -> Vec<u8> {
    x.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// Metadata keys in the safetensors header.
const META_KEY: &str = "recforge";
const SHA_KEY: &str = "sha256";

/// safetensors refuses to read headers above 100 MB; a checkpoint whose metadata (mostly the
/// vocabularies) would pass that is refused when saved, not when loaded.
const MAX_HEADER_BYTES: usize = 90 << 20;

/// The checksum of a checkpoint: every metadata entry but the checksum itself (sorted by key),
/// then every tensor (sorted by name) as name, dtype, shape and little-endian bytes. Offsets
/// need no cover: safetensors requires the tensors to tile the data section exactly.
fn checkpoint_sha256<'a>(
    metadata: &HashMap<String, String>,
    tensors: impl Iterator<Item = (&'a str, Dtype, &'a [usize], &'a [u8])>,
) -> String {
    use sha2::Digest;
    let put = |h: &mut sha2::Sha256, bytes: &[u8]| {
        h.update((bytes.len() as u64).to_le_bytes());
        h.update(bytes);
    };
    let mut h = sha2::Sha256::new();
    let mut entries: Vec<_> = metadata.iter().filter(|(k, _)| *k != SHA_KEY).collect();
    entries.sort();
    for (k, v) in entries {
        put(&mut h, k.as_bytes());
        put(&mut h, v.as_bytes());
    }
    let mut sorted: Vec<_> = tensors.collect();
    sorted.sort_by(|a, b| a.0.cmp(b.0));
    for (name, dtype, shape, bytes) in sorted {
        put(&mut h, name.as_bytes());
        put(&mut h, format!("{dtype:?}").as_bytes());
        h.update((shape.len() as u64).to_le_bytes());
        for d in shape {
            h.update((*d as u64).to_le_bytes());
        }
        put(&mut h, bytes);
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// Every tensor of a model under its checkpoint name, with its shape.
fn named_tensors<'a>(
    model: &'a Model,
    opt: Option<&'a DenseOptimizer>,
) -> Vec<(String, Vec<usize>, &'a [f32])> {
    let mut out = Vec::new();
    for (id, p) in model.params.iter() {
        out.push((
            format!("dense.{}", p.name),
            vec![p.value.rows, p.value.cols],
            &p.value.data[..],
        ));
        if let Some(o) = opt {
            let (s1, s2) = &o.state[id.0];
            if !s1.is_empty() {
                out.push((
                    format!("opt1.dense.{}", p.name),
                    vec![p.value.rows, p.value.cols],
                    &s1[..],
                ));
            }
            if !s2.is_empty() {
                out.push((
                    format!("opt2.dense.{}", p.name),
                    vec![p.value.rows, p.value.cols],
                    &s2[..],
                ));
            }
        }
    }
    for e in &model.embeddings {
        for (t, name) in e.tables.iter().zip(&e.table_names) {
            let key = format!("{}.{}", e.name, name);
            out.push((key.clone(), vec![t.rows, t.dim], &t.weight[..]));
            if opt.is_some() {
                if !t.state1.is_empty() {
                    out.push((format!("opt1.{key}"), vec![t.rows, t.dim], &t.state1[..]));
                }
                if !t.state2.is_empty() {
                    out.push((format!("opt2.{key}"), vec![t.rows, t.dim], &t.state2[..]));
                }
            }
        }
    }
    out
}

/// Saves `model` to `path` (`.safetensors`), config, feature map and metrics included. With
/// `opt`, optimizer moments are saved too (for resuming).
pub fn save_checkpoint(
    path: &Path,
    model: &Model,
    cfg: &ModelConfig,
    fmap: &FeatureMap,
    metrics: serde_json::Map<String, serde_json::Value>,
    opt: Option<&DenseOptimizer>,
    resume: Option<serde_json::Value>,
) -> Result<()> {
    save_checkpoint_hooked(
        path,
        model,
        cfg,
        fmap,
        metrics,
        opt,
        resume,
        &mut |_| Ok(()),
    )
}

/// [`save_checkpoint`], with `hook` called at each stage of the write: an error from it stops
/// the write there as a kill would (nothing cleaned up). For fault-injection tests.
#[doc(hidden)]
#[allow(clippy::too_many_arguments)]
pub fn save_checkpoint_hooked(
    path: &Path,
    model: &Model,
    cfg: &ModelConfig,
    fmap: &FeatureMap,
    metrics: serde_json::Map<String, serde_json::Value>,
    opt: Option<&DenseOptimizer>,
    resume: Option<serde_json::Value>,
    hook: &mut dyn FnMut(WriteStage) -> std::io::Result<()>,
) -> Result<()> {
    let bad = |msg: String| TrainError::Checkpoint {
        path: path.to_path_buf(),
        msg,
    };
    let tensors = named_tensors(model, opt);
    let meta = CheckpointMeta {
        format: FORMAT.into(),
        model: model.name.clone(),
        model_config: cfg.clone(),
        feature_map: fmap.clone(),
        metrics,
        resume,
        tensors_sha256: String::new(),
    };
    let json = serde_json::to_string(&meta).map_err(|e| bad(e.to_string()))?;
    write_tensor_file(path, FORMAT, &model.name, json, &tensors, hook)
}

/// Writes a checkpoint of any model family: `tensors` (name, shape, values) in one
/// safetensors file with `json` as its `recforge` metadata and the SHA-256 over both, to a
/// temporary name renamed once. [`TensorFile::open`] reads it back, verified.
pub fn write_tensor_file(
    path: &Path,
    format: &str,
    model: &str,
    json: String,
    tensors: &[(String, Vec<usize>, &[f32])],
    hook: &mut dyn FnMut(WriteStage) -> std::io::Result<()>,
) -> Result<()> {
    let bad = |msg: String| TrainError::Checkpoint {
        path: path.to_path_buf(),
        msg,
    };
    if json.len() > MAX_HEADER_BYTES {
        return Err(bad(format!(
            "the model's metadata takes {} MB, more than a checkpoint header holds ({} MB)",
            json.len() >> 20,
            MAX_HEADER_BYTES >> 20
        )));
    }
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d).map_err(|e| TrainError::Io {
            path: d.to_path_buf(),
            source: e,
        })?;
    }
    let bytes: Vec<(&str, &[usize], Vec<u8>)> = tensors
        .iter()
        .map(|(n, s, d)| (n.as_str(), &s[..], to_bytes(d)))
        .collect();
    let mut info = HashMap::from([
        ("format".to_string(), format.to_string()),
        ("model".to_string(), model.to_string()),
        (META_KEY.to_string(), json),
    ]);
    let sha = checkpoint_sha256(
        &info,
        bytes.iter().map(|(n, s, b)| (*n, Dtype::F32, *s, &b[..])),
    );
    info.insert(SHA_KEY.to_string(), sha);
    let views: Vec<(String, TensorView)> = bytes
        .iter()
        .map(|(n, s, b)| TensorView::new(Dtype::F32, s.to_vec(), b).map(|v| (n.to_string(), v)))
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| bad(e.to_string()))?;
    let data = safetensors::serialize(views, &Some(info)).map_err(|e| bad(e.to_string()))?;
    write_atomic_hooked(path, &data, hook)?;
    Ok(())
}

/// Memory-maps a checkpoint file.
fn map_file(path: &Path) -> Result<memmap2::Mmap> {
    let file = std::fs::File::open(path).map_err(|e| TrainError::Io {
        path: path.to_path_buf(),
        source: e,
    })?;
    // SAFETY: read-only map of a file written atomically by `save_checkpoint`.
    unsafe { memmap2::Mmap::map(&file) }.map_err(|e| TrainError::Io {
        path: path.to_path_buf(),
        source: e,
    })
}

/// The metadata of a mapped checkpoint: (parsed, every header entry, the stored checksum).
fn header_meta(
    path: &Path,
    bytes: &[u8],
) -> Result<(CheckpointMeta, HashMap<String, String>, String)> {
    let bad = |msg: String| TrainError::Checkpoint {
        path: path.to_path_buf(),
        msg,
    };
    let (_, header) = safetensors::SafeTensors::read_metadata(bytes)
        .map_err(|e| bad(format!("not a safetensors file: {e}")))?;
    let info = header.metadata().clone().unwrap_or_default();
    let json =
        info.get(META_KEY).ok_or_else(|| {
            bad("not a recforge checkpoint (no `recforge` metadata; checkpoints of recforge before \
             the single-file format must be retrained)"
            .into())
        })?;
    let sha = info
        .get(SHA_KEY)
        .ok_or_else(|| bad("the checkpoint has no checksum".into()))?;
    let mut meta: CheckpointMeta =
        serde_json::from_str(json).map_err(|e| bad(format!("not a recforge checkpoint: {e}")))?;
    if meta.format != FORMAT {
        return Err(bad(format!(
            "format `{}`, expected `{FORMAT}`",
            meta.format
        )));
    }
    meta.tensors_sha256 = sha.clone();
    meta.feature_map.build_indexes();
    let sha = sha.clone();
    Ok((meta, info, sha))
}

/// The `format` entry of a checkpoint's header (`recforge-ctr-v1`, `recforge-topk-v1`), to
/// pick the family that loads it.
pub fn checkpoint_format(path: &Path) -> Result<String> {
    let map = map_file(path)?;
    let (_, header) =
        safetensors::SafeTensors::read_metadata(&map).map_err(|e| TrainError::Checkpoint {
            path: path.to_path_buf(),
            msg: format!("not a safetensors file: {e}"),
        })?;
    Ok(header
        .metadata()
        .as_ref()
        .and_then(|m| m.get("format").cloned())
        .unwrap_or_default())
}

/// Reads a checkpoint's config, feature map and metrics (not verified: loading verifies).
pub fn read_meta(path: &Path) -> Result<CheckpointMeta> {
    let map = map_file(path)?;
    Ok(header_meta(path, &map)?.0)
}

/// The metadata and the verified, memory-mapped file of a checkpoint.
fn open_verified(path: &Path) -> Result<(CheckpointMeta, memmap2::Mmap)> {
    let map = map_file(path)?;
    let (meta, info, sha) = header_meta(path, &map)?;
    verify(path, &map, &info, &sha)?;
    Ok((meta, map))
}

/// Checks the stored checksum against the metadata and tensors of a mapped file.
fn verify(path: &Path, map: &[u8], info: &HashMap<String, String>, sha: &str) -> Result<()> {
    let st = deserialize(path, map)?;
    let tensors = st.tensors();
    let actual = checkpoint_sha256(
        info,
        tensors
            .iter()
            .map(|(n, v)| (n.as_str(), v.dtype(), v.shape(), v.data())),
    );
    if actual != sha {
        return Err(TrainError::Checkpoint {
            path: path.to_path_buf(),
            msg: "the checkpoint does not match its checksum (edited or damaged)".into(),
        });
    }
    Ok(())
}

/// A verified checkpoint of any model family ([`write_tensor_file`]'s output): its metadata
/// JSON and its tensors by name.
pub struct TensorFile {
    pub path: std::path::PathBuf,
    /// the `recforge` metadata entry
    pub json: String,
    /// the verified SHA-256 over metadata and tensors
    pub sha256: String,
    map: memmap2::Mmap,
}

impl TensorFile {
    /// Opens and verifies `path`, which must be of `format`.
    pub fn open(path: &Path, format: &str) -> Result<Self> {
        let bad = |msg: String| TrainError::Checkpoint {
            path: path.to_path_buf(),
            msg,
        };
        let map = map_file(path)?;
        let (_, header) = safetensors::SafeTensors::read_metadata(&map)
            .map_err(|e| bad(format!("not a safetensors file: {e}")))?;
        let info = header.metadata().clone().unwrap_or_default();
        let found = info.get("format").map(String::as_str).unwrap_or("none");
        if found != format {
            return Err(bad(format!("format `{found}`, expected `{format}`")));
        }
        let json = info
            .get(META_KEY)
            .ok_or_else(|| bad("no `recforge` metadata".into()))?
            .clone();
        let sha = info
            .get(SHA_KEY)
            .ok_or_else(|| bad("the checkpoint has no checksum".into()))?;
        verify(path, &map, &info, sha)?;
        Ok(TensorFile {
            path: path.to_path_buf(),
            json,
            sha256: sha.clone(),
            map,
        })
    }

    /// Tensor `name` as f32s, checked against `shape`.
    pub fn tensor(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let st = deserialize(&self.path, &self.map)?;
        fetch_tensor(&self.path, &st, name, shape)
    }

    /// The names of the tensors in the file.
    pub fn names(&self) -> Result<Vec<String>> {
        let st = deserialize(&self.path, &self.map)?;
        Ok(st.names().into_iter().cloned().collect())
    }
}

fn deserialize<'a>(path: &Path, map: &'a [u8]) -> Result<safetensors::SafeTensors<'a>> {
    safetensors::SafeTensors::deserialize(map).map_err(|e| TrainError::Checkpoint {
        path: path.to_path_buf(),
        msg: e.to_string(),
    })
}

/// Tensor `name` as f32s, checked against `shape`.
fn fetch_tensor(
    path: &Path,
    st: &safetensors::SafeTensors,
    name: &str,
    shape: &[usize],
) -> Result<Vec<f32>> {
    let t = st.tensor(name).map_err(|_| TrainError::Checkpoint {
        path: path.to_path_buf(),
        msg: format!("missing tensor `{name}`"),
    })?;
    if t.shape() != shape || t.dtype() != Dtype::F32 {
        return Err(TrainError::Checkpoint {
            path: path.to_path_buf(),
            msg: format!(
                "tensor `{name}` is {:?} {:?}, expected F32 {shape:?}",
                t.dtype(),
                t.shape()
            ),
        });
    }
    Ok(t.data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect())
}

/// The tensor names among `names` that are none of `known`, an optimizer moment (`opt1.`,
/// `opt2.`) counting as its parameter; sorted.
fn unused_tensors<'a>(
    names: impl IntoIterator<Item = &'a String>,
    known: &HashSet<String>,
) -> Vec<String> {
    let mut unused: Vec<String> = names
        .into_iter()
        .filter(|n| {
            let base = n
                .strip_prefix("opt1.")
                .or_else(|| n.strip_prefix("opt2."))
                .unwrap_or(n);
            !known.contains(base)
        })
        .cloned()
        .collect();
    unused.sort();
    unused
}

/// Refuses a checkpoint holding tensors `model` has no place for (a checkpoint of another
/// model, or an edited one): loading it would silently serve something else.
fn refuse_unused(path: &Path, st: &safetensors::SafeTensors, model: &Model) -> Result<()> {
    let known: HashSet<String> = named_tensors(model, None)
        .into_iter()
        .map(|(n, _, _)| n)
        .collect();
    let unused = unused_tensors(st.names(), &known);
    if unused.is_empty() {
        return Ok(());
    }
    Err(TrainError::Checkpoint {
        path: path.to_path_buf(),
        msg: format!(
            "{} tensor(s) are not used by model {}: {}",
            unused.len(),
            model.name,
            unused.join(", ")
        ),
    })
}

/// Initialises `model` from a pretrained checkpoint (`recforge pretrain`): every embedding
/// table and every dense parameter it shares by name, except `skip` (the click head, left
/// fresh). The feature maps must agree field by field. Returns how many tensors were loaded.
pub fn load_pretrained(
    path: &Path,
    model: &mut Model,
    fmap: &FeatureMap,
    skip: &[recforge_nn::ParamId],
) -> Result<usize> {
    let (meta, map) = open_verified(path)?;
    let theirs = &meta.feature_map;
    let mismatch = |msg: String| TrainError::Checkpoint {
        path: path.to_path_buf(),
        msg,
    };
    if theirs.fields.len() != fmap.fields.len() {
        return Err(mismatch(format!(
            "pretrained on {} fields, this dataset has {}",
            theirs.fields.len(),
            fmap.fields.len()
        )));
    }
    for (i, (a, b)) in theirs.fields.iter().zip(&fmap.fields).enumerate() {
        if a.spec.name != b.spec.name || theirs.vocab_of(i).size() != fmap.vocab_of(i).size() {
            return Err(mismatch(format!(
                "field `{}` ({} values) does not match the pretrained `{}` ({} values): \
                 pretrain and finetune on the same dataset config",
                b.spec.name,
                fmap.vocab_of(i).size(),
                a.spec.name,
                theirs.vocab_of(i).size()
            )));
        }
    }
    let st = deserialize(path, &map)?;
    let mut loaded = 0;
    // read everything first, then assign: a failure leaves the model untouched
    let mut dense = Vec::new();
    for (id, p) in model.params.iter() {
        let key = format!("dense.{}", p.name);
        if skip.contains(&id) || st.tensor(&key).is_err() {
            continue;
        }
        dense.push((
            id,
            fetch_tensor(path, &st, &key, &[p.value.rows, p.value.cols])?,
        ));
    }
    let mut tables = Vec::new();
    for (ei, e) in model.embeddings.iter().enumerate() {
        for (ti, (t, name)) in e.tables.iter().zip(&e.table_names).enumerate() {
            let key = format!("{}.{}", e.name, name);
            if st.tensor(&key).is_ok() {
                tables.push((ei, ti, fetch_tensor(path, &st, &key, &[t.rows, t.dim])?));
            }
        }
    }
    for (id, v) in dense {
        model.params.value_mut(id).data = v;
        loaded += 1;
    }
    for (ei, ti, v) in tables {
        model.embeddings[ei].tables[ti].weight = v;
        loaded += 1;
    }
    Ok(loaded)
}

/// A checkpoint whose checksum has been verified: nothing is built from its metadata before.
pub struct VerifiedCheckpoint {
    pub meta: CheckpointMeta,
    path: std::path::PathBuf,
    map: memmap2::Mmap,
}

impl VerifiedCheckpoint {
    pub fn open(path: &Path) -> Result<Self> {
        let (meta, map) = open_verified(path)?;
        Ok(VerifiedCheckpoint {
            meta,
            path: path.to_path_buf(),
            map,
        })
    }

    /// Loads the tensors into `model` (and optimizer moments into `opt` when given).
    pub fn load_into(&self, model: &mut Model, opt: Option<&mut DenseOptimizer>) -> Result<()> {
        load_tensors(&self.path, &self.map, model, opt)
    }
}

/// Loads a checkpoint into `model` (and optimizer moments into `opt` when given); returns
/// its metadata.
pub fn load_checkpoint(
    path: &Path,
    model: &mut Model,
    opt: Option<&mut DenseOptimizer>,
) -> Result<CheckpointMeta> {
    let ckpt = VerifiedCheckpoint::open(path)?;
    ckpt.load_into(model, opt)?;
    Ok(ckpt.meta)
}

fn load_tensors(
    path: &Path,
    map: &[u8],
    model: &mut Model,
    opt: Option<&mut DenseOptimizer>,
) -> Result<()> {
    let st = deserialize(path, map)?;
    refuse_unused(path, &st, model)?;
    let fetch = |name: &str, shape: &[usize]| fetch_tensor(path, &st, name, shape);
    // optimizer moments may be absent (a fresh parameter); present, they must fit
    let fetch_opt = |name: &str, shape: &[usize]| match st.tensor(name) {
        Ok(_) => fetch(name, shape).map(Some),
        Err(_) => Ok(None),
    };
    let with_opt = opt.is_some();
    // read everything first, then assign: a failure leaves the model untouched
    let mut dense = Vec::new();
    for (id, p) in model.params.iter() {
        let shape = [p.value.rows, p.value.cols];
        let key = format!("dense.{}", p.name);
        let s = if with_opt && p.trainable {
            (
                fetch_opt(&format!("opt1.{key}"), &shape)?,
                fetch_opt(&format!("opt2.{key}"), &shape)?,
            )
        } else {
            (None, None)
        };
        dense.push((id, fetch(&key, &shape)?, s));
    }
    let mut tables = Vec::new();
    for (ei, e) in model.embeddings.iter().enumerate() {
        for (ti, (t, name)) in e.tables.iter().zip(&e.table_names).enumerate() {
            let key = format!("{}.{}", e.name, name);
            let shape = [t.rows, t.dim];
            let s = if with_opt {
                (
                    fetch_opt(&format!("opt1.{key}"), &shape)?,
                    fetch_opt(&format!("opt2.{key}"), &shape)?,
                )
            } else {
                (None, None)
            };
            tables.push((ei, ti, fetch(&key, &shape)?, s));
        }
    }
    let mut opt = opt;
    for (id, v, (s1, s2)) in dense {
        model.params.value_mut(id).data = v;
        if let Some(o) = opt.as_deref_mut() {
            if let Some(s1) = s1 {
                o.state[id.0].0 = s1;
            }
            if let Some(s2) = s2 {
                o.state[id.0].1 = s2;
            }
        }
    }
    for (ei, ti, v, (s1, s2)) in tables {
        let t = &mut model.embeddings[ei].tables[ti];
        t.weight = v;
        if let Some(s1) = s1 {
            t.state1 = s1;
        }
        if let Some(s2) = s2 {
            t.state2 = s2;
        }
    }
    Ok(())
}

/// Writes a dense-parameter checkpoint (the top-K and sequential families): `meta` as its JSON
/// metadata, every parameter of `params`, and the optimizer's moments when given.
pub(crate) fn write_params_file<M: Serialize>(
    path: &Path,
    format: &str,
    model: &str,
    meta: &M,
    params: &ParamStore,
    opt: Option<&DenseOptimizer>,
) -> Result<()> {
    let json = serde_json::to_string(meta).map_err(|e| TrainError::Config(e.to_string()))?;
    let tensors = param_tensors(params, opt);
    write_tensor_file(path, format, model, json, &tensors, &mut |_| Ok(()))
}

/// Opens a verified checkpoint of `format` and parses its metadata (`family` names it in the
/// error when the metadata is not that family's).
pub(crate) fn open_params_file<M: serde::de::DeserializeOwned>(
    path: &Path,
    format: &str,
    family: &str,
) -> Result<(TensorFile, M)> {
    let file = TensorFile::open(path, format)?;
    let meta = serde_json::from_str(&file.json).map_err(|e| TrainError::Checkpoint {
        path: path.to_path_buf(),
        msg: format!("not a {family} checkpoint: {e}"),
    })?;
    Ok((file, meta))
}

/// Every parameter of `params` as a named tensor (`param.<name>`), with the optimizer's
/// moments (`opt1.…`, `opt2.…`) when given: what a dense-parameter checkpoint holds.
fn param_tensors<'p>(
    params: &'p ParamStore,
    opt: Option<&'p DenseOptimizer>,
) -> Vec<(String, Vec<usize>, &'p [f32])> {
    let mut tensors: Vec<(String, Vec<usize>, &[f32])> = Vec::new();
    for (id, p) in params.iter() {
        let shape = vec![p.value.rows, p.value.cols];
        tensors.push((format!("param.{}", p.name), shape.clone(), &p.value.data));
        if let Some(o) = opt {
            let (s1, s2) = &o.state[id.0];
            if !s1.is_empty() {
                tensors.push((format!("opt1.param.{}", p.name), shape.clone(), s1));
            }
            if !s2.is_empty() {
                tensors.push((format!("opt2.param.{}", p.name), shape, s2));
            }
        }
    }
    tensors
}

/// Reads every parameter of `params` (and the optimizer's moments, when asked) from `file`;
/// refuses tensors `model` has no place for. Nothing changes on error.
pub(crate) fn read_params(
    file: &TensorFile,
    params: &mut ParamStore,
    model: &str,
    opt: Option<&mut DenseOptimizer>,
) -> Result<()> {
    let names: Vec<(String, [usize; 2])> = params
        .iter()
        .map(|(_, p)| (p.name.clone(), [p.value.rows, p.value.cols]))
        .collect();
    let known: HashSet<String> = names.iter().map(|(n, _)| format!("param.{n}")).collect();
    let has = file.names()?;
    let unused = unused_tensors(&has, &known);
    if !unused.is_empty() {
        return Err(TrainError::Checkpoint {
            path: file.path.clone(),
            msg: format!("tensor(s) not used by model {model}: {}", unused.join(", ")),
        });
    }
    let mut values = Vec::new();
    for (name, shape) in &names {
        let key = format!("param.{name}");
        let v = file.tensor(&key, shape)?;
        let moments = if opt.is_some() {
            let get = |k: String| -> Result<Option<Vec<f32>>> {
                if has.contains(&k) {
                    file.tensor(&k, shape).map(Some)
                } else {
                    Ok(None)
                }
            };
            (get(format!("opt1.{key}"))?, get(format!("opt2.{key}"))?)
        } else {
            (None, None)
        };
        values.push((v, moments));
    }
    let mut opt = opt;
    let ids: Vec<_> = params.iter().map(|(id, _)| id).collect();
    for (id, (v, (s1, s2))) in ids.into_iter().zip(values) {
        params.value_mut(id).data = v;
        if let Some(o) = opt.as_deref_mut() {
            if let Some(s1) = s1 {
                o.state[id.0].0 = s1;
            }
            if let Some(s2) = s2 {
                o.state[id.0].1 = s2;
            }
        }
    }
    Ok(())
}
