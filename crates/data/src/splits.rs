//! The project's fixed splits of the shared real datasets, with no RNG anywhere, so that every
//! implementation trains and tests on the same rows (rules in ../shared/anchors/FUXICTR.md):
//! - Frappe: `frappe.validation.libfm` ++ `frappe.test.libfm`; row i → train if i%10<7,
//!   valid if i%10 ∈ {7,8}, test if i%10 = 9; label −1 → 0; columns `label,f0..f9`.
//! - Criteo slice: its own train/dev/test files, as headed CSV (`label,I1..I13,C1..C26`).
//! - MovieLens-100K: label = rating ≥ 4; stable sort by timestamp; 80/10/10; user and item
//!   features, genres `^`-joined (item 267 is missing from u.item: empty genres), and last an
//!   `item_text` column "title. genre, genre" for text features (the shared script has no such
//!   column; every other column is the same).

use crate::error::{DataError, Result};
use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::path::Path;

fn read_lines(path: &Path) -> Result<Vec<String>> {
    let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
    // u.item and u.user are latin-1: map bytes to chars one to one
    let text: String = match String::from_utf8(bytes) {
        Ok(s) => s,
        Err(e) => e.into_bytes().iter().map(|&b| b as char).collect(),
    };
    Ok(text.lines().map(str::to_string).collect())
}

fn write_csv(path: &Path, header: &[&str], rows: &[Vec<String>]) -> Result<usize> {
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d).map_err(|e| DataError::io(d, e))?;
    }
    let mut w = csv::WriterBuilder::new().from_writer(Vec::new());
    w.write_record(header)
        .map_err(|e| DataError::Other(e.to_string()))?;
    for r in rows {
        w.write_record(r)
            .map_err(|e| DataError::Other(e.to_string()))?;
    }
    let bytes = w
        .into_inner()
        .map_err(|e| DataError::Other(e.to_string()))?;
    crate::cache::write_atomic(path, &bytes)?;
    Ok(rows.len())
}

pub fn frappe(data_dir: &Path, out: &Path) -> Result<[usize; 3]> {
    let src = data_dir.join("frappe_nfm");
    let mut rows = Vec::new();
    for name in ["frappe.validation.libfm", "frappe.test.libfm"] {
        let path = src.join(name);
        for (i, line) in read_lines(&path)?.iter().enumerate() {
            let t: Vec<&str> = line.split_whitespace().collect();
            if t.is_empty() {
                continue;
            }
            if t.len() != 11 {
                return Err(DataError::BadRow {
                    path: path.clone(),
                    line: i as u64 + 1,
                    field: "-".into(),
                    msg: format!("expected 11 tokens, found {}", t.len()),
                });
            }
            let label = if t[0].parse::<f64>().unwrap_or(0.0) > 0.0 {
                "1"
            } else {
                "0"
            };
            let mut r = vec![label.to_string()];
            r.extend(
                t[1..]
                    .iter()
                    .map(|x| x.split(':').next().unwrap_or("").to_string()),
            );
            rows.push(r);
        }
    }
    let header: Vec<String> = std::iter::once("label".to_string())
        .chain((0..10).map(|i| format!("f{i}")))
        .collect();
    let header: Vec<&str> = header.iter().map(String::as_str).collect();
    let pick = |keep: &dyn Fn(usize) -> bool| {
        rows.iter()
            .enumerate()
            .filter(|(i, _)| keep(i % 10))
            .map(|(_, r)| r.clone())
            .collect::<Vec<_>>()
    };
    Ok([
        write_csv(&out.join("frappe/train.csv"), &header, &pick(&|m| m < 7))?,
        write_csv(
            &out.join("frappe/valid.csv"),
            &header,
            &pick(&|m| m == 7 || m == 8),
        )?,
        write_csv(&out.join("frappe/test.csv"), &header, &pick(&|m| m == 9))?,
    ])
}

pub fn criteo(data_dir: &Path, out: &Path) -> Result<[usize; 3]> {
    let src = data_dir.join("ctr_wide_resdnn/criteo");
    let header: Vec<String> = std::iter::once("label".to_string())
        .chain((1..=13).map(|i| format!("I{i}")))
        .chain((1..=26).map(|i| format!("C{i}")))
        .collect();
    let header: Vec<&str> = header.iter().map(String::as_str).collect();
    let mut counts = [0; 3];
    for (k, (from, to)) in [("train", "train"), ("dev", "valid"), ("test", "test")]
        .iter()
        .enumerate()
    {
        let path = src.join(format!("{from}.csv"));
        let f = std::fs::File::open(&path).map_err(|e| DataError::io(&path, e))?;
        let mut rows = Vec::new();
        for (i, line) in std::io::BufReader::new(f).lines().enumerate() {
            let line = line.map_err(|e| DataError::io(&path, e))?;
            if line.is_empty() {
                continue;
            }
            let t: Vec<String> = line.split('\t').map(str::to_string).collect();
            if t.len() != 40 {
                return Err(DataError::BadRow {
                    path: path.clone(),
                    line: i as u64 + 1,
                    field: "-".into(),
                    msg: format!("expected 40 columns, found {}", t.len()),
                });
            }
            rows.push(t);
        }
        counts[k] = write_csv(&out.join(format!("criteo/{to}.csv")), &header, &rows)?;
    }
    Ok(counts)
}

pub fn ml100k(data_dir: &Path, out: &Path) -> Result<[usize; 3]> {
    let src = data_dir.join("movielens_100k");
    let mut genres: Vec<(usize, String)> = Vec::new();
    for line in read_lines(&src.join("u.genre"))? {
        if let Some((g, i)) = line.trim().split_once('|') {
            genres.push((
                i.parse().map_err(|_| {
                    DataError::format(src.join("u.genre"), format!("bad genre id in `{line}`"))
                })?,
                g.to_string(),
            ));
        }
    }
    genres.sort();
    let mut users = HashMap::new();
    for line in read_lines(&src.join("u.user"))? {
        let t: Vec<&str> = line.trim().split('|').collect();
        if t.len() == 5 {
            users.insert(
                t[0].to_string(),
                [t[1], t[2], t[3], t[4]].map(str::to_string),
            );
        }
    }
    let mut items = HashMap::new();
    for line in read_lines(&src.join("u.item"))? {
        let t: Vec<&str> = line.split('|').collect();
        if t.len() >= 24 {
            let names: Vec<&str> = genres
                .iter()
                .zip(&t[5..24])
                .filter(|(_, f)| **f == "1")
                .map(|(g, _)| g.1.as_str())
                .collect();
            // a sentence for text features: "Toy Story (1995). Animation, Children's, Comedy"
            let text = format!("{}. {}", t[1].trim(), names.join(", "));
            items.insert(t[0].to_string(), (names.join("^"), text));
        }
    }
    let path = src.join("u.data");
    let mut data = Vec::new();
    for (i, line) in read_lines(&path)?.iter().enumerate() {
        let t: Vec<&str> = line.split('\t').collect();
        let bad = |m: &str| DataError::BadRow {
            path: path.clone(),
            line: i as u64 + 1,
            field: "-".into(),
            msg: m.to_string(),
        };
        if t.len() != 4 {
            return Err(bad("expected 4 columns"));
        }
        let ts: i64 = t[3].trim().parse().map_err(|_| bad("bad timestamp"))?;
        let r: i64 = t[2].trim().parse().map_err(|_| bad("bad rating"))?;
        data.push((ts, t[0].to_string(), t[1].to_string(), r));
    }
    data.sort_by_key(|d| d.0); // stable: ties keep file order
    let n = data.len();
    let (ntr, nva) = (n * 8 / 10, n * 9 / 10);
    let rows: Vec<Vec<String>> = data
        .iter()
        .map(|(_, u, i, r)| {
            let uf = users.get(u).cloned().unwrap_or_default();
            vec![
                ((*r >= 4) as u8).to_string(),
                u.clone(),
                i.clone(),
                uf[0].clone(),
                uf[1].clone(),
                uf[2].clone(),
                uf[3].clone(),
                items.get(i).map(|x| x.0.clone()).unwrap_or_default(),
                items.get(i).map(|x| x.1.clone()).unwrap_or_default(),
            ]
        })
        .collect();
    let header = [
        "label",
        "user_id",
        "item_id",
        "age",
        "gender",
        "occupation",
        "zip",
        "genres",
        "item_text",
    ];
    Ok([
        write_csv(&out.join("ml100k/train.csv"), &header, &rows[..ntr])?,
        write_csv(&out.join("ml100k/valid.csv"), &header, &rows[ntr..nva])?,
        write_csv(&out.join("ml100k/test.csv"), &header, &rows[nva..])?,
    ])
}

/// Writes all three datasets' splits under `out/{frappe,criteo,ml100k}/`.
pub fn write_all(data_dir: &Path, out: &Path) -> Result<()> {
    frappe(data_dir, out)?;
    criteo(data_dir, out)?;
    ml100k(data_dir, out)?;
    let _ = std::io::stdout().flush();
    Ok(())
}
