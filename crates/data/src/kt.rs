//! Knowledge-tracing data: students' question–response sequences in pyKT's and AKT's line
//! formats, the "expanded" and "collapsed" forms of multi-skill problems, the split into
//! train, validation and test students, and the windows models are trained on.
//!
//! A record is a student: a header line, then one comma-separated line per column.
//! - `three_line`: header / question ids / responses (statics: a question is its own concept);
//! - `four_line`: header / problem ids / skill ids / responses (assist2009_pid).
//!
//! The header's form differs by source (a length in statics, `index,user_id` in
//! assist2009_pid), so a record's length is taken from the lines that follow, and the header
//! only names the student. Ids are kept as the file writes them; tables get one row per id
//! up to the largest (row 0 goes unused in 1-based files, as in pyKT's `n_question + 1`).
//!
//! Multi-skill problems appear in the four-line files as consecutive rows with the same
//! problem and response, one per skill. `form: expanded` keeps those rows (pyKT's
//! protocol, and the anchors'); `form: collapsed` makes them one interaction with its skill
//! set — the honest number, since each repeated row tells the model the next answer.

use crate::error::{DataError, Result};
use crate::features::OnBadRow;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The line formats of a record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KtFormat {
    /// header / question ids / responses
    ThreeLine,
    /// header / problem ids / skill ids / responses
    FourLine,
}

impl KtFormat {
    fn lines(self) -> usize {
        match self {
            KtFormat::ThreeLine => 3,
            KtFormat::FourLine => 4,
        }
    }
}

/// How multi-skill problems are represented.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KtForm {
    /// One row per (problem, skill), as the files are.
    #[default]
    Expanded,
    /// One interaction per problem attempt, with its skill set.
    Collapsed,
}

/// One file or several, read in order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Files {
    One(String),
    Many(Vec<String>),
}

impl Files {
    fn names(&self) -> Vec<&str> {
        match self {
            Files::One(f) => vec![f.as_str()],
            Files::Many(v) => v.iter().map(String::as_str).collect(),
        }
    }
}

fn default_window() -> usize {
    200
}

/// A `task: kt` entry of `dataset_config.yaml`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KtDatasetConfig {
    pub task: String,
    pub data_format: KtFormat,
    /// Folder the files are relative to; `$RECFORGE_DATA` at its start expands to the shared
    /// data folder.
    #[serde(default)]
    pub data_root: Option<String>,
    pub train_data: Files,
    /// Validation students; without it, `valid_every` picks them from the training files.
    #[serde(default)]
    pub valid_data: Option<Files>,
    /// Every k-th training student (0-based `i % k == 0`, in file order) is held out for
    /// validation (the anchors' protocol: 10). Ignored when `valid_data` is given.
    #[serde(default)]
    pub valid_every: Option<usize>,
    pub test_data: Files,
    #[serde(default)]
    pub form: KtForm,
    /// Sequences are cut into consecutive windows of at most this many interactions.
    #[serde(default = "default_window")]
    pub max_seq_len: usize,
    /// Declared bounds: an id above them is an error naming file and line. Default: the
    /// largest id in the files.
    #[serde(default)]
    pub max_concept_id: Option<u32>,
    #[serde(default)]
    pub max_problem_id: Option<u32>,
    /// Train on the first fraction of the training students (the sparse regime).
    #[serde(default)]
    pub train_fraction: Option<f64>,
}

/// One student's interactions in order.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct KtSequence {
    pub student: String,
    /// Problem ids (0 throughout in three-line data, which has none).
    pub problems: Vec<u32>,
    /// Concept ids of interaction `t`: `concepts[concept_starts[t]..concept_starts[t + 1]]`.
    pub concepts: Vec<u32>,
    pub concept_starts: Vec<u32>,
    pub responses: Vec<u8>,
}

impl KtSequence {
    pub fn len(&self) -> usize {
        self.responses.len()
    }

    pub fn is_empty(&self) -> bool {
        self.responses.is_empty()
    }

    /// The concepts of interaction `t`.
    pub fn concepts_of(&self, t: usize) -> &[u32] {
        &self.concepts[self.concept_starts[t] as usize..self.concept_starts[t + 1] as usize]
    }

    /// Appends one interaction.
    pub fn push(&mut self, problem: u32, concepts: &[u32], response: u8) {
        if self.concept_starts.is_empty() {
            self.concept_starts.push(0);
        }
        self.problems.push(problem);
        self.concepts.extend_from_slice(concepts);
        self.concept_starts.push(self.concepts.len() as u32);
        self.responses.push(response);
    }

    /// The interactions `start..start + len` as a sequence of their own.
    pub fn slice(&self, start: usize, len: usize) -> KtSequence {
        let mut out = KtSequence {
            student: self.student.clone(),
            ..Default::default()
        };
        for t in start..start + len {
            out.push(self.problems[t], self.concepts_of(t), self.responses[t]);
        }
        out
    }

    /// Consecutive rows with the same problem and response merged into one interaction with
    /// the union of their concepts (in order of appearance). A row whose concept the
    /// interaction already has is a new attempt, not another skill of the same one.
    pub fn collapsed(&self) -> KtSequence {
        let mut out = KtSequence {
            student: self.student.clone(),
            ..Default::default()
        };
        let mut t = 0;
        while t < self.len() {
            let mut set: Vec<u32> = self.concepts_of(t).to_vec();
            let mut end = t + 1;
            while end < self.len()
                && self.problems[end] != 0
                && self.problems[end] == self.problems[t]
                && self.responses[end] == self.responses[t]
                && self.concepts_of(end).iter().all(|c| !set.contains(c))
            {
                set.extend_from_slice(self.concepts_of(end));
                end += 1;
            }
            out.push(self.problems[t], &set, self.responses[t]);
            t = end;
        }
        out
    }
}

/// A window of a sequence: interactions `start..start + len` of student `student`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KtWindow {
    pub student: u32,
    pub start: u32,
    pub len: u32,
}

/// Consecutive non-overlapping windows of at most `max_len` interactions of every sequence;
/// windows shorter than 2 (nothing to predict) are dropped.
pub fn windows(seqs: &[KtSequence], max_len: usize) -> Vec<KtWindow> {
    let mut out = Vec::new();
    for (s, seq) in seqs.iter().enumerate() {
        let mut start = 0;
        while start < seq.len() {
            let len = max_len.min(seq.len() - start);
            if len >= 2 {
                out.push(KtWindow {
                    student: s as u32,
                    start: start as u32,
                    len: len as u32,
                });
            }
            start += len;
        }
    }
    out
}

/// The three splits and the id ranges the models are built for.
#[derive(Clone, Debug, PartialEq)]
pub struct KtData {
    pub train: Vec<KtSequence>,
    pub valid: Vec<KtSequence>,
    pub test: Vec<KtSequence>,
    /// Table rows for concepts (largest id + 1).
    pub num_concepts: usize,
    /// Table rows for problems (largest id + 1; 0 when the data has no problem ids).
    pub num_problems: usize,
}

impl KtDatasetConfig {
    fn path(&self, file: &str) -> PathBuf {
        crate::interactions::data_root(self.data_root.as_deref()).join(file)
    }

    fn read(&self, files: &Files, on_bad: OnBadRow, skipped: &mut u64) -> Result<Vec<KtSequence>> {
        let mut out = Vec::new();
        for f in files.names() {
            let path = self.path(f);
            let mut seqs = read_kt_file(&path, self, on_bad, skipped)?;
            if self.form == KtForm::Collapsed {
                seqs = seqs.iter().map(KtSequence::collapsed).collect();
            }
            out.extend(seqs);
        }
        Ok(out)
    }

    /// Reads every split. Malformed records are errors naming file, line and field, or under
    /// [`OnBadRow::Skip`] are skipped and counted in `skipped`.
    pub fn load(&self, src: &Path, on_bad: OnBadRow, skipped: &mut u64) -> Result<KtData> {
        if self.max_seq_len < 2 {
            return Err(DataError::config(src, "max_seq_len must be at least 2"));
        }
        let mut train = self.read(&self.train_data, on_bad, skipped)?;
        let valid = match (&self.valid_data, self.valid_every) {
            (Some(files), _) => self.read(files, on_bad, skipped)?,
            (None, Some(k)) if k >= 2 => {
                let (mut kept, mut held) = (Vec::new(), Vec::new());
                for (i, s) in train.into_iter().enumerate() {
                    if i % k == 0 {
                        held.push(s);
                    } else {
                        kept.push(s);
                    }
                }
                train = kept;
                held
            }
            (None, Some(k)) => {
                return Err(DataError::config(
                    src,
                    format!("valid_every {k}: it must be at least 2"),
                ))
            }
            (None, None) => {
                return Err(DataError::config(
                    src,
                    "a knowledge-tracing dataset needs valid_data or valid_every",
                ))
            }
        };
        if let Some(f) = self.train_fraction {
            if !(f > 0.0 && f <= 1.0) {
                return Err(DataError::config(
                    src,
                    format!("train_fraction {f}: it must be in (0, 1]"),
                ));
            }
            let keep = ((train.len() as f64 * f).round() as usize).max(1);
            train.truncate(keep);
        }
        let test = self.read(&self.test_data, on_bad, skipped)?;
        let all = || train.iter().chain(&valid).chain(&test);
        let max_c = all().flat_map(|s| s.concepts.iter()).max().copied();
        let max_p = all().flat_map(|s| s.problems.iter()).max().copied();
        let Some(max_c) = max_c else {
            return Err(DataError::config(src, "the dataset holds no interactions"));
        };
        let num_concepts = self.max_concept_id.unwrap_or(max_c) as usize + 1;
        let num_problems = match (self.data_format, self.max_problem_id, max_p) {
            (KtFormat::ThreeLine, _, _) => 0,
            (_, Some(m), _) => m as usize + 1,
            (_, None, p) => p.unwrap_or(0) as usize + 1,
        };
        Ok(KtData {
            train,
            valid,
            test,
            num_concepts,
            num_problems,
        })
    }
}

fn bad(path: &Path, line: usize, field: &str, msg: impl Into<String>) -> DataError {
    DataError::BadRow {
        path: path.to_path_buf(),
        line: line as u64,
        field: field.into(),
        msg: msg.into(),
    }
}

fn parse_ids(
    path: &Path,
    line: usize,
    field: &str,
    text: &str,
    max: Option<u32>,
) -> Result<Vec<u32>> {
    text.trim()
        .trim_end_matches(',')
        .split(',')
        .enumerate()
        .map(|(k, t)| {
            let v: u32 = t.trim().parse().map_err(|_| {
                bad(
                    path,
                    line,
                    field,
                    format!("entry {}: `{t}` is not an id", k + 1),
                )
            })?;
            if let Some(m) = max {
                if v > m {
                    return Err(bad(
                        path,
                        line,
                        field,
                        format!(
                            "entry {}: id {v} is above the declared largest id {m}",
                            k + 1
                        ),
                    ));
                }
            }
            Ok(v)
        })
        .collect()
}

/// Reads one file of records in `cfg`'s format.
pub fn read_kt_file(
    path: &Path,
    cfg: &KtDatasetConfig,
    on_bad: OnBadRow,
    skipped: &mut u64,
) -> Result<Vec<KtSequence>> {
    let text = std::fs::read_to_string(path).map_err(|e| DataError::io(path, e))?;
    let lines: Vec<&str> = text.lines().collect();
    // trailing blank lines are not a record
    let n_lines = lines
        .iter()
        .rposition(|l| !l.trim().is_empty())
        .map_or(0, |i| i + 1);
    let per = cfg.data_format.lines();
    if n_lines % per != 0 {
        let start = n_lines - n_lines % per + 1;
        return Err(bad(
            path,
            start,
            "-",
            format!(
                "{n_lines} lines is not a multiple of {per} ({per} lines per student in {:?}); \
                 the last record, from line {start}, is cut short",
                cfg.data_format
            ),
        ));
    }
    let mut out = Vec::with_capacity(n_lines / per);
    for (r, rec) in lines[..n_lines].chunks(per).enumerate() {
        let first = r * per + 1;
        match parse_record(path, first, rec, cfg, r) {
            Ok(s) => out.push(s),
            Err(_) if on_bad == OnBadRow::Skip => *skipped += 1,
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

fn parse_record(
    path: &Path,
    first: usize,
    rec: &[&str],
    cfg: &KtDatasetConfig,
    index: usize,
) -> Result<KtSequence> {
    let header: Vec<&str> = rec[0].trim().split(',').map(str::trim).collect();
    // `index,user_id` names the student; a bare length does not
    let student = match header.as_slice() {
        [_, id, ..] if !id.is_empty() => id.to_string(),
        _ => format!("{index}"),
    };
    let (problems, concepts) = match cfg.data_format {
        KtFormat::ThreeLine => {
            let q = parse_ids(path, first + 1, "questions", rec[1], cfg.max_concept_id)?;
            (vec![0; q.len()], q)
        }
        KtFormat::FourLine => (
            parse_ids(path, first + 1, "problems", rec[1], cfg.max_problem_id)?,
            parse_ids(path, first + 2, "skills", rec[2], cfg.max_concept_id)?,
        ),
    };
    let resp_line = first + rec.len() - 1;
    let responses = parse_ids(path, resp_line, "responses", rec[rec.len() - 1], None)?;
    if let Some(k) = responses.iter().position(|&v| v > 1) {
        return Err(bad(
            path,
            resp_line,
            "responses",
            format!("entry {}: response {} is not 0 or 1", k + 1, responses[k]),
        ));
    }
    let n = responses.len();
    let lengths = match cfg.data_format {
        KtFormat::ThreeLine => vec![("questions", concepts.len(), first + 1)],
        KtFormat::FourLine => vec![
            ("problems", problems.len(), first + 1),
            ("skills", concepts.len(), first + 2),
        ],
    };
    if let Some((field, len, line)) = lengths.into_iter().find(|&(_, len, _)| len != n) {
        return Err(bad(
            path,
            line,
            field,
            format!("{len} entries, but the record's responses line has {n}"),
        ));
    }
    let mut seq = KtSequence {
        student,
        ..Default::default()
    };
    for t in 0..n {
        seq.push(problems[t], &[concepts[t]], responses[t] as u8);
    }
    Ok(seq)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(format: KtFormat, form: KtForm) -> KtDatasetConfig {
        KtDatasetConfig {
            task: "kt".into(),
            data_format: format,
            data_root: None,
            train_data: Files::One("train.csv".into()),
            valid_data: None,
            valid_every: Some(2),
            test_data: Files::One("test.csv".into()),
            form,
            max_seq_len: 3,
            max_concept_id: None,
            max_problem_id: None,
            train_fraction: None,
        }
    }

    fn write(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f.csv");
        std::fs::write(&p, text).unwrap();
        (dir, p)
    }

    const FOUR: &str = "0,7\n5,5,6,8,8\n1,2,3,1,1\n1,1,0,1,1\n4\n9,9\n4,4\n0,1\n";

    #[test]
    fn four_line_records_take_their_length_from_the_lines_that_follow() {
        // the first header is `index,user_id`, the second a bare count that is wrong
        let (_d, p) = write(FOUR);
        let c = cfg(KtFormat::FourLine, KtForm::Expanded);
        let s = read_kt_file(&p, &c, OnBadRow::Error, &mut 0).unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].student, "7");
        assert_eq!(s[1].student, "1");
        assert_eq!(s[0].problems, [5, 5, 6, 8, 8]);
        assert_eq!(s[0].concepts_of(1), [2]);
        assert_eq!(s[0].responses, [1, 1, 0, 1, 1]);
        assert_eq!(s[1].len(), 2);
    }

    #[test]
    fn collapsing_merges_a_problems_repeated_rows_into_one_skill_set() {
        let (_d, p) = write(FOUR);
        let c = cfg(KtFormat::FourLine, KtForm::Expanded);
        let s = read_kt_file(&p, &c, OnBadRow::Error, &mut 0).unwrap();
        let a = s[0].collapsed();
        // problem 8 twice with the same skill: two attempts
        assert_eq!(a.problems, [5, 6, 8, 8]);
        assert_eq!(a.concepts_of(0), [1, 2]);
        assert_eq!(a.concepts_of(1), [3]);
        assert_eq!(a.responses, [1, 0, 1, 1]);
        // same problem, different responses: two attempts, not one
        let b = s[1].collapsed();
        assert_eq!(b.len(), 2);
        assert_eq!(b.concepts_of(0), [4]);
    }

    #[test]
    fn windows_are_consecutive_and_drop_single_interactions() {
        let mut seq = KtSequence::default();
        for t in 0..7 {
            seq.push(0, &[t], 1);
        }
        let w = windows(&[seq.clone(), seq.slice(0, 1)], 3);
        let spans: Vec<(u32, u32)> = w.iter().map(|w| (w.start, w.len)).collect();
        // 7 = 3 + 3 + 1: the last window has nothing to predict; the 1-long student neither
        assert_eq!(spans, [(0, 3), (3, 3)]);
    }

    #[test]
    fn bad_records_name_file_line_and_field() {
        let c3 = cfg(KtFormat::ThreeLine, KtForm::Expanded);
        let c4 = cfg(KtFormat::FourLine, KtForm::Expanded);
        let cases: [(&KtDatasetConfig, &str, &str); 5] = [
            (
                &c4,
                "0,1\n1,2\n1,2\n1,1\n0,2\n1\n",
                "f.csv:5: 6 lines is not a multiple of 4",
            ),
            (
                &c4,
                "0,1\n1,2\n1,2,3\n1,1\n",
                "f.csv:3: field `skills`: 3 entries, but",
            ),
            (
                &c3,
                "2\n1,2\n1,2\n",
                "f.csv:3: field `responses`: entry 2: response 2 is not 0 or 1",
            ),
            (
                &c3,
                "2\n1,x\n1,0\n",
                "f.csv:2: field `questions`: entry 2: `x` is not an id",
            ),
            (
                &KtDatasetConfig {
                    max_concept_id: Some(5),
                    ..c3.clone()
                },
                "2\n1,6\n1,0\n",
                "f.csv:2: field `questions`: entry 2: id 6 is above the declared largest id 5",
            ),
        ];
        for (c, text, want) in cases {
            let (_d, p) = write(text);
            let e = read_kt_file(&p, c, OnBadRow::Error, &mut 0)
                .unwrap_err()
                .to_string();
            assert!(e.contains(want), "{e}\n  wanted: {want}");
        }
        // skipped and counted under the skip policy
        let (_d, p) = write("2\n1,2\n1,2\n2\n1,2\n1,0\n");
        let mut skipped = 0;
        let s = read_kt_file(&p, &c3, OnBadRow::Skip, &mut skipped).unwrap();
        assert_eq!((s.len(), skipped), (1, 1));
    }

    #[test]
    fn every_kth_training_student_is_held_out_for_validation() {
        let dir = tempfile::tempdir().unwrap();
        let rec = |i: u32| format!("{i},s{i}\n{i},{i}\n1,2\n0,1\n");
        let train: String = (0..5).map(rec).collect();
        std::fs::write(dir.path().join("train.csv"), train).unwrap();
        std::fs::write(dir.path().join("test.csv"), rec(9)).unwrap();
        let c = KtDatasetConfig {
            data_root: Some(dir.path().display().to_string()),
            ..cfg(KtFormat::FourLine, KtForm::Expanded)
        };
        let d = c.load(dir.path(), OnBadRow::Error, &mut 0).unwrap();
        let names = |v: &[KtSequence]| v.iter().map(|s| s.student.clone()).collect::<Vec<_>>();
        assert_eq!(names(&d.valid), ["s0", "s2", "s4"]);
        assert_eq!(names(&d.train), ["s1", "s3"]);
        assert_eq!(names(&d.test), ["s9"]);
        assert_eq!((d.num_concepts, d.num_problems), (3, 10));
    }
}
