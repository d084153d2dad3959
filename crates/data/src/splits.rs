//! The project's fixed splits of the shared real datasets, with no RNG anywhere, so that every
//! implementation trains and tests on the same rows (rules in ../shared/anchors/FUXICTR.md):
//! - Frappe: `frappe.validation.libfm` ++ `frappe.test.libfm`; row i → train if i%10<7,
//!   valid if i%10 ∈ {7,8}, test if i%10 = 9; label −1 → 0; columns `label,f0..f9`.
//! - Criteo slice: its own train/dev/test files, as headed CSV (`label,I1..I13,C1..C26`).
//! - MovieLens-100K: label = rating ≥ 4; stable sort by timestamp; 80/10/10; user and item
//!   features, genres `^`-joined (item 267 is missing from u.item: empty genres), and last an
//!   `item_text` column "title. genre, genre" for text features (the shared script has no such
//!   column; every other column is the same).
//! - MovieLens-100K with behaviour (`ml100k_behaviour`, DIN's split): the same rows and columns
//!   plus `history`, the user's liked items (label 1) rated strictly before the row's
//!   timestamp, oldest first, `^`-joined, the last [`HISTORY_MAX`] of them. Ties in time are
//!   left out both ways, so no row sees its own label or a label given at the same moment.

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

/// The most recent liked items the behaviour split keeps per row.
pub const HISTORY_MAX: usize = 50;

/// A rating of the MovieLens-100K split, in time order.
struct Rating {
    ts: i64,
    user: String,
    item: String,
    liked: bool,
}

const ML100K_HEADER: [&str; 9] = [
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

pub fn ml100k(data_dir: &Path, out: &Path) -> Result<[usize; 3]> {
    let (rows, _) = ml100k_rows(data_dir)?;
    write_three(&out.join("ml100k"), &ML100K_HEADER, &rows)
}

/// [`ml100k`] with each row's behaviour `history` (the module's rules).
pub fn ml100k_behaviour(data_dir: &Path, out: &Path) -> Result<[usize; 3]> {
    let (mut rows, ratings) = ml100k_rows(data_dir)?;
    for (row, h) in rows.iter_mut().zip(histories(&ratings)) {
        row.push(h);
    }
    let mut header = ML100K_HEADER.to_vec();
    header.push("history");
    write_three(&out.join("ml100k_behaviour"), &header, &rows)
}

/// Per rating, the `^`-joined liked items of its user strictly earlier in time (last
/// [`HISTORY_MAX`]).
fn histories(ratings: &[Rating]) -> Vec<String> {
    let mut liked: HashMap<&str, Vec<(i64, &str)>> = HashMap::new();
    let mut out = Vec::with_capacity(ratings.len());
    for r in ratings {
        let past = liked.entry(&r.user).or_default();
        // time-sorted, so the strictly earlier ones are a prefix
        let before = past.partition_point(|&(ts, _)| ts < r.ts);
        let from = before.saturating_sub(HISTORY_MAX);
        let items: Vec<&str> = past[from..before].iter().map(|&(_, i)| i).collect();
        out.push(items.join("^"));
        if r.liked {
            past.push((r.ts, &r.item));
        }
    }
    out
}

/// 80/10/10 of `rows` in order into `dir/{train,valid,test}.csv`.
fn write_three(dir: &Path, header: &[&str], rows: &[Vec<String>]) -> Result<[usize; 3]> {
    let n = rows.len();
    let (ntr, nva) = (n * 8 / 10, n * 9 / 10);
    Ok([
        write_csv(&dir.join("train.csv"), header, &rows[..ntr])?,
        write_csv(&dir.join("valid.csv"), header, &rows[ntr..nva])?,
        write_csv(&dir.join("test.csv"), header, &rows[nva..])?,
    ])
}

/// The MovieLens-100K split's rows (time order) and the ratings behind them.
fn ml100k_rows(data_dir: &Path) -> Result<(Vec<Vec<String>>, Vec<Rating>)> {
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
    let ratings = data
        .into_iter()
        .map(|(ts, user, item, r)| Rating {
            ts,
            user,
            item,
            liked: r >= 4,
        })
        .collect();
    Ok((rows, ratings))
}

/// Writes all the splits under `out/{frappe,criteo,ml100k,ml100k_behaviour}/`.
pub fn write_all(data_dir: &Path, out: &Path) -> Result<()> {
    frappe(data_dir, out)?;
    criteo(data_dir, out)?;
    ml100k(data_dir, out)?;
    ml100k_behaviour(data_dir, out)?;
    let _ = std::io::stdout().flush();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn behaviour_histories_hold_strictly_earlier_liked_items_only() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("movielens_100k");
        std::fs::create_dir_all(&src).unwrap();
        std::fs::write(src.join("u.genre"), "Action|0\nComedy|1\n").unwrap();
        std::fs::write(src.join("u.user"), "1|24|M|tech|111\n2|30|F|art|222\n").unwrap();
        let item = |id: u32| format!("{id}|Film {id}|01-Jan-1995||url|1|0{}\n", "|0".repeat(17));
        std::fs::write(src.join("u.item"), (1..=5).map(item).collect::<String>()).unwrap();
        // user 1: item 1 liked at t=10, item 2 liked at t=20 and item 3 disliked at t=20 (a
        // tie), item 4 at t=30; user 2 rates item 1 at t=15 and item 5 at t=40
        let data = "1\t1\t5\t10\n1\t2\t4\t20\n1\t3\t2\t20\n2\t1\t4\t15\n1\t4\t3\t30\n\
                    2\t5\t1\t40\n";
        std::fs::write(src.join("u.data"), data).unwrap();
        let out = dir.path().join("out");
        ml100k_behaviour(dir.path(), &out).unwrap();
        let mut rows = Vec::new();
        for split in ["train", "valid", "test"] {
            let text =
                std::fs::read_to_string(out.join(format!("ml100k_behaviour/{split}.csv"))).unwrap();
            let mut lines = text.lines();
            assert!(lines.next().unwrap().ends_with(",item_text,history"));
            rows.extend(lines.map(|l| {
                let t: Vec<String> = l.split(',').map(str::to_string).collect();
                (
                    t[1].clone(),
                    t[2].clone(),
                    t[0].clone(),
                    t[t.len() - 1].clone(),
                )
            }));
        }
        let want = [
            ("1", "1", "1", ""),    // t=10: nothing before
            ("2", "1", "1", ""),    // t=15: user 2 has no past
            ("1", "2", "1", "1"),   // t=20: item 1 (t=10); not the tie at t=20
            ("1", "3", "0", "1"),   // t=20: the same, its own tie excluded
            ("1", "4", "0", "1^2"), // t=30: liked 1 and 2; 3 was disliked
            ("2", "5", "0", "1"),   // t=40
        ];
        let got: Vec<(&str, &str, &str, &str)> = rows
            .iter()
            .map(|(u, i, l, h)| (u.as_str(), i.as_str(), l.as_str(), h.as_str()))
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn histories_keep_the_most_recent_items() {
        let ratings: Vec<Rating> = (0..HISTORY_MAX as i64 + 5)
            .map(|t| Rating {
                ts: t,
                user: "u".into(),
                item: format!("i{t}"),
                liked: true,
            })
            .collect();
        let h = histories(&ratings);
        let last: Vec<&str> = h.last().unwrap().split('^').collect();
        assert_eq!(last.len(), HISTORY_MAX);
        assert_eq!(last[0], "i4");
        assert_eq!(*last.last().unwrap(), format!("i{}", HISTORY_MAX + 3));
    }
}
