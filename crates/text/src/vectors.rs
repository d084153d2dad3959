//! Vector files and the text cache. Vectors are written as safetensors (tensor `embeddings`,
//! `[rows × dim]` f32) or NumPy `.npy` (`<f4`, C order), chosen by extension; every write is
//! atomic (a temporary file renamed into place), so a failed run never leaves half a file.

use crate::error::{io_err, Result, TextError};
use recforge_nn::Tensor;
use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::io::Write;
use std::path::Path;

/// Writes `bytes` to a temporary file beside `path`, syncs it, then renames it over `path`.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp{}", std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        io_err(path)(e)
    })
}

fn le_bytes(data: &[f32]) -> Vec<u8> {
    data.iter().flat_map(|v| v.to_le_bytes()).collect()
}

fn from_le(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

fn is_npy(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("npy"))
}

/// Saves `[rows × dim]` vectors as `.npy` or (any other extension) safetensors.
pub fn save(path: &Path, vectors: &Tensor) -> Result<()> {
    let bytes = if is_npy(path) {
        npy_bytes(vectors)
    } else {
        let raw = le_bytes(&vectors.data);
        let view = TensorView::new(Dtype::F32, vec![vectors.rows, vectors.cols], &raw)
            .map_err(|e| TextError::Invalid(e.to_string()))?;
        safetensors::serialize([("embeddings", view)], &None).map_err(|e| TextError::Format {
            path: path.to_path_buf(),
            msg: e.to_string(),
        })?
    };
    write_atomic(path, &bytes)
}

fn npy_bytes(t: &Tensor) -> Vec<u8> {
    let dict = format!(
        "{{'descr': '<f4', 'fortran_order': False, 'shape': ({}, {}), }}",
        t.rows, t.cols
    );
    // magic (6) + version (2) + header length (2) + header, padded with spaces to a multiple
    // of 64 and ended by a newline
    let unpadded = 10 + dict.len() + 1;
    let header = format!(
        "{dict}{}\n",
        " ".repeat(unpadded.next_multiple_of(64) - unpadded)
    );
    let mut out = Vec::with_capacity(10 + header.len() + t.data.len() * 4);
    out.extend_from_slice(b"\x93NUMPY\x01\x00");
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(&le_bytes(&t.data));
    out
}

/// Loads vectors written by [`save`] (or by NumPy / any safetensors writer: the tensor
/// `embeddings`, else the file's only tensor, 2-D f32).
pub fn load(path: &Path) -> Result<Tensor> {
    let bytes = std::fs::read(path).map_err(io_err(path))?;
    let bad = |msg: String| TextError::Format {
        path: path.to_path_buf(),
        msg,
    };
    if is_npy(path) {
        return parse_npy(&bytes).map_err(bad);
    }
    let st = SafeTensors::deserialize(&bytes).map_err(|e| bad(e.to_string()))?;
    let names = st.names();
    let name = if names.iter().any(|n| *n == "embeddings") {
        "embeddings".to_string()
    } else if names.len() == 1 {
        names[0].clone()
    } else {
        return Err(bad(format!(
            "no tensor `embeddings` among {} tensors",
            names.len()
        )));
    };
    let view = st.tensor(&name).map_err(|e| bad(e.to_string()))?;
    match (view.dtype(), view.shape()) {
        (Dtype::F32, [rows, cols]) => Ok(Tensor::from_vec(*rows, *cols, from_le(view.data()))),
        (dtype, shape) => Err(bad(format!(
            "tensor `{name}` is {dtype:?} {shape:?}; expected 2-D F32"
        ))),
    }
}

fn parse_npy(bytes: &[u8]) -> std::result::Result<Tensor, String> {
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err("not a .npy file (bad magic)".into());
    }
    let (hlen, start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 => (
            u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
            12,
        ),
        v => return Err(format!(".npy version {v} is not supported")),
    };
    let header = std::str::from_utf8(bytes.get(start..start + hlen).ok_or("truncated header")?)
        .map_err(|_| "header is not UTF-8")?;
    if !header.contains("'<f4'") || header.contains("'fortran_order': True") {
        return Err(format!(
            "header {header:?}: only little-endian f32 in C order is read"
        ));
    }
    let shape = header
        .split("'shape':")
        .nth(1)
        .and_then(|s| s.split(['(', ')']).nth(1))
        .ok_or("header has no shape")?;
    let dims: Vec<usize> = shape
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().map_err(|_| format!("bad shape {shape:?}")))
        .collect::<std::result::Result<_, _>>()?;
    let (rows, cols) = match dims[..] {
        [r, c] => (r, c),
        [r] => (1, r),
        _ => return Err(format!("shape {dims:?}: expected 2-D")),
    };
    let data = &bytes[start + hlen..];
    if data.len() != rows * cols * 4 {
        return Err(format!(
            "{} data bytes for shape ({rows}, {cols}) of f32",
            data.len()
        ));
    }
    Ok(Tensor::from_vec(rows, cols, from_le(data)))
}

/// The cache key of a text: the first 16 bytes of its SHA-256.
pub fn text_key(text: &str) -> [u8; 16] {
    let d = Sha256::digest(text.as_bytes());
    let mut k = [0u8; 16];
    k.copy_from_slice(&d[..16]);
    k
}

/// Vectors by text hash, for one model (`model_id`); stored as safetensors (`keys` U8
/// `[n × 16]`, `vectors` F32 `[n × dim]`, the model id in the metadata).
#[derive(Clone, Debug, Default)]
pub struct TextCache {
    pub model_id: String,
    pub dim: usize,
    map: HashMap<[u8; 16], Vec<f32>>,
}

impl TextCache {
    pub fn new(model_id: &str, dim: usize) -> Self {
        TextCache {
            model_id: model_id.to_string(),
            dim,
            map: HashMap::new(),
        }
    }

    /// Opens `path` if it exists and was made by the same model; otherwise an empty cache
    /// (a cache of another model would return wrong vectors).
    pub fn open(path: &Path, model_id: &str, dim: usize) -> Result<Self> {
        let mut cache = Self::new(model_id, dim);
        if !path.exists() {
            return Ok(cache);
        }
        let bytes = std::fs::read(path).map_err(io_err(path))?;
        let bad = |msg: String| TextError::Format {
            path: path.to_path_buf(),
            msg,
        };
        let (_, meta) = SafeTensors::read_metadata(&bytes).map_err(|e| bad(e.to_string()))?;
        let same = meta
            .metadata()
            .as_ref()
            .and_then(|m| m.get("model"))
            .is_some_and(|m| m == model_id);
        if !same {
            return Ok(cache);
        }
        let st = SafeTensors::deserialize(&bytes).map_err(|e| bad(e.to_string()))?;
        let keys = st.tensor("keys").map_err(|e| bad(e.to_string()))?;
        let vecs = st.tensor("vectors").map_err(|e| bad(e.to_string()))?;
        let vals = from_le(vecs.data());
        if vals.len() != keys.data().len() / 16 * dim {
            return Err(bad(format!("vectors do not have {dim} dimensions")));
        }
        for (k, v) in keys.data().chunks_exact(16).zip(vals.chunks_exact(dim)) {
            let mut key = [0u8; 16];
            key.copy_from_slice(k);
            cache.map.insert(key, v.to_vec());
        }
        Ok(cache)
    }

    pub fn get(&self, text: &str) -> Option<&[f32]> {
        self.map.get(&text_key(text)).map(|v| &v[..])
    }

    pub fn insert(&mut self, text: &str, vector: &[f32]) {
        self.map.insert(text_key(text), vector.to_vec());
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        let mut entries: Vec<(&[u8; 16], &Vec<f32>)> = self.map.iter().collect();
        entries.sort_by_key(|(k, _)| **k);
        let keys: Vec<u8> = entries
            .iter()
            .flat_map(|(k, _)| k.iter().copied())
            .collect();
        let vals: Vec<f32> = entries
            .iter()
            .flat_map(|(_, v)| v.iter().copied())
            .collect();
        let raw = le_bytes(&vals);
        let n = entries.len();
        let views = [
            (
                "keys",
                TensorView::new(Dtype::U8, vec![n, 16], &keys)
                    .map_err(|e| TextError::Invalid(e.to_string()))?,
            ),
            (
                "vectors",
                TensorView::new(Dtype::F32, vec![n, self.dim], &raw)
                    .map_err(|e| TextError::Invalid(e.to_string()))?,
            ),
        ];
        let meta = HashMap::from([("model".to_string(), self.model_id.clone())]);
        let bytes = safetensors::serialize(views, &Some(meta)).map_err(|e| TextError::Format {
            path: path.to_path_buf(),
            msg: e.to_string(),
        })?;
        write_atomic(path, &bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vectors_round_trip_through_both_formats() {
        let dir = tempfile::tempdir().expect("tempdir");
        let t = Tensor::from_vec(3, 2, vec![1.0, -2.5, 3.25, 0.0, 1e-7, 42.0]);
        for name in ["v.safetensors", "v.npy"] {
            let p = dir.path().join(name);
            save(&p, &t).expect("save");
            assert_eq!(load(&p).expect("load"), t, "{name}");
        }
        // a .npy header is padded to a multiple of 64 bytes, as NumPy requires
        let raw = std::fs::read(dir.path().join("v.npy")).expect("read");
        let hlen = u16::from_le_bytes([raw[8], raw[9]]) as usize;
        assert_eq!((10 + hlen) % 64, 0);
        assert_eq!(raw[10 + hlen - 1], b'\n');
    }

    #[test]
    fn a_bad_vector_file_names_itself() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("broken.npy");
        std::fs::write(&p, b"\x93NUMPY\x01\x00\x10\x00{'descr': '<f8'}").expect("write");
        let e = load(&p).expect_err("f8 is refused").to_string();
        assert!(e.contains("broken.npy") && e.contains("f32"), "{e}");
    }

    #[test]
    fn cache_round_trips_and_ignores_another_models_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("cache.safetensors");
        let mut c = TextCache::new("model-a", 2);
        c.insert("hello", &[1.0, 2.0]);
        c.insert("world", &[3.0, 4.0]);
        c.save(&p).expect("save");
        let back = TextCache::open(&p, "model-a", 2).expect("open");
        assert_eq!(back.get("hello"), Some(&[1.0, 2.0][..]));
        assert_eq!(back.get("world"), Some(&[3.0, 4.0][..]));
        assert_eq!(back.get("other"), None);
        assert!(TextCache::open(&p, "model-b", 2).expect("open").is_empty());
    }
}
