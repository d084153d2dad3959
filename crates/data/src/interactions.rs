//! Implicit-feedback data for top-K recommendation: (user, item) interactions read from
//! DiffRec's int64 `.npy` pairs, RecBole atomic `.inter` files or MovieLens `u.data`, split into
//! train/valid/test, held as user→items and item→users CSR, with a negative sampler.
//!
//! Ids: `.npy` files hold 0-based ids that are used as they are (the id space runs to the
//! largest id over all splits); `.inter` and `u.data` hold tokens, mapped to 0-based ids in
//! order of first appearance, train first. Bad rows are errors naming file, row and field, or counted
//! skips under [`OnBadRow::Skip`].

use crate::error::{DataError, Result};
use crate::features::OnBadRow;
use rand::Rng;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// The file formats of interaction data.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InteractionFormat {
    /// NumPy `[N×2]` int64 (or int32) C-order arrays of `[user, item]` (DiffRec's splits).
    Npy,
    /// RecBole's atomic `.inter` files: a tab-separated header of `name:type` columns.
    Inter,
    /// MovieLens-100K `u.data`: `user item rating timestamp`, tab-separated, no header.
    Udata,
}

/// How one file becomes train/valid/test when the dataset names no valid/test files: per user,
/// interactions in time order (file order without timestamps), cut by `ratios` as RecBole's
/// `RS` split with `order: TO` does.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SplitSpec {
    pub ratios: [f64; 3],
}

/// A `task: topk` entry of `dataset_config.yaml`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InteractionConfig {
    pub task: String,
    pub data_format: InteractionFormat,
    /// Folder the file names are relative to; `$RECFORGE_DATA` at its start expands to the
    /// shared data folder.
    #[serde(default)]
    pub data_root: Option<String>,
    pub train_data: String,
    #[serde(default)]
    pub valid_data: Option<String>,
    #[serde(default)]
    pub test_data: Option<String>,
    /// Splits `train_data` when there are no valid/test files.
    #[serde(default)]
    pub split: Option<SplitSpec>,
    /// `.inter` columns (RecBole's `USER_ID_FIELD`, `ITEM_ID_FIELD`, `RATING_FIELD`,
    /// `TIME_FIELD`).
    #[serde(default = "default_user_field")]
    pub user_field: String,
    #[serde(default = "default_item_field")]
    pub item_field: String,
    #[serde(default = "default_rating_field")]
    pub rating_field: String,
    #[serde(default = "default_time_field")]
    pub time_field: String,
    /// Keep only interactions rated at least this (RecBole's `val_interval` on the rating).
    #[serde(default)]
    pub min_rating: Option<f64>,
}

fn default_user_field() -> String {
    "user_id".into()
}
fn default_item_field() -> String {
    "item_id".into()
}
fn default_rating_field() -> String {
    "rating".into()
}
fn default_time_field() -> String {
    "timestamp".into()
}

impl InteractionConfig {
    /// Checks what serde cannot: the task, the split, and that there is something to evaluate.
    pub fn validate(&self, source: &Path) -> Result<()> {
        let bad = |msg: String| Err(DataError::config(source, msg));
        if self.task != "topk" {
            return bad(format!(
                "task `{}` (an interaction dataset has task: topk)",
                self.task
            ));
        }
        match (&self.valid_data, &self.split) {
            (Some(_), Some(_)) => bad("give valid_data/test_data or split, not both".into()),
            (None, None) => {
                bad("no valid_data: name the valid (and test) files, or a split".into())
            }
            (None, Some(s)) => {
                let sum: f64 = s.ratios.iter().sum();
                if s.ratios.iter().any(|r| !r.is_finite() || *r < 0.0)
                    || s.ratios[0] <= 0.0
                    || sum <= 0.0
                {
                    return bad(format!(
                        "split ratios {:?} must be non-negative, train > 0",
                        s.ratios
                    ));
                }
                if self.test_data.is_some() {
                    return bad("test_data with split: the split makes the test part".into());
                }
                Ok(())
            }
            (Some(_), None) => Ok(()),
        }
    }

    /// A config for reading one file on its own, the format named by its extension (`.npy`,
    /// `.inter`; anything else is read as MovieLens `u.data`).
    pub fn for_file(path: &Path) -> Self {
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .unwrap_or("")
            .to_ascii_lowercase();
        InteractionConfig {
            task: "topk".into(),
            data_format: match ext.as_str() {
                "npy" => InteractionFormat::Npy,
                "inter" => InteractionFormat::Inter,
                _ => InteractionFormat::Udata,
            },
            data_root: None,
            train_data: path.to_string_lossy().into(),
            valid_data: None,
            test_data: None,
            split: None,
            user_field: default_user_field(),
            item_field: default_item_field(),
            rating_field: default_rating_field(),
            time_field: default_time_field(),
            min_rating: None,
        }
    }

    pub fn path(&self, file: &str) -> PathBuf {
        data_root(self.data_root.as_deref()).join(file)
    }
}

/// A dataset's `data_root` (`.` when absent), `$RECFORGE_DATA` at its start expanded to the
/// shared data folder.
pub(crate) fn data_root(root: Option<&str>) -> PathBuf {
    let root = root.unwrap_or(".");
    match root.strip_prefix("$RECFORGE_DATA") {
        Some(rest) => crate::shared_data_dir().join(rest.trim_start_matches('/')),
        None => PathBuf::from(root),
    }
}

/// Each user's items, ascending and distinct (CSR without values).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct UserItems {
    pub indptr: Vec<usize>,
    pub items: Vec<u32>,
}

impl UserItems {
    /// From (row, col) pairs over `rows` rows; duplicates are kept once.
    pub fn from_pairs(rows: usize, pairs: &[(u32, u32)]) -> Self {
        let mut counts = vec![0usize; rows + 1];
        for &(r, _) in pairs {
            counts[r as usize + 1] += 1;
        }
        for r in 0..rows {
            counts[r + 1] += counts[r];
        }
        let mut fill = counts.clone();
        let mut items = vec![0u32; pairs.len()];
        for &(r, c) in pairs {
            items[fill[r as usize]] = c;
            fill[r as usize] += 1;
        }
        let mut indptr = vec![0usize; rows + 1];
        let mut out = Vec::with_capacity(items.len());
        for r in 0..rows {
            let row = &mut items[counts[r]..counts[r + 1]];
            row.sort_unstable();
            let start = out.len();
            for &c in row.iter() {
                if out.len() == start || *out.last().expect("a previous item") != c {
                    out.push(c);
                }
            }
            indptr[r + 1] = out.len();
        }
        UserItems { indptr, items: out }
    }

    pub fn rows(&self) -> usize {
        self.indptr.len().saturating_sub(1)
    }

    pub fn row(&self, r: u32) -> &[u32] {
        let r = r as usize;
        &self.items[self.indptr[r]..self.indptr[r + 1]]
    }

    pub fn contains(&self, r: u32, c: u32) -> bool {
        self.row(r).binary_search(&c).is_ok()
    }

    pub fn nnz(&self) -> usize {
        self.items.len()
    }

    /// The sorted union of two rows.
    pub fn union_row(&self, other: &UserItems, r: u32) -> Vec<u32> {
        let mut v: Vec<u32> = self.row(r).iter().chain(other.row(r)).copied().collect();
        v.sort_unstable();
        v.dedup();
        v
    }

    /// Row/column swapped (item → users).
    pub fn transpose(&self, cols: usize) -> UserItems {
        let mut pairs = Vec::with_capacity(self.nnz());
        for r in 0..self.rows() {
            pairs.extend(self.row(r as u32).iter().map(|&c| (c, r as u32)));
        }
        UserItems::from_pairs(cols, &pairs)
    }
}

/// A loaded interaction dataset.
#[derive(Clone, Debug)]
pub struct Interactions {
    pub n_users: usize,
    pub n_items: usize,
    /// Training interactions in file order (duplicates kept, as RecBole keeps them).
    pub train_pairs: Vec<(u32, u32)>,
    /// The timestamp of each of `train_pairs`, where the data has them (empty otherwise).
    pub train_times: Vec<f64>,
    pub train: UserItems,
    pub valid: UserItems,
    pub test: UserItems,
    /// The original token of each user and item id (`.inter`/`u.data`), empty for `.npy`.
    pub user_tokens: Vec<String>,
    pub item_tokens: Vec<String>,
    /// Rows passed over under `OnBadRow::Skip`, per split.
    pub skipped: [u64; 3],
}

impl Interactions {
    /// Each item's number of training interactions (distinct users).
    pub fn item_popularity(&self) -> Vec<u32> {
        let mut c = vec![0u32; self.n_items];
        for &i in &self.train.items {
            c[i as usize] += 1;
        }
        c
    }

    /// Each user's training interactions in time order, grouped by user (file order breaks ties
    /// and stands in where the data has no timestamps).
    pub fn train_in_time_order(&self) -> Vec<(u32, u32)> {
        let mut order: Vec<usize> = (0..self.train_pairs.len()).collect();
        let time = |k: usize| self.train_times.get(k).copied().unwrap_or(0.0);
        order.sort_by(|&a, &b| {
            self.train_pairs[a]
                .0
                .cmp(&self.train_pairs[b].0)
                .then(time(a).total_cmp(&time(b)))
                .then(a.cmp(&b))
        });
        order.into_iter().map(|k| self.train_pairs[k]).collect()
    }

    /// The item → users CSR of the training interactions.
    pub fn item_users(&self) -> UserItems {
        self.train.transpose(self.n_items)
    }

    /// A short summary for logs.
    pub fn describe(&self) -> String {
        format!(
            "{} users × {} items; interactions train {} / valid {} / test {}",
            self.n_users,
            self.n_items,
            self.train_pairs.len(),
            self.valid.nnz(),
            self.test.nnz()
        )
    }
}

/// A raw interaction as read: tokens (numeric ids for `.npy`), optional rating and time, and
/// the line (array row) it came from.
#[derive(Clone, Debug, PartialEq)]
pub struct RawInteraction {
    pub user: String,
    pub item: String,
    pub rating: Option<f64>,
    pub time: Option<f64>,
    pub line: u64,
}

type RawRow = RawInteraction;

/// Reads one interaction file as `cfg` describes its format and columns (`min_rating`
/// applied); under [`OnBadRow::Skip`] malformed rows are counted in `skipped`.
pub fn read_interaction_file(
    path: &Path,
    cfg: &InteractionConfig,
    on_bad: OnBadRow,
    skipped: &mut u64,
) -> Result<Vec<RawInteraction>> {
    let mut rows = match cfg.data_format {
        InteractionFormat::Npy => read_npy_rows(path)?,
        _ => read_delimited(path, cfg, on_bad, skipped)?,
    };
    if let Some(min) = cfg.min_rating {
        rows.retain(|r| r.rating.is_some_and(|v| v >= min));
    }
    Ok(rows)
}

fn bad_row(path: &Path, line: u64, field: &str, msg: impl Into<String>) -> DataError {
    DataError::BadRow {
        path: path.to_path_buf(),
        line,
        field: field.into(),
        msg: msg.into(),
    }
}

/// A parsed `.npy` file: its dtype, shape and the bytes of its data (C order).
struct NpyArray {
    descr: String,
    dims: Vec<usize>,
    bytes: Vec<u8>,
    data_start: usize,
}

impl NpyArray {
    fn data(&self) -> &[u8] {
        &self.bytes[self.data_start..]
    }
}

/// Reads a `.npy` file's header (versions 1–3, C order only).
fn read_npy(path: &Path) -> Result<NpyArray> {
    let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
    let fmt = |m: String| DataError::format(path, m);
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err(fmt("not a .npy file (no \\x93NUMPY magic)".into()));
    }
    let (header_len, start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 if bytes.len() >= 12 => (
            u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
            12,
        ),
        v => return Err(fmt(format!("unsupported .npy version {v}"))),
    };
    let header = bytes
        .get(start..start + header_len)
        .and_then(|h| std::str::from_utf8(h).ok())
        .ok_or_else(|| fmt("truncated or non-text .npy header".into()))?;
    let field = |key: &str| -> Option<&str> {
        let at = header.find(&format!("'{key}'"))? + key.len() + 2;
        let rest = header[at..].trim_start().strip_prefix(':')?.trim_start();
        Some(rest)
    };
    let descr = field("descr")
        .and_then(|r| r.strip_prefix('\''))
        .and_then(|r| r.split('\'').next())
        .ok_or_else(|| fmt("no descr in the .npy header".into()))?
        .to_string();
    if field("fortran_order").is_some_and(|r| r.starts_with("True")) {
        return Err(fmt(
            "Fortran-order arrays are not supported; save with C order".into(),
        ));
    }
    let shape = field("shape")
        .and_then(|r| r.strip_prefix('('))
        .and_then(|r| r.split(')').next())
        .ok_or_else(|| fmt("no shape in the .npy header".into()))?;
    let dims: Vec<usize> = shape
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().map_err(|_| fmt(format!("bad shape ({shape})"))))
        .collect::<Result<_>>()?;
    Ok(NpyArray {
        descr,
        dims,
        bytes,
        data_start: start + header_len,
    })
}

/// Checks that `a` holds `count` values of `width` bytes.
fn npy_size(path: &Path, a: &NpyArray, count: usize, width: usize) -> Result<()> {
    if a.data().len() != count * width {
        return Err(DataError::format(
            path,
            format!(
                "{} data bytes for shape {:?} of {}: the file is truncated or padded",
                a.data().len(),
                a.dims,
                a.descr
            ),
        ));
    }
    Ok(())
}

/// Reads a NumPy `[N×2]` integer array; the row number in errors is the array row (1-based).
pub fn read_npy_pairs(path: &Path) -> Result<Vec<(i64, i64)>> {
    let a = read_npy(path)?;
    let fmt = |m: String| DataError::format(path, m);
    let width = match a.descr.as_str() {
        "<i8" => 8,
        "<i4" => 4,
        other => {
            return Err(fmt(format!(
                "dtype {other}: interaction pairs must be little-endian int64 or int32 (<i8, <i4)"
            )))
        }
    };
    if a.dims.len() != 2 || a.dims[1] != 2 {
        return Err(fmt(format!(
            "shape {:?}: expected (N, 2) [user, item] pairs",
            a.dims
        )));
    }
    npy_size(path, &a, a.dims[0] * 2, width)?;
    let value = |c: &[u8]| -> i64 {
        if width == 8 {
            i64::from_le_bytes(c.try_into().expect("8 bytes"))
        } else {
            i32::from_le_bytes(c.try_into().expect("4 bytes")) as i64
        }
    };
    Ok(a.data()
        .chunks_exact(2 * width)
        .map(|pair| (value(&pair[..width]), value(&pair[width..])))
        .collect())
}

/// Reads a NumPy `[rows × cols]` float array (`<f4` or `<f8`) as f32, row-major; a NaN or
/// infinite value is an error naming its row and column.
pub fn read_npy_matrix(path: &Path) -> Result<(usize, usize, Vec<f32>)> {
    let a = read_npy(path)?;
    let fmt = |m: String| DataError::format(path, m);
    if a.dims.len() != 2 {
        return Err(fmt(format!("shape {:?}: expected a 2-d array", a.dims)));
    }
    let (rows, cols) = (a.dims[0], a.dims[1]);
    let values: Vec<f32> = match a.descr.as_str() {
        "<f4" => {
            npy_size(path, &a, rows * cols, 4)?;
            a.data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
                .collect()
        }
        "<f8" => {
            npy_size(path, &a, rows * cols, 8)?;
            a.data()
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")) as f32)
                .collect()
        }
        other => {
            return Err(fmt(format!(
                "dtype {other}: expected little-endian float32 or float64 (<f4, <f8)"
            )))
        }
    };
    if let Some(k) = values.iter().position(|v| !v.is_finite()) {
        return Err(fmt(format!(
            "row {}, column {}: {} is not a finite number",
            k / cols.max(1) + 1,
            k % cols.max(1) + 1,
            values[k]
        )));
    }
    Ok((rows, cols, values))
}

/// Writes a `[rows × cols]` float32 array as a version-1 `.npy` file, atomically.
pub fn write_npy_matrix(path: &Path, rows: usize, cols: usize, values: &[f32]) -> Result<()> {
    assert_eq!(values.len(), rows * cols, "write_npy_matrix: shape");
    let mut header =
        format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({rows}, {cols}), }}");
    // the magic, version and length take 10 bytes; the header ends in a newline at a multiple of 64
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut out = Vec::with_capacity(10 + header.len() + 4 * values.len());
    out.extend_from_slice(b"\x93NUMPY\x01\x00");
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    for v in values {
        out.extend_from_slice(&v.to_le_bytes());
    }
    crate::cache::write_atomic(path, &out)
}

fn read_npy_rows(path: &Path) -> Result<Vec<RawRow>> {
    Ok(read_npy_pairs(path)?
        .into_iter()
        .enumerate()
        .map(|(i, (u, it))| RawRow {
            user: u.to_string(),
            item: it.to_string(),
            rating: None,
            time: None,
            line: i as u64 + 1,
        })
        .collect())
}

/// Reads a tab-separated interaction file: `.inter` (header of `name:type` columns) or
/// `u.data` (fixed columns, no header).
fn read_delimited(
    path: &Path,
    cfg: &InteractionConfig,
    on_bad: OnBadRow,
    skipped: &mut u64,
) -> Result<Vec<RawRow>> {
    let text = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
    let mut lines = text
        .split(|&b| b == b'\n')
        .enumerate()
        .map(|(i, l)| (i as u64 + 1, l));
    let (ucol, icol, rcol, tcol, ncols) = match cfg.data_format {
        InteractionFormat::Udata => (0, 1, Some(2), Some(3), 4),
        _ => {
            let (_, header) = lines.next().ok_or_else(|| {
                DataError::format(path, "empty file: an .inter file starts with a header")
            })?;
            let header = std::str::from_utf8(header)
                .map_err(|_| bad_row(path, 1, "-", "the header is not UTF-8"))?;
            let names: Vec<&str> = header
                .trim_end_matches('\r')
                .split('\t')
                .map(|c| c.split(':').next().unwrap_or(c))
                .collect();
            let find = |n: &str| names.iter().position(|c| *c == n);
            let need = |n: &str| {
                find(n).ok_or_else(|| {
                    DataError::format(
                        path,
                        format!("no column `{n}` in the header ({})", names.join(", ")),
                    )
                })
            };
            (
                need(&cfg.user_field)?,
                need(&cfg.item_field)?,
                find(&cfg.rating_field),
                find(&cfg.time_field),
                names.len(),
            )
        }
    };
    if cfg.min_rating.is_some() && rcol.is_none() {
        return Err(DataError::format(
            path,
            format!(
                "min_rating is set but there is no `{}` column",
                cfg.rating_field
            ),
        ));
    }
    let mut rows = Vec::new();
    for (line, raw) in lines {
        let parsed = (|| -> Result<Option<RawRow>> {
            let s = std::str::from_utf8(raw).map_err(|_| bad_row(path, line, "-", "not UTF-8"))?;
            let s = s.trim_end_matches('\r');
            if s.trim().is_empty() {
                return Ok(None);
            }
            let cols: Vec<&str> = s.split('\t').collect();
            if cols.len() != ncols {
                return Err(bad_row(
                    path,
                    line,
                    "-",
                    format!("{} columns, expected {ncols}", cols.len()),
                ));
            }
            let number = |c: Option<usize>, name: &str| -> Result<Option<f64>> {
                let Some(c) = c else { return Ok(None) };
                let v: f64 = cols[c].trim().parse().map_err(|_| {
                    bad_row(path, line, name, format!("`{}` is not a number", cols[c]))
                })?;
                if !v.is_finite() {
                    return Err(bad_row(
                        path,
                        line,
                        name,
                        format!("`{}` is not finite", cols[c]),
                    ));
                }
                Ok(Some(v))
            };
            let (user, item) = (cols[ucol].trim(), cols[icol].trim());
            if user.is_empty() || item.is_empty() {
                let f = if user.is_empty() {
                    &cfg.user_field
                } else {
                    &cfg.item_field
                };
                return Err(bad_row(path, line, f, "empty id"));
            }
            Ok(Some(RawRow {
                user: user.to_string(),
                item: item.to_string(),
                rating: number(rcol, &cfg.rating_field)?,
                time: number(tcol, &cfg.time_field)?,
                line,
            }))
        })();
        match parsed {
            Ok(Some(r)) => rows.push(r),
            Ok(None) => {}
            Err(DataError::BadRow { .. }) if on_bad == OnBadRow::Skip => *skipped += 1,
            Err(e) => return Err(e),
        }
    }
    Ok(rows)
}

/// Maps tokens (or, for `.npy`, numeric ids) to dense 0-based ids.
struct IdSpace {
    numeric: bool,
    index: HashMap<String, u32>,
    tokens: Vec<String>,
    max_id: i64,
}

impl IdSpace {
    fn new(numeric: bool) -> Self {
        IdSpace {
            numeric,
            index: HashMap::new(),
            tokens: Vec::new(),
            max_id: -1,
        }
    }

    fn id(&mut self, tok: &str, path: &Path, line: u64, field: &str) -> Result<u32> {
        if self.numeric {
            let v: i64 = tok
                .parse()
                .map_err(|_| bad_row(path, line, field, format!("`{tok}` is not an integer id")))?;
            if v < 0 {
                return Err(bad_row(path, line, field, format!("negative id {v}")));
            }
            if v >= u32::MAX as i64 {
                return Err(bad_row(
                    path,
                    line,
                    field,
                    format!("id {v} is out of range (below {})", u32::MAX),
                ));
            }
            self.max_id = self.max_id.max(v);
            return Ok(v as u32);
        }
        if let Some(&i) = self.index.get(tok) {
            return Ok(i);
        }
        let i = self.tokens.len() as u32;
        self.index.insert(tok.to_string(), i);
        self.tokens.push(tok.to_string());
        Ok(i)
    }

    fn len(&self) -> usize {
        if self.numeric {
            (self.max_id + 1) as usize
        } else {
            self.tokens.len()
        }
    }
}

/// RecBole's `_calcu_split_ids`: how many of `total` go to each part.
fn split_counts(total: usize, ratios: &[f64; 3]) -> [usize; 3] {
    let sum: f64 = ratios.iter().sum();
    let r: Vec<f64> = ratios.iter().map(|x| x / sum).collect();
    let mut cnt = [0usize; 3];
    for i in 0..3 {
        cnt[i] = (r[i] * total as f64) as usize;
    }
    cnt[0] = total - cnt[1] - cnt[2];
    for i in 1..3 {
        if cnt[0] <= 1 {
            break;
        }
        let exp = r[3 - i] * total as f64;
        if 0.0 < exp && exp < 1.0 {
            cnt[3 - i] += 1;
            cnt[0] -= 1;
        }
    }
    cnt
}

/// Loads a `task: topk` dataset. `source` is the config file (for messages).
pub fn load_interactions(
    cfg: &InteractionConfig,
    source: &Path,
    on_bad: OnBadRow,
) -> Result<Interactions> {
    cfg.validate(source)?;
    let numeric = cfg.data_format == InteractionFormat::Npy;
    let mut skipped = [0u64; 3];
    let read = |file: &str, skipped: &mut u64| -> Result<(PathBuf, Vec<RawRow>)> {
        let path = cfg.path(file);
        let rows = read_interaction_file(&path, cfg, on_bad, skipped)?;
        Ok((path, rows))
    };
    let mut files: Vec<(PathBuf, Vec<RawRow>)> = Vec::new();
    files.push(read(&cfg.train_data, &mut skipped[0])?);
    if let Some(v) = &cfg.valid_data {
        files.push(read(v, &mut skipped[1])?);
        if let Some(t) = &cfg.test_data {
            files.push(read(t, &mut skipped[2])?);
        }
    }
    let (mut users, mut items) = (IdSpace::new(numeric), IdSpace::new(numeric));
    let mut parts: [Vec<(u32, u32)>; 3] = Default::default();
    let mut lines: [Vec<(u64, usize)>; 3] = Default::default();
    for (k, (path, rows)) in files.iter().enumerate() {
        for r in rows {
            let u = users.id(&r.user, path, r.line, &cfg.user_field)?;
            let i = items.id(&r.item, path, r.line, &cfg.item_field)?;
            parts[k].push((u, i));
            lines[k].push((r.line, k));
        }
    }
    let mut times: Vec<Option<f64>> = files[0].1.iter().map(|r| r.time).collect();
    if let Some(spec) = &cfg.split {
        // per user, in time order (file order breaks ties and stands in without timestamps)
        let rows = &files[0].1;
        let all = std::mem::take(&mut parts[0]);
        let mut by_user: Vec<Vec<usize>> = vec![Vec::new(); users.len()];
        for (k, &(u, _)) in all.iter().enumerate() {
            by_user[u as usize].push(k);
        }
        let mut out: [Vec<(u32, u32)>; 3] = Default::default();
        for ks in &mut by_user {
            ks.sort_by(|&a, &b| {
                rows[a]
                    .time
                    .unwrap_or(0.0)
                    .total_cmp(&rows[b].time.unwrap_or(0.0))
                    .then(a.cmp(&b))
            });
            let c = split_counts(ks.len(), &spec.ratios);
            for (n, &k) in ks.iter().enumerate() {
                let part = if n < c[0] {
                    0
                } else if n < c[0] + c[1] {
                    1
                } else {
                    2
                };
                out[part].push(all[k]);
            }
        }
        // training pairs back in file order, as a three-file dataset has them
        let mut train_order: Vec<usize> = (0..all.len()).collect();
        let train_set: std::collections::HashSet<(u32, u32)> = out[0].iter().copied().collect();
        train_order.retain(|&k| train_set.contains(&all[k]));
        train_order.dedup_by_key(|k| all[*k]);
        times = train_order.iter().map(|&k| rows[k].time).collect();
        out[0] = train_order.into_iter().map(|k| all[k]).collect();
        parts = out;
    }
    let (n_users, n_items) = (users.len(), items.len());
    if parts[0].is_empty() {
        return Err(DataError::format(&files[0].0, "no training interactions"));
    }
    let train = UserItems::from_pairs(n_users, &parts[0]);
    // a held-out row whose user has no training items cannot be ranked from a history
    for k in 1..3 {
        if parts[k].is_empty() || cfg.split.is_some() {
            continue;
        }
        let path = &files[k].0;
        let mut kept = Vec::with_capacity(parts[k].len());
        for (&(u, i), &(line, _)) in parts[k].iter().zip(&lines[k]) {
            if train.row(u).is_empty() {
                let e = bad_row(
                    path,
                    line,
                    &cfg.user_field,
                    format!("user {} has no training interactions", users.token(u)),
                );
                if on_bad == OnBadRow::Skip {
                    skipped[k] += 1;
                    continue;
                }
                return Err(e);
            }
            kept.push((u, i));
        }
        parts[k] = kept;
    }
    if parts[1].is_empty() {
        return Err(DataError::format(
            files.get(1).map(|f| &f.0).unwrap_or(&files[0].0),
            "no validation interactions",
        ));
    }
    Ok(Interactions {
        n_users,
        n_items,
        valid: UserItems::from_pairs(n_users, &parts[1]),
        test: UserItems::from_pairs(n_users, &parts[2]),
        train,
        train_pairs: std::mem::take(&mut parts[0]),
        train_times: match times.iter().all(Option::is_some) {
            true => times.into_iter().flatten().collect(),
            false => Vec::new(),
        },
        user_tokens: users.tokens,
        item_tokens: items.tokens,
        skipped,
    })
}

impl IdSpace {
    fn token(&self, id: u32) -> String {
        if self.numeric {
            id.to_string()
        } else {
            self.tokens[id as usize].clone()
        }
    }
}

/// How negatives are drawn.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NegativeDistribution {
    /// uniform over items (RecBole's `uniform`)
    Uniform,
    /// proportional to training popularity (RecBole's `popularity`)
    Popularity,
}

/// Draws items a user has not interacted with in training, by rejection.
pub struct NegativeSampler<'a> {
    train: &'a UserItems,
    n_items: usize,
    /// cumulative popularity for `Popularity`
    cumulative: Option<Vec<u64>>,
    /// `users × items` training membership bits, where that fits in [`SEEN_BITS_MAX`]: one
    /// load per rejection test instead of a binary search through the user's row
    seen: Option<Vec<u64>>,
}

/// The largest membership bitset the sampler builds (32 MiB); above it, binary search.
const SEEN_BITS_MAX: usize = 1 << 28;

impl<'a> NegativeSampler<'a> {
    /// Fails when some user has interacted with every item (no negative exists).
    pub fn new(data: &'a Interactions, dist: NegativeDistribution) -> Result<Self> {
        if let Some(u) = (0..data.n_users as u32).find(|&u| data.train.row(u).len() >= data.n_items)
        {
            return Err(DataError::Other(format!(
                "user {u} has interacted with all {} items: no negative can be sampled",
                data.n_items
            )));
        }
        let cumulative = match dist {
            NegativeDistribution::Uniform => None,
            NegativeDistribution::Popularity => {
                let mut acc = 0u64;
                let c: Vec<u64> = data
                    .item_popularity()
                    .iter()
                    .map(|&p| {
                        acc += p as u64;
                        acc
                    })
                    .collect();
                Some(c)
            }
        };
        let bits = data.n_users.saturating_mul(data.n_items);
        let seen = (bits <= SEEN_BITS_MAX).then(|| {
            let mut seen = vec![0u64; bits.div_ceil(64)];
            for u in 0..data.n_users {
                for &i in data.train.row(u as u32) {
                    let b = u * data.n_items + i as usize;
                    seen[b / 64] |= 1 << (b % 64);
                }
            }
            seen
        });
        Ok(NegativeSampler {
            train: &data.train,
            n_items: data.n_items,
            cumulative,
            seen,
        })
    }

    /// Whether `user` has `item` among its training items.
    fn is_positive(&self, user: u32, item: u32, row: &[u32]) -> bool {
        match &self.seen {
            Some(seen) => {
                let b = user as usize * self.n_items + item as usize;
                seen[b / 64] >> (b % 64) & 1 == 1
            }
            None => row.binary_search(&item).is_ok(),
        }
    }

    fn draw(&self, rng: &mut impl Rng) -> u32 {
        match &self.cumulative {
            None => rng.gen_range(0..self.n_items as u32),
            Some(c) => {
                let total = *c.last().expect("items");
                let x = rng.gen_range(0..total);
                c.partition_point(|&v| v <= x) as u32
            }
        }
    }

    /// One negative for `user`. With popularity sampling, a user whose unseen items all have
    /// zero popularity falls back to uniform draws after 1,000 rejections.
    pub fn sample(&self, user: u32, rng: &mut impl Rng) -> u32 {
        let row = self.train.row(user);
        for _ in 0..1000 {
            let i = self.draw(rng);
            if !self.is_positive(user, i, row) {
                return i;
            }
        }
        loop {
            let i = rng.gen_range(0..self.n_items as u32);
            if !self.is_positive(user, i, row) {
                return i;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    fn npy(dir: &Path, name: &str, descr: &str, shape: &str, data: &[i64]) -> PathBuf {
        let mut header =
            format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
        while (10 + header.len() + 1) % 64 != 0 {
            header.push(' ');
        }
        header.push('\n');
        let mut b = b"\x93NUMPY\x01\x00".to_vec();
        b.extend((header.len() as u16).to_le_bytes());
        b.extend(header.as_bytes());
        for &v in data {
            if descr == "<i4" {
                b.extend((v as i32).to_le_bytes());
            } else {
                b.extend(v.to_le_bytes());
            }
        }
        let p = dir.join(name);
        std::fs::write(&p, b).unwrap();
        p
    }

    fn npy_config(dir: &Path) -> InteractionConfig {
        InteractionConfig {
            task: "topk".into(),
            data_format: InteractionFormat::Npy,
            data_root: Some(dir.to_string_lossy().into()),
            train_data: "train.npy".into(),
            valid_data: Some("valid.npy".into()),
            test_data: Some("test.npy".into()),
            split: None,
            user_field: default_user_field(),
            item_field: default_item_field(),
            rating_field: default_rating_field(),
            time_field: default_time_field(),
            min_rating: None,
        }
    }

    #[test]
    fn npy_splits_load_into_csr_with_masks() {
        let d = tempfile::tempdir().unwrap();
        npy(
            d.path(),
            "train.npy",
            "<i8",
            "(4, 2)",
            &[0, 1, 0, 2, 1, 2, 0, 1],
        );
        npy(d.path(), "valid.npy", "<i4", "(1, 2)", &[1, 0]);
        npy(d.path(), "test.npy", "<i8", "(1, 2)", &[0, 3]);
        let data =
            load_interactions(&npy_config(d.path()), Path::new("cfg"), OnBadRow::Error).unwrap();
        assert_eq!((data.n_users, data.n_items), (2, 4));
        assert_eq!(data.train.row(0), &[1, 2]);
        assert_eq!(
            data.train_pairs.len(),
            4,
            "duplicates stay training samples"
        );
        assert_eq!(data.valid.row(1), &[0]);
        assert_eq!(data.train.union_row(&data.valid, 1), vec![0, 2]);
        assert_eq!(data.item_users().row(2), &[0, 1]);
        assert_eq!(data.item_popularity(), vec![0, 1, 2, 0]);
    }

    #[test]
    fn float_matrices_round_trip_through_npy_and_bad_ones_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("v.npy");
        let values = [0.5f32, -1.25, 3.0, 1e-7, 42.0, -0.0];
        write_npy_matrix(&p, 3, 2, &values).unwrap();
        // numpy's layout: magic, version 1.0, a header padded to a multiple of 64 bytes
        let bytes = std::fs::read(&p).unwrap();
        assert_eq!(&bytes[..8], b"\x93NUMPY\x01\x00");
        let header_len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
        assert_eq!((10 + header_len) % 64, 0);
        assert!(std::str::from_utf8(&bytes[10..10 + header_len])
            .unwrap()
            .contains("'shape': (3, 2)"));
        assert_eq!(read_npy_matrix(&p).unwrap(), (3, 2, values.to_vec()));
        // float64 is read as f32
        let f64_bytes: Vec<u8> = [1.5f64, 2.5].iter().flat_map(|v| v.to_le_bytes()).collect();
        let q = npy_bytes(dir.path(), "d.npy", "<f8", "(1, 2)", &f64_bytes);
        assert_eq!(read_npy_matrix(&q).unwrap(), (1, 2, vec![1.5, 2.5]));
        // a NaN, a wrong dtype, a 1-d shape and a truncated file are errors naming the file
        let nan: Vec<u8> = [1.0f32, f32::NAN]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let bad = [
            (
                npy_bytes(dir.path(), "n.npy", "<f4", "(1, 2)", &nan),
                "row 1, column 2",
            ),
            (
                npy_bytes(dir.path(), "i.npy", "<i8", "(1, 1)", &[0; 8]),
                "dtype <i8",
            ),
            (
                npy_bytes(dir.path(), "s.npy", "<f4", "(2,)", &[0; 8]),
                "2-d",
            ),
            (
                npy_bytes(dir.path(), "t.npy", "<f4", "(2, 2)", &[0; 8]),
                "truncated",
            ),
        ];
        for (path, want) in bad {
            let e = read_npy_matrix(&path).unwrap_err().to_string();
            assert!(
                e.contains(want) && e.contains(path.file_name().unwrap().to_str().unwrap()),
                "{e}"
            );
        }
    }

    /// A version-1 `.npy` with the given dtype, shape and raw data.
    fn npy_bytes(dir: &Path, name: &str, descr: &str, shape: &str, data: &[u8]) -> PathBuf {
        let header =
            format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}\n");
        let mut out = b"\x93NUMPY\x01\x00".to_vec();
        out.extend_from_slice(&(header.len() as u16).to_le_bytes());
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(data);
        let p = dir.join(name);
        std::fs::write(&p, out).unwrap();
        p
    }

    #[test]
    fn bad_npy_files_and_ids_are_errors_naming_file_and_row() {
        let d = tempfile::tempdir().unwrap();
        npy(d.path(), "valid.npy", "<i8", "(1, 2)", &[0, 0]);
        npy(d.path(), "test.npy", "<i8", "(1, 2)", &[0, 0]);
        let cfg = npy_config(d.path());
        let err = |cfg: &InteractionConfig| {
            load_interactions(cfg, Path::new("cfg"), OnBadRow::Error)
                .unwrap_err()
                .to_string()
        };
        npy(d.path(), "train.npy", "<f4", "(1, 2)", &[0]);
        assert!(err(&cfg).contains("dtype <f4"), "{}", err(&cfg));
        npy(d.path(), "train.npy", "<i8", "(2, 3)", &[0; 6]);
        assert!(err(&cfg).contains("expected (N, 2)"));
        npy(d.path(), "train.npy", "<i8", "(3, 2)", &[0, 0]);
        assert!(err(&cfg).contains("truncated"));
        npy(d.path(), "train.npy", "<i8", "(2, 2)", &[0, 1, -3, 1]);
        let e = err(&cfg);
        assert!(
            e.contains("train.npy:2") && e.contains("negative id -3"),
            "{e}"
        );
        // a held-out user without training items
        npy(d.path(), "train.npy", "<i8", "(1, 2)", &[0, 1]);
        npy(d.path(), "test.npy", "<i8", "(2, 2)", &[0, 0, 1, 1]);
        let e = err(&cfg);
        assert!(
            e.contains("test.npy:2") && e.contains("user 1 has no training"),
            "{e}"
        );
        let data = load_interactions(&cfg, Path::new("cfg"), OnBadRow::Skip).unwrap();
        assert_eq!(data.skipped, [0, 0, 1]);
    }

    #[test]
    fn inter_and_udata_files_map_tokens_and_split_by_time() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(
            d.path().join("x.inter"),
            "user_id:token\titem_id:token\trating:float\ttimestamp:float\n\
             u1\ta\t5\t30\nu1\tb\t4\t10\nu1\tc\t1\t20\nu1\td\t5\t40\nu1\te\t5\t50\n\
             u2\ta\t5\t1\nu2\tb\t5\t2\nu2\tc\t5\t3\n",
        )
        .unwrap();
        let mut cfg = npy_config(d.path());
        cfg.data_format = InteractionFormat::Inter;
        cfg.train_data = "x.inter".into();
        cfg.valid_data = None;
        cfg.test_data = None;
        cfg.split = Some(SplitSpec {
            ratios: [0.6, 0.2, 0.2],
        });
        cfg.min_rating = Some(4.0);
        let data = load_interactions(&cfg, Path::new("cfg"), OnBadRow::Error).unwrap();
        assert_eq!(data.user_tokens, vec!["u1", "u2"]);
        assert_eq!(data.item_tokens, vec!["a", "b", "d", "e", "c"]);
        // u1 keeps b(10) a(30) d(40) e(50): 4 → 2/1/1 by time
        assert_eq!(data.train.row(0), &[0, 1]);
        assert_eq!(data.valid.row(0), &[2]);
        assert_eq!(data.test.row(0), &[3]);
        // u2: 3 → 1/1/1
        assert_eq!(data.train.row(1), &[0]);

        std::fs::write(d.path().join("u.data"), "1\t10\t5\t100\n1\t11\tx\t101\n").unwrap();
        cfg.data_format = InteractionFormat::Udata;
        cfg.train_data = "u.data".into();
        cfg.min_rating = None;
        let e = load_interactions(&cfg, Path::new("cfg"), OnBadRow::Error)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("u.data:2") && e.contains("field `rating`"),
            "{e}"
        );
    }

    #[test]
    fn split_counts_follow_recbole() {
        assert_eq!(split_counts(10, &[0.8, 0.1, 0.1]), [8, 1, 1]);
        assert_eq!(split_counts(5, &[0.8, 0.1, 0.1]), [3, 1, 1]);
        assert_eq!(split_counts(1, &[0.8, 0.1, 0.1]), [1, 0, 0]);
    }

    #[test]
    fn sampler_rejects_training_items_and_is_uniform() {
        let pairs = vec![(0u32, 0u32), (0, 3), (1, 1)];
        let n_items = 6;
        let data = Interactions {
            n_users: 2,
            n_items,
            train: UserItems::from_pairs(2, &pairs),
            train_pairs: pairs,
            train_times: vec![],
            valid: UserItems::from_pairs(2, &[]),
            test: UserItems::from_pairs(2, &[]),
            user_tokens: vec![],
            item_tokens: vec![],
            skipped: [0; 3],
        };
        let s = NegativeSampler::new(&data, NegativeDistribution::Uniform).unwrap();
        let mut rng = StdRng::seed_from_u64(1);
        let draws = 40_000;
        let mut counts = vec![0f64; n_items];
        for _ in 0..draws {
            let i = s.sample(0, &mut rng);
            assert!(i != 0 && i != 3, "a training positive was sampled");
            counts[i as usize] += 1.0;
        }
        // χ² over the 4 allowed items, 3 degrees of freedom: 16.27 is the 0.1% critical value
        let expected = draws as f64 / 4.0;
        let chi2: f64 = [1, 2, 4, 5]
            .iter()
            .map(|&i| (counts[i] - expected).powi(2) / expected)
            .sum();
        assert!(chi2 < 16.27, "χ² = {chi2}");
        let p = NegativeSampler::new(&data, NegativeDistribution::Popularity).unwrap();
        // only items 0, 1, 3 are popular; user 1 can draw 0 or 3
        for _ in 0..100 {
            assert!(matches!(p.sample(1, &mut rng), 0 | 3));
        }
        // the membership bitset and the binary search (for data too large for the bitset)
        // reject the same draws, so they return the same negatives
        assert!(s.seen.is_some());
        let searched = NegativeSampler {
            seen: None,
            ..NegativeSampler::new(&data, NegativeDistribution::Uniform).unwrap()
        };
        let (mut a, mut b) = (StdRng::seed_from_u64(9), StdRng::seed_from_u64(9));
        for k in 0..1000 {
            let u = k % 2;
            assert_eq!(s.sample(u, &mut a), searched.sample(u, &mut b));
        }
    }
}
