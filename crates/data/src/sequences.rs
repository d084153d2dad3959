//! Users' item sequences for sequential recommenders, and the leave-one-out split.
//!
//! The file holds one user per line, `user item item …` separated by whitespace, items in the
//! order the user met them (amazon_seq_gram's `user_sequence.txt`). Items get ids from 1 in
//! order of first appearance (id 0 is padding, as in RecBole). The split is RecBole's
//! leave-one-out for sequential models: a user's last item is the test target, the one before
//! it the validation target, and the rest is training history. MovieLens' `u.data` becomes
//! sequences too: each user's ratings (all of them, as RecBole keeps them) in time order.

use crate::error::{DataError, Result};
use crate::features::OnBadRow;
use crate::interactions::{read_interaction_file, InteractionConfig, InteractionFormat};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::io::BufRead;
use std::path::{Path, PathBuf};

/// The file formats sequences are read from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SequenceFormat {
    /// `user item item …` per line, in order (amazon_seq_gram's `user_sequence.txt`).
    UserSequence,
    /// MovieLens-100K `u.data` (`user item rating timestamp`): each user's items by time.
    Udata,
}

/// A `task: seq` entry of `dataset_config.yaml`. The split is always leave-one-out.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SequenceConfig {
    pub task: String,
    pub data_format: SequenceFormat,
    /// Folder `train_data` is relative to; `$RECFORGE_DATA` at its start expands to the
    /// shared data folder.
    #[serde(default)]
    pub data_root: Option<String>,
    /// The one file holding every user's sequence.
    pub train_data: String,
}

impl SequenceConfig {
    pub fn path(&self) -> PathBuf {
        crate::interactions::data_root(self.data_root.as_deref()).join(&self.train_data)
    }

    /// Reads the configured file.
    pub fn load(&self, on_bad: OnBadRow, skipped: &mut u64) -> Result<UserSequences> {
        let path = self.path();
        match self.data_format {
            SequenceFormat::UserSequence => read_user_sequences(&path, on_bad, skipped),
            SequenceFormat::Udata => read_udata_sequences(&path, on_bad, skipped),
        }
    }
}

/// Every user's item ids in order.
#[derive(Clone, Debug, PartialEq)]
pub struct UserSequences {
    pub users: Vec<String>,
    /// Item tokens by id; `items[0]` is the padding id's (empty).
    pub items: Vec<String>,
    /// One per user, ids ≥ 1.
    pub sequences: Vec<Vec<u32>>,
}

impl UserSequences {
    /// Items, padding excluded.
    pub fn num_items(&self) -> usize {
        self.items.len() - 1
    }

    pub fn num_interactions(&self) -> usize {
        self.sequences.iter().map(Vec::len).sum()
    }

    /// The leave-one-out split of users with at least three items (history, validation
    /// target, test target); shorter users are counted in `short_users` and left out.
    pub fn leave_one_out(&self) -> LeaveOneOut<'_> {
        let mut users = Vec::new();
        for (u, s) in self.sequences.iter().enumerate() {
            if s.len() >= 3 {
                users.push(u);
            }
        }
        LeaveOneOut {
            data: self,
            short_users: self.sequences.len() - users.len(),
            users,
        }
    }
}

/// A leave-one-out split over [`UserSequences`]: for a kept user with items `s` (n of them),
/// training history `s[..n−2]`, validation target `s[n−2]`, test target `s[n−1]`.
#[derive(Clone, Debug)]
pub struct LeaveOneOut<'a> {
    data: &'a UserSequences,
    /// Users in the split (indices into the sequences), in file order.
    pub users: Vec<usize>,
    /// Users left out for having fewer than three items.
    pub short_users: usize,
}

impl<'a> LeaveOneOut<'a> {
    /// User `u`'s training items (all but the last two).
    pub fn train(&self, u: usize) -> &'a [u32] {
        let s = &self.data.sequences[u];
        &s[..s.len() - 2]
    }

    /// Validation: the last `max_len` training items, and the item that follows them.
    pub fn valid(&self, u: usize, max_len: usize) -> (&'a [u32], u32) {
        let s = &self.data.sequences[u];
        (last(&s[..s.len() - 2], max_len), s[s.len() - 2])
    }

    /// Test: the last `max_len` items before the last (training and validation items), and
    /// the last item.
    pub fn test(&self, u: usize, max_len: usize) -> (&'a [u32], u32) {
        let s = &self.data.sequences[u];
        (last(&s[..s.len() - 1], max_len), s[s.len() - 1])
    }

    /// RecBole's training instances for sequential models: every prefix of each training
    /// history that has a next item, as (the prefix's last `max_len` items, the next item).
    pub fn prefix_instances(&self, max_len: usize) -> Vec<(&'a [u32], u32)> {
        self.prefix_windows(max_len)
            .into_iter()
            .map(|w| (w.input, w.targets[w.input.len() - 1]))
            .collect()
    }

    /// [`LeaveOneOut::prefix_instances`] as windows scored at their last position only (the
    /// targets before it are the history's own next items), so one model path serves both.
    pub fn prefix_windows(&self, max_len: usize) -> Vec<Window<'a>> {
        let mut out = Vec::new();
        if max_len == 0 {
            return out;
        }
        for &u in &self.users {
            let t = self.train(u);
            for end in 1..t.len() {
                let start = end.saturating_sub(max_len);
                out.push(Window {
                    input: &t[start..end],
                    targets: &t[start + 1..=end],
                    scored: end - start - 1,
                });
            }
        }
        out
    }
}

/// A window of a training history for causal all-positions training: position `j` of `input`
/// predicts `targets[j]` from `input[..=j]`; only positions `scored..` count in the loss.
#[derive(Clone, Debug, PartialEq)]
pub struct Window<'a> {
    pub input: &'a [u32],
    pub targets: &'a [u32],
    pub scored: usize,
}

impl<'a> LeaveOneOut<'a> {
    /// The training windows for causal (left-to-right) models trained on every position at
    /// once. With attention that only looks back, each scored position sees exactly the
    /// context of one of [`LeaveOneOut::prefix_instances`] — the same pairs, at positions that
    /// count from the prefix's first item: a history's first `max_len + 1` items make one
    /// window scored at every position, and each later target (whose prefix is cut to its
    /// last `max_len`) a window of its own scored at its end.
    pub fn windows(&self, max_len: usize) -> Vec<Window<'a>> {
        let mut out = Vec::new();
        for &u in &self.users {
            let t = self.train(u);
            if t.len() < 2 || max_len == 0 {
                continue;
            }
            let first = t.len().min(max_len + 1);
            out.push(Window {
                input: &t[..first - 1],
                targets: &t[1..first],
                scored: 0,
            });
            for end in first..t.len() {
                out.push(Window {
                    input: &t[end - max_len..end],
                    targets: &t[end - max_len + 1..=end],
                    scored: max_len - 1,
                });
            }
        }
        out
    }
}

fn last(s: &[u32], n: usize) -> &[u32] {
    &s[s.len().saturating_sub(n)..]
}

/// Reads a `user item item …` file. Errors name the file and line: an empty line, a user with
/// no items, a user on two lines. Under [`OnBadRow::Skip`] such lines are counted in `skipped`
/// instead (a repeated user's later line is the one skipped).
pub fn read_user_sequences(
    path: &Path,
    on_bad: OnBadRow,
    skipped: &mut u64,
) -> Result<UserSequences> {
    let file = std::fs::File::open(path).map_err(|e| DataError::io(path, e))?;
    let mut data = UserSequences {
        users: Vec::new(),
        items: vec![String::new()],
        sequences: Vec::new(),
    };
    let mut item_ids: HashMap<String, u32> = HashMap::new();
    let mut user_lines: HashMap<String, u64> = HashMap::new();
    for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line_no = i as u64 + 1;
        let line = line.map_err(|e| DataError::io(path, e))?;
        let mut tokens = line.split_whitespace();
        let problem = match tokens.next() {
            None => Some(("-", "empty line".to_string())),
            Some(user) => match user_lines.get(user) {
                Some(first) => Some(("user", format!("user `{user}` already on line {first}"))),
                None if tokens.clone().next().is_none() => {
                    Some(("items", format!("user `{user}` has no items")))
                }
                None => None,
            },
        };
        if let Some((field, msg)) = problem {
            match on_bad {
                OnBadRow::Skip => {
                    *skipped += 1;
                    continue;
                }
                OnBadRow::Error => {
                    return Err(DataError::BadRow {
                        path: path.to_path_buf(),
                        line: line_no,
                        field: field.into(),
                        msg,
                    })
                }
            }
        }
        let mut tokens = line.split_whitespace();
        let user = tokens.next().unwrap_or_default().to_string();
        let sequence = tokens
            .map(|item| {
                let next = data.items.len() as u32;
                *item_ids.entry(item.to_string()).or_insert_with(|| {
                    data.items.push(item.to_string());
                    next
                })
            })
            .collect();
        user_lines.insert(user.clone(), line_no);
        data.users.push(user);
        data.sequences.push(sequence);
    }
    Ok(data)
}

/// Reads MovieLens `u.data` as sequences: users and items numbered in order of first
/// appearance in the file, each user's items ordered by timestamp (file order among equal
/// times). Malformed rows are errors naming file, line and field, or counted skips.
pub fn read_udata_sequences(
    path: &Path,
    on_bad: OnBadRow,
    skipped: &mut u64,
) -> Result<UserSequences> {
    let mut cfg = InteractionConfig::for_file(path);
    cfg.data_format = InteractionFormat::Udata;
    let rows = read_interaction_file(path, &cfg, on_bad, skipped)?;
    let mut data = UserSequences {
        users: Vec::new(),
        items: vec![String::new()],
        sequences: Vec::new(),
    };
    let (mut user_ids, mut item_ids) = (HashMap::new(), HashMap::new());
    let mut timed: Vec<Vec<(f64, u32)>> = Vec::new();
    for r in rows {
        let u = *user_ids.entry(r.user.clone()).or_insert_with(|| {
            data.users.push(r.user.clone());
            timed.push(Vec::new());
            timed.len() - 1
        });
        let next = data.items.len() as u32;
        let i = *item_ids.entry(r.item.clone()).or_insert_with(|| {
            data.items.push(r.item.clone());
            next
        });
        timed[u].push((r.time.unwrap_or(0.0), i));
    }
    data.sequences = timed
        .into_iter()
        .map(|mut s| {
            s.sort_by(|a, b| a.0.total_cmp(&b.0));
            s.into_iter().map(|(_, i)| i).collect()
        })
        .collect();
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &str, on_bad: OnBadRow) -> (Result<UserSequences>, u64) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("user_sequence.txt");
        std::fs::write(&path, text).unwrap();
        let mut skipped = 0;
        (read_user_sequences(&path, on_bad, &mut skipped), skipped)
    }

    #[test]
    fn items_are_numbered_from_one_in_order_of_first_appearance() {
        let (data, _) = read("u1 a b c d\nu2 c e a\nu3 b e f g h\n", OnBadRow::Error);
        let data = data.unwrap();
        assert_eq!(data.users, ["u1", "u2", "u3"]);
        assert_eq!(data.items, ["", "a", "b", "c", "d", "e", "f", "g", "h"]);
        assert_eq!(data.sequences[1], [3, 5, 1]);
        assert_eq!((data.num_items(), data.num_interactions()), (8, 12));
    }

    #[test]
    fn leave_one_out_holds_out_the_last_two_items() {
        let (data, _) = read("u1 a b c d e\nu2 a b\nu3 c d e\n", OnBadRow::Error);
        let data = data.unwrap();
        let split = data.leave_one_out();
        assert_eq!((split.users.clone(), split.short_users), (vec![0, 2], 1));
        // u1 = [1, 2, 3, 4, 5]
        assert_eq!(split.train(0), [1, 2, 3]);
        assert_eq!(split.valid(0, 50), (&[1, 2, 3][..], 4));
        assert_eq!(split.test(0, 50), (&[1, 2, 3, 4][..], 5));
        // histories keep their last `max_len` items
        assert_eq!(split.test(0, 2), (&[3, 4][..], 5));
        // training instances: each prefix of the history with its next item
        // (u1's history [1, 2, 3] gives two, u3's [3] none)
        assert_eq!(
            split.prefix_instances(2),
            vec![(&[1][..], 2), (&[1, 2][..], 3)]
        );
        assert_eq!(
            split.prefix_instances(1),
            vec![(&[1][..], 2), (&[2][..], 3)]
        );
    }

    #[test]
    fn windows_score_the_same_context_and_target_pairs_as_the_prefixes() {
        // histories shorter than, equal to and longer than the window
        let text = "u1 a b c d e f g h i j k\nu2 a b c\nu3 d e f g h i\nu4 a b\n";
        let data = read(text, OnBadRow::Error).0.unwrap();
        let split = data.leave_one_out();
        for max_len in [1, 2, 3, 4, 20] {
            let mut pairs = Vec::new();
            for w in split.windows(max_len) {
                assert_eq!(w.input.len(), w.targets.len());
                assert!(w.input.len() <= max_len);
                for j in w.scored..w.input.len() {
                    pairs.push((&w.input[..=j], w.targets[j]));
                }
            }
            assert_eq!(pairs, split.prefix_instances(max_len), "max_len {max_len}");
        }
    }

    #[test]
    fn prefix_windows_are_scored_at_their_end_only() {
        let data = read("u1 a b c d e f\n", OnBadRow::Error).0.unwrap();
        let split = data.leave_one_out();
        // history [1, 2, 3, 4]
        let w = split.prefix_windows(2);
        assert_eq!(w.len(), 3);
        assert_eq!(
            (w[0].input, w[0].targets, w[0].scored),
            (&[1][..], &[2][..], 0)
        );
        assert_eq!(
            (w[2].input, w[2].targets, w[2].scored),
            (&[2, 3][..], &[3, 4][..], 1)
        );
    }

    #[test]
    fn udata_users_are_ordered_by_time() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("u.data");
        // user 7 rates 30 late, 10 early, 20 in between; user 8 has equal times (file order)
        std::fs::write(
            &path,
            "7\t30\t5\t300\n8\t10\t3\t5\n7\t10\t4\t100\n7\t20\t1\t200\n8\t40\t2\t5\n",
        )
        .unwrap();
        let data = read_udata_sequences(&path, OnBadRow::Error, &mut 0).unwrap();
        assert_eq!(data.users, ["7", "8"]);
        assert_eq!(data.items, ["", "30", "10", "20", "40"]);
        assert_eq!(data.sequences, vec![vec![2, 3, 1], vec![2, 4]]);
        // a timestamp that is not a number is named by line and field, or skipped
        std::fs::write(&path, "7\t30\t5\t300\n8\t10\t3\tlate\n").unwrap();
        let err = read_udata_sequences(&path, OnBadRow::Error, &mut 0).unwrap_err();
        assert!(err.to_string().contains("u.data:2"), "{err}");
        assert!(err.to_string().contains("timestamp"), "{err}");
        let mut skipped = 0;
        let data = read_udata_sequences(&path, OnBadRow::Skip, &mut skipped).unwrap();
        assert_eq!((data.users.len(), skipped), (1, 1));
    }

    #[test]
    fn bad_lines_are_named_or_counted() {
        for (text, line, want, kept) in [
            ("u1 a b\n\nu2 c\n", 2, "empty line", 2),
            (
                "u1 a b\nu2\n",
                2,
                "field `items`: user `u2` has no items",
                1,
            ),
            (
                "u1 a b\nu2 c\nu1 d\n",
                3,
                "field `user`: user `u1` already on line 1",
                2,
            ),
        ] {
            let err = read(text, OnBadRow::Error).0.unwrap_err().to_string();
            assert!(
                err.ends_with(&format!("user_sequence.txt:{line}: {want}")),
                "{err}"
            );
            let (data, skipped) = read(text, OnBadRow::Skip);
            assert_eq!(skipped, 1);
            assert_eq!(data.unwrap().users.len(), kept);
        }
    }
}
