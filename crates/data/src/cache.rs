//! The encoded cache: the first run streams each split once through the fitted [`FeatureMap`]
//! into a flat little-endian `u32` file under `data_root/dataset_id/`; later runs memory-map
//! it. `feature_map.json` records a hash of the config and of the source files (size, mtime)
//! and is written last, so a changed config or an interrupted build means a rebuild, never a
//! stale or half-written cache.

use crate::config::DatasetConfig;
use crate::error::{DataError, Result};
use crate::features::{column_index, field_indices, FeatureMap, OnBadRow};
use crate::reader;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Bumped whenever the encoding itself changes.
const ENCODER_VERSION: u32 = 1;

enum Storage {
    Mapped(memmap2::Mmap),
    Owned(Vec<u32>),
}

/// One encoded split: `rows × width` u32 values, column 0 the label's f32 bits.
pub struct EncodedSplit {
    pub name: String,
    pub rows: usize,
    pub width: usize,
    storage: Storage,
}

impl EncodedSplit {
    pub fn from_vec(name: &str, width: usize, data: Vec<u32>) -> Self {
        assert_eq!(data.len() % width, 0);
        EncodedSplit {
            name: name.into(),
            rows: data.len() / width,
            width,
            storage: Storage::Owned(data),
        }
    }

    fn open(path: &Path, name: &str, width: usize, rows: usize) -> Result<Self> {
        let file = std::fs::File::open(path).map_err(|e| DataError::io(path, e))?;
        let len = file.metadata().map_err(|e| DataError::io(path, e))?.len() as usize;
        if len != rows * width * 4 {
            return Err(DataError::format(
                path,
                format!("cache has {len} bytes, expected {}", rows * width * 4),
            ));
        }
        if len == 0 {
            return Ok(Self::from_vec(name, width, Vec::new()));
        }
        // SAFETY: the file is ours, written once and renamed into place; it is only read.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| DataError::io(path, e))?;
        Ok(EncodedSplit {
            name: name.into(),
            rows,
            width,
            storage: Storage::Mapped(map),
        })
    }

    /// A random `fraction` of the rows (at least one), in file order, chosen by `seed`:
    /// e.g. the labelled part of a low-label regime, where the vocabularies stay those of
    /// the whole split.
    pub fn sample_fraction(&self, fraction: f64, seed: u64) -> EncodedSplit {
        use rand::seq::SliceRandom;
        use rand::SeedableRng;
        let keep = ((self.rows as f64 * fraction).round() as usize).clamp(1, self.rows.max(1));
        let mut order: Vec<usize> = (0..self.rows).collect();
        order.shuffle(&mut rand::rngs::StdRng::seed_from_u64(seed));
        let mut picked = order[..keep.min(self.rows)].to_vec();
        picked.sort_unstable();
        let data = picked
            .iter()
            .flat_map(|&r| self.row(r).iter().copied())
            .collect();
        EncodedSplit::from_vec(&self.name, self.width, data)
    }

    pub fn data(&self) -> &[u32] {
        match &self.storage {
            Storage::Owned(v) => v,
            Storage::Mapped(m) => {
                // SAFETY: mmap regions are page-aligned and the length is a multiple of 4.
                unsafe { std::slice::from_raw_parts(m.as_ptr() as *const u32, m.len() / 4) }
            }
        }
    }

    pub fn row(&self, i: usize) -> &[u32] {
        &self.data()[i * self.width..(i + 1) * self.width]
    }

    pub fn label(&self, i: usize) -> f32 {
        f32::from_bits(self.data()[i * self.width])
    }

    pub fn labels(&self) -> Vec<f32> {
        (0..self.rows).map(|i| self.label(i)).collect()
    }
}

#[derive(Serialize, Deserialize)]
struct Meta {
    hash: String,
    rows: Vec<(String, usize)>,
    skipped: u64,
    feature_map: FeatureMap,
}

pub struct EncodedDataset {
    pub feature_map: FeatureMap,
    pub train: EncodedSplit,
    pub valid: Option<EncodedSplit>,
    pub test: Option<EncodedSplit>,
    pub dir: PathBuf,
    /// Malformed rows skipped while building (with `OnBadRow::Skip`).
    pub skipped: u64,
    /// Whether this call built the cache (false: it was reused).
    pub built: bool,
}

fn splits(cfg: &DatasetConfig) -> Vec<(&'static str, PathBuf)> {
    let mut v = vec![("train", PathBuf::from(&cfg.raw.train_data))];
    if let Some(p) = &cfg.raw.valid_data {
        v.push(("valid", PathBuf::from(p)));
    }
    if let Some(p) = &cfg.raw.test_data {
        v.push(("test", PathBuf::from(p)));
    }
    v
}

fn config_hash(cfg: &DatasetConfig) -> Result<String> {
    let mut h = Sha256::new();
    h.update(ENCODER_VERSION.to_le_bytes());
    h.update(cfg.canonical_json().as_bytes());
    for (name, path) in splits(cfg) {
        let md = std::fs::metadata(&path).map_err(|e| DataError::io(&path, e))?;
        let mtime = md
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        h.update(format!("{name}:{}:{}:{mtime};", path.display(), md.len()).as_bytes());
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// Removes a temporary file unless it was renamed into place.
struct TempGuard(Option<PathBuf>);
impl Drop for TempGuard {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Writes `bytes` to `path` atomically (temp file in the same folder, then rename).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension(format!(
        "{}.tmp",
        path.extension().and_then(|e| e.to_str()).unwrap_or("")
    ));
    let mut guard = TempGuard(Some(tmp.clone()));
    let mut f = std::fs::File::create(&tmp).map_err(|e| DataError::io(&tmp, e))?;
    f.write_all(bytes)
        .and_then(|_| f.sync_all())
        .map_err(|e| DataError::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| DataError::io(path, e))?;
    guard.0 = None;
    Ok(())
}

fn encode_split(
    cfg: &DatasetConfig,
    fmap: &FeatureMap,
    src: &Path,
    dst: &Path,
    on_bad: OnBadRow,
) -> Result<(usize, u64)> {
    let mut r = reader::open(src, cfg)?;
    let label_idx = column_index(r.as_ref(), &cfg.raw.label_col.name)?;
    let idx = field_indices(&cfg.fields, r.as_ref())?;
    let tmp = dst.with_extension("bin.tmp");
    let mut guard = TempGuard(Some(tmp.clone()));
    let file = std::fs::File::create(&tmp).map_err(|e| DataError::io(&tmp, e))?;
    let mut w = std::io::BufWriter::with_capacity(1 << 20, file);
    let mut rec = Vec::new();
    let mut values: Vec<String> = Vec::with_capacity(idx.len());
    let mut row = vec![0u32; 1 + fmap.width];
    let mut bytes = Vec::with_capacity(row.len() * 4);
    let (mut rows, mut skipped) = (0usize, 0u64);
    while let Some(line) = reader::next_record(r.as_mut(), &mut rec, on_bad, &mut skipped)? {
        let label = FeatureMap::parse_label(&rec[label_idx])
            .map_err(|m| (cfg.raw.label_col.name.clone(), m));
        values.clear();
        values.extend(idx.iter().map(|&i| std::mem::take(&mut rec[i])));
        let res = label.and_then(|l| {
            row[0] = l.to_bits();
            fmap.encode_fields(&values, &mut row[1..])
        });
        match res {
            Ok(()) => {
                bytes.clear();
                bytes.extend(row.iter().flat_map(|v| v.to_le_bytes()));
                w.write_all(&bytes).map_err(|e| DataError::io(&tmp, e))?;
                rows += 1;
            }
            Err((field, msg)) if on_bad == OnBadRow::Error => {
                return Err(DataError::BadRow {
                    path: src.to_path_buf(),
                    line,
                    field,
                    msg,
                })
            }
            Err(_) => skipped += 1,
        }
    }
    let file = w
        .into_inner()
        .map_err(|e| DataError::io(&tmp, e.into_error()))?;
    file.sync_all().map_err(|e| DataError::io(&tmp, e))?;
    std::fs::rename(&tmp, dst).map_err(|e| DataError::io(dst, e))?;
    guard.0 = None;
    Ok((rows, skipped))
}

impl EncodedDataset {
    /// Opens the cache for `cfg`, building it first if it is missing or stale.
    pub fn prepare(
        cfg: &DatasetConfig,
        on_bad: OnBadRow,
        force_rebuild: bool,
        log: &dyn Fn(&str),
    ) -> Result<Self> {
        let dir = cfg.data_root();
        let meta_path = dir.join("feature_map.json");
        let hash = config_hash(cfg)?;
        if !force_rebuild {
            if let Ok(text) = std::fs::read_to_string(&meta_path) {
                if let Ok(meta) = serde_json::from_str::<Meta>(&text) {
                    if meta.hash == hash {
                        if let Ok(ds) = Self::open_with(meta, &dir, false) {
                            log(&format!("using encoded cache {}", dir.display()));
                            return Ok(ds);
                        }
                    }
                }
            }
        }
        std::fs::create_dir_all(&dir).map_err(|e| DataError::io(&dir, e))?;
        let _ = std::fs::remove_file(&meta_path);
        log(&format!("fitting vocabularies on {}", cfg.raw.train_data));
        let mut train_reader = reader::open(Path::new(&cfg.raw.train_data), cfg)?;
        let (mut fmap, _) = FeatureMap::fit(cfg, train_reader.as_mut(), on_bad)?;
        if cfg.fields.iter().any(|f| f.text) {
            for (name, src) in splits(cfg).into_iter().filter(|(n, _)| *n != "train") {
                log(&format!("adding the texts of the {name} split"));
                fmap.extend_text_vocabs(reader::open(&src, cfg)?.as_mut())?;
            }
        }
        let mut rows = Vec::new();
        let mut skipped = 0;
        for (name, src) in splits(cfg) {
            log(&format!("encoding {name} split {}", src.display()));
            let (n, s) = encode_split(cfg, &fmap, &src, &dir.join(format!("{name}.bin")), on_bad)?;
            rows.push((name.to_string(), n));
            skipped += s;
        }
        let meta = Meta {
            hash,
            rows,
            skipped,
            feature_map: fmap,
        };
        let text = serde_json::to_string(&meta).map_err(|e| DataError::Other(e.to_string()))?;
        write_atomic(&meta_path, text.as_bytes())?;
        Self::open_with(meta, &dir, true)
    }

    fn open_with(meta: Meta, dir: &Path, built: bool) -> Result<Self> {
        let mut fmap = meta.feature_map;
        fmap.build_indexes();
        let width = 1 + fmap.width;
        let mut train = None;
        let mut valid = None;
        let mut test = None;
        for (name, n) in &meta.rows {
            let s = EncodedSplit::open(&dir.join(format!("{name}.bin")), name, width, *n)?;
            match name.as_str() {
                "train" => train = Some(s),
                "valid" => valid = Some(s),
                _ => test = Some(s),
            }
        }
        let train = train.ok_or_else(|| DataError::format(dir, "cache has no train split"))?;
        Ok(EncodedDataset {
            feature_map: fmap,
            train,
            valid,
            test,
            dir: dir.to_path_buf(),
            skipped: meta.skipped,
            built,
        })
    }
}
