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
const ENCODER_VERSION: u32 = 2;

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

    /// Checks every slot against the feature map: labels in [0, 1], categorical and sequence
    /// ids below their vocabulary's size, numeric values finite. A cache is ours, but a disk
    /// or a hand can flip a byte; an id out of range must never reach an embedding table.
    pub fn verify(&self, fmap: &FeatureMap) -> std::result::Result<(), String> {
        use rayon::prelude::*;
        let limits: Vec<(usize, usize, Option<u32>)> = fmap
            .fields
            .iter()
            .enumerate()
            .map(|(i, f)| {
                let limit = match f.spec.kind {
                    crate::config::FieldKind::Numeric => None,
                    _ => Some(fmap.vocab_of(i).size() as u32),
                };
                (1 + f.offset, f.width, limit)
            })
            .collect();
        let check_row = |r: usize| -> std::result::Result<(), String> {
            let row = self.row(r);
            let label = f32::from_bits(row[0]);
            if !(0.0..=1.0).contains(&label) {
                return Err(format!("row {}: label {label}", r + 1));
            }
            for (f, &(offset, width, limit)) in fmap.fields.iter().zip(&limits) {
                for &v in &row[offset..offset + width] {
                    let ok = match limit {
                        Some(n) => v < n,
                        None => f32::from_bits(v).is_finite(),
                    };
                    if !ok {
                        return Err(format!(
                            "row {}: field `{}` holds {v:#x}, outside its range",
                            r + 1,
                            f.spec.name
                        ));
                    }
                }
            }
            Ok(())
        };
        (0..self.rows).into_par_iter().try_for_each(check_row)
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

/// What encoding one split did: every record read is either encoded or skipped.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SplitCounts {
    pub encoded: usize,
    pub skipped: u64,
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

fn config_hash(cfg: &DatasetConfig, on_bad: OnBadRow) -> Result<String> {
    let mut h = Sha256::new();
    h.update(ENCODER_VERSION.to_le_bytes());
    // a cache built skipping bad rows must not serve a run that asked to fail on them
    h.update(format!("{on_bad:?}").as_bytes());
    h.update(cfg.canonical_json().as_bytes());
    for (name, path) in splits(cfg) {
        // a Parquet dataset directory counts by its part files
        let files = if path.is_dir() {
            reader::parquet_parts(&path)?
        } else {
            vec![path.clone()]
        };
        for file in files {
            let md = std::fs::metadata(&file).map_err(|e| DataError::io(&file, e))?;
            let mtime = md
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map(|d| d.as_nanos())
                .unwrap_or(0);
            h.update(format!("{name}:{}:{}:{mtime};", file.display(), md.len()).as_bytes());
        }
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// Removes a temporary file unless it was renamed into place (then set it to `None`).
pub struct TempGuard(pub Option<PathBuf>);
impl Drop for TempGuard {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Writes `bytes` to `path` atomically (temp file in the same folder, then rename).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic_hooked(path, bytes, &mut |_| Ok(()))
}

/// The points of [`write_atomic`] at which a process can die.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteStage {
    /// The temporary file exists, empty.
    Created,
    /// Half the bytes are in the temporary file.
    HalfWritten,
    /// All bytes are written, not yet synced.
    Written,
    /// Synced, not yet renamed.
    Synced,
    /// Renamed into place.
    Renamed,
}

impl WriteStage {
    pub const ALL: [WriteStage; 5] = [
        WriteStage::Created,
        WriteStage::HalfWritten,
        WriteStage::Written,
        WriteStage::Synced,
        WriteStage::Renamed,
    ];
}

/// [`write_atomic`] with `hook` called at each [`WriteStage`]; an error from the hook stops
/// the write right there, leaving the files as a kill would (fault-injection tests).
pub fn write_atomic_hooked(
    path: &Path,
    bytes: &[u8],
    hook: &mut dyn FnMut(WriteStage) -> std::io::Result<()>,
) -> Result<()> {
    // the process id in the name: two writers of one path never share a temporary file
    let tmp = path.with_extension(format!(
        "{}.{}.tmp",
        path.extension().and_then(|e| e.to_str()).unwrap_or(""),
        std::process::id()
    ));
    let mut guard = TempGuard(Some(tmp.clone()));
    let io = |e| DataError::io(&tmp, e);
    let killed = |guard: &mut TempGuard, e| {
        guard.0 = None; // a killed process cleans nothing up
        DataError::io(&tmp, e)
    };
    let mut f = std::fs::File::create(&tmp).map_err(io)?;
    hook(WriteStage::Created).map_err(|e| killed(&mut guard, e))?;
    let half = bytes.len() / 2;
    f.write_all(&bytes[..half]).map_err(io)?;
    hook(WriteStage::HalfWritten).map_err(|e| killed(&mut guard, e))?;
    f.write_all(&bytes[half..]).map_err(io)?;
    hook(WriteStage::Written).map_err(|e| killed(&mut guard, e))?;
    f.sync_all().map_err(io)?;
    hook(WriteStage::Synced).map_err(|e| killed(&mut guard, e))?;
    std::fs::rename(&tmp, path).map_err(|e| DataError::io(path, e))?;
    guard.0 = None;
    // the rename itself reaches the disk with the directory's own sync
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        let _ = std::fs::File::open(dir).and_then(|d| d.sync_all());
    }
    hook(WriteStage::Renamed).map_err(|e| DataError::io(path, e))?;
    Ok(())
}

fn encode_split(
    cfg: &DatasetConfig,
    fmap: &FeatureMap,
    src: &Path,
    dst: &Path,
    on_bad: OnBadRow,
) -> Result<SplitCounts> {
    let mut r = reader::open(src, cfg)?;
    let label_idx = column_index(r.as_ref(), &cfg.raw.label_col.name)?;
    let idx = field_indices(&cfg.fields, r.as_ref())?;
    // a column several fields read (Avazu's `hour`, source of `weekday` and `weekend`) is
    // copied, not moved out of the record
    let read_twice: Vec<bool> = idx
        .iter()
        .map(|i| idx.iter().filter(|j| *j == i).count() > 1)
        .collect();
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
        values.extend(idx.iter().zip(&read_twice).map(|(&i, &twice)| {
            if twice {
                rec[i].clone()
            } else {
                std::mem::take(&mut rec[i])
            }
        }));
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
    Ok(SplitCounts {
        encoded: rows,
        skipped,
    })
}

/// An exclusive advisory lock on a directory (its `.lock` file), held until dropped.
pub struct DirLock {
    _file: std::fs::File,
}

impl DirLock {
    fn open(dir: &Path) -> Result<std::fs::File> {
        std::fs::create_dir_all(dir).map_err(|e| DataError::io(dir, e))?;
        let path = dir.join(".lock");
        std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| DataError::io(&path, e))
    }

    /// Waits for the lock, saying so through `log` when another process holds it.
    pub fn wait(dir: &Path, what: &str, log: &dyn Fn(&str)) -> Result<Self> {
        let file = Self::open(dir)?;
        let lock_path = || dir.join(".lock");
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                log(&format!(
                    "waiting for another recforge process using {what} {}",
                    dir.display()
                ));
                file.lock().map_err(|e| DataError::io(lock_path(), e))?;
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(DataError::io(lock_path(), e)),
        }
        Ok(DirLock { _file: file })
    }

    /// Takes the lock, or fails at once with a message saying who holds it.
    pub fn try_take(dir: &Path, what: &str) -> Result<Self> {
        let file = Self::open(dir)?;
        match file.try_lock() {
            Ok(()) => Ok(DirLock { _file: file }),
            Err(std::fs::TryLockError::WouldBlock) => Err(DataError::format(
                dir,
                format!(
                    "{what} is in use by another recforge process (locked: {}/.lock)",
                    dir.display()
                ),
            )),
            Err(std::fs::TryLockError::Error(e)) => Err(DataError::io(dir.join(".lock"), e)),
        }
    }
}

impl EncodedDataset {
    /// Opens the cache for `cfg`, building it first if it is missing, stale or corrupt.
    /// Another process building the same cache is waited for (a lock on the directory).
    pub fn prepare(
        cfg: &DatasetConfig,
        on_bad: OnBadRow,
        force_rebuild: bool,
        log: &dyn Fn(&str),
    ) -> Result<Self> {
        let dir = cfg.data_root();
        let _lock = DirLock::wait(&dir, "the encoded cache", log)?;
        let meta_path = dir.join("feature_map.json");
        let hash = config_hash(cfg, on_bad)?;
        if !force_rebuild {
            if let Some(ds) = Self::reuse(&meta_path, &hash, &dir, log) {
                return Ok(ds);
            }
        }
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
            let c = encode_split(cfg, &fmap, &src, &dir.join(format!("{name}.bin")), on_bad)?;
            log(&format!(
                "{name}: {} rows read, {} encoded, {} skipped",
                c.encoded as u64 + c.skipped,
                c.encoded,
                c.skipped
            ));
            if c.encoded == 0 {
                return Err(DataError::format(
                    &src,
                    format!(
                        "the {name} split has no usable rows ({} read, {} skipped)",
                        c.skipped, c.skipped
                    ),
                ));
            }
            rows.push((name.to_string(), c.encoded));
            skipped += c.skipped;
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

    /// The cache at `dir` if it was built for `hash` and its contents check out.
    fn reuse(meta_path: &Path, hash: &str, dir: &Path, log: &dyn Fn(&str)) -> Option<Self> {
        let meta: Meta = serde_json::from_str(&std::fs::read_to_string(meta_path).ok()?).ok()?;
        if meta.hash != hash {
            return None;
        }
        let ds = match Self::open_with(meta, dir, false) {
            Ok(ds) => ds,
            Err(e) => {
                log(&format!(
                    "encoded cache {} is unreadable ({e}); rebuilding",
                    dir.display()
                ));
                return None;
            }
        };
        for split in [Some(&ds.train), ds.valid.as_ref(), ds.test.as_ref()]
            .into_iter()
            .flatten()
        {
            if let Err(e) = split.verify(&ds.feature_map) {
                log(&format!(
                    "encoded cache {} is corrupt ({}.bin, {e}); rebuilding",
                    dir.display(),
                    split.name
                ));
                return None;
            }
        }
        log(&format!("using encoded cache {}", dir.display()));
        Some(ds)
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
