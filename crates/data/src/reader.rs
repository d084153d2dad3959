//! Streaming record readers. Each yields one record at a time as strings in file-column order,
//! with the line (or row) number for error messages, so files larger than memory stream through.

use crate::config::{DataFormat, DatasetConfig};
use crate::error::{DataError, Result};
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

pub trait RecordReader {
    /// Column names, in the order values are returned.
    fn columns(&self) -> &[String];
    /// Reads the next record into `out`; returns its 1-based line (row) number, or `None` at EOF.
    fn next_record(&mut self, out: &mut Vec<String>) -> Result<Option<u64>>;
    fn path(&self) -> &Path;
}

/// Reads the next well-formed record: with `OnBadRow::Skip`, malformed rows (wrong column
/// count, unreadable line) are counted in `skipped` and passed over; otherwise they are errors.
pub fn next_record(
    r: &mut dyn RecordReader,
    out: &mut Vec<String>,
    on_bad: crate::features::OnBadRow,
    skipped: &mut u64,
) -> Result<Option<u64>> {
    loop {
        match r.next_record(out) {
            Err(DataError::BadRow { .. }) if on_bad == crate::features::OnBadRow::Skip => {
                *skipped += 1
            }
            other => return other,
        }
    }
}

/// Opens `path` as the dataset config says.
pub fn open(path: &Path, cfg: &DatasetConfig) -> Result<Box<dyn RecordReader>> {
    let positional = cfg.positional_columns();
    if path.is_dir() && cfg.raw.data_format != DataFormat::Parquet {
        return Err(DataError::format(
            path,
            "a directory is read as a Parquet dataset (data_format: parquet)",
        ));
    }
    match cfg.raw.data_format {
        DataFormat::Csv => Ok(Box::new(DelimitedReader::open(
            path,
            b',',
            cfg.has_header(),
            positional,
        )?)),
        DataFormat::Tsv => Ok(Box::new(DelimitedReader::open(
            path,
            b'\t',
            cfg.has_header(),
            positional,
        )?)),
        DataFormat::Libsvm => Ok(Box::new(LibsvmReader::open(path, positional)?)),
        DataFormat::Parquet => {
            let splitters = cfg
                .fields
                .iter()
                .filter_map(|f| match &f.kind {
                    crate::config::FieldKind::Sequence { splitter, .. } => {
                        Some((f.name.clone(), splitter.clone()))
                    }
                    _ => None,
                })
                .collect();
            Ok(Box::new(ParquetReader::open(path, splitters)?))
        }
    }
}

/// CSV or TSV, with or without a header line (quotes handled by the `csv` crate). Records end
/// at `\n` only, so line numbers count `\n` exactly whatever the line endings (a `\r` before
/// it is trimmed with the field's other whitespace).
pub struct DelimitedReader {
    path: PathBuf,
    columns: Vec<String>,
    inner: csv::Reader<BufReader<File>>,
    record: csv::StringRecord,
    /// The file's length and whether it ends with `\n`: a last line without one ends the
    /// last record at the end of the file.
    len: u64,
    ends_with_newline: bool,
}

impl DelimitedReader {
    pub fn open(path: &Path, delimiter: u8, header: bool, positional: Vec<String>) -> Result<Self> {
        use std::io::{Read, Seek, SeekFrom};
        let mut file = File::open(path).map_err(|e| DataError::io(path, e))?;
        let io = |e| DataError::io(path, e);
        let len = file.metadata().map_err(io)?.len();
        let mut last = [0u8];
        if len > 0 {
            file.seek(SeekFrom::End(-1)).map_err(io)?;
            file.read_exact(&mut last).map_err(io)?;
            file.seek(SeekFrom::Start(0)).map_err(io)?;
        }
        let mut inner = csv::ReaderBuilder::new()
            .delimiter(delimiter)
            .has_headers(false)
            .flexible(true)
            .quoting(delimiter == b',')
            .terminator(csv::Terminator::Any(b'\n'))
            .buffer_capacity(1 << 20)
            .from_reader(BufReader::with_capacity(1 << 20, file));
        let mut record = csv::StringRecord::new();
        let columns = if header {
            let ok = inner
                .read_record(&mut record)
                .map_err(|e| csv_error(path, e))?;
            if !ok {
                return Err(DataError::format(
                    path,
                    "empty file: expected a header line",
                ));
            }
            record.iter().map(|s| s.trim().to_string()).collect()
        } else {
            positional
        };
        Ok(DelimitedReader {
            path: path.to_path_buf(),
            columns,
            inner,
            record,
            len,
            ends_with_newline: last[0] == b'\n',
        })
    }

    /// Whether the record just read took a line break into its last field (only an unclosed
    /// quote running to the end of the file does).
    fn last_field_ends_a_line(&self) -> bool {
        self.record
            .iter()
            .next_back()
            .is_some_and(|f| f.ends_with('\n'))
    }

    /// The line the record just read starts on: counted back from where reading stopped,
    /// past its own terminator and the line breaks inside its quoted fields (so blank lines
    /// before it do not shift it).
    fn record_line(&self) -> u64 {
        let after = self.inner.position();
        let inside: u64 = self
            .record
            .iter()
            .map(|f| f.bytes().filter(|&b| b == b'\n').count() as u64)
            .sum();
        // at the end of the file the last line break, if any, ended the record, unless an
        // unclosed quote took it into the last field
        let unterminated =
            after.byte() >= self.len && (!self.ends_with_newline || self.last_field_ends_a_line());
        after
            .line()
            .saturating_sub(inside + u64::from(!unterminated))
            .max(1)
    }
}

fn csv_error(path: &Path, e: csv::Error) -> DataError {
    if e.is_io_error() {
        // a read that failed is no bad row: skipping it would end the file silently
        if let csv::ErrorKind::Io(io) = e.into_kind() {
            return DataError::io(path, io);
        }
        unreachable!("is_io_error() is true only for ErrorKind::Io");
    }
    let line = e.position().map(|p| p.line()).unwrap_or(0);
    DataError::BadRow {
        path: path.to_path_buf(),
        line,
        field: "-".into(),
        msg: e.to_string(),
    }
}

impl DelimitedReader {
    /// Moves the reader to the start of the line after `line`, where the last record began
    /// (after the empty lines the read passed over first).
    fn resync_after_line(&mut self, line: u64) -> Result<()> {
        use std::io::{Seek, SeekFrom};
        let io = |e| DataError::io(&self.path, e);
        let start = self.record.position().map_or(0, |p| p.byte());
        let mut f = File::open(&self.path).map_err(io)?;
        f.seek(SeekFrom::Start(start)).map_err(io)?;
        let mut r = BufReader::new(f);
        let mut empty = 0u64;
        loop {
            let buf = r.fill_buf().map_err(io)?;
            let n = buf.iter().take_while(|&&b| b == b'\n').count();
            let more = n == buf.len() && !buf.is_empty();
            r.consume(n);
            empty += n as u64;
            if !more {
                break;
            }
        }
        let mut first_line = Vec::new();
        r.read_until(b'\n', &mut first_line).map_err(io)?;
        let mut pos = csv::Position::new();
        pos.set_byte(start + empty + first_line.len() as u64)
            .set_line(line + 1);
        self.inner.seek(pos).map_err(|e| csv_error(&self.path, e))
    }
}

impl RecordReader for DelimitedReader {
    fn columns(&self) -> &[String] {
        &self.columns
    }

    fn next_record(&mut self, out: &mut Vec<String>) -> Result<Option<u64>> {
        loop {
            if !self
                .inner
                .read_record(&mut self.record)
                .map_err(|e| csv_error(&self.path, e))?
            {
                return Ok(None);
            }
            let line = self.record_line();
            if self.record.len() == 1 && self.record[0].trim().is_empty() {
                continue; // blank line
            }
            let spans_lines = self.record.iter().any(|f| f.contains('\n'));
            // A quote never closed runs to the end of the file, taking its last line break
            // into the field: with the right column count it would pass as one row.
            let runs_to_end = spans_lines
                && self.inner.position().byte() >= self.len
                && self.last_field_ends_a_line();
            if self.record.len() != self.columns.len() || runs_to_end {
                let mut msg = if runs_to_end {
                    "an unclosed quote".to_string()
                } else {
                    format!(
                        "expected {} columns, found {}",
                        self.columns.len(),
                        self.record.len()
                    )
                };
                if spans_lines {
                    // An unbalanced quote made one "record" of many lines: the bad row is this
                    // line alone, and reading resumes on the next one.
                    let next_line = self.inner.position().line();
                    self.resync_after_line(line)?;
                    msg += &format!(
                        " (a quote opened on this line is not closed before line {next_line})"
                    );
                }
                return Err(DataError::BadRow {
                    path: self.path.clone(),
                    line,
                    field: "-".into(),
                    msg,
                });
            }
            out.clear();
            out.extend(self.record.iter().map(str::to_string));
            return Ok(Some(line));
        }
    }

    fn path(&self) -> &Path {
        &self.path
    }
}

/// libSVM / libFM: `label idx:val idx:val …`, one token per field in config order (Frappe's
/// layout). The field's value is the feature index; label −1 is read as 0.
pub struct LibsvmReader {
    path: PathBuf,
    columns: Vec<String>,
    lines: std::io::Lines<BufReader<File>>,
    line_no: u64,
}

impl LibsvmReader {
    pub fn open(path: &Path, positional: Vec<String>) -> Result<Self> {
        let file = File::open(path).map_err(|e| DataError::io(path, e))?;
        Ok(LibsvmReader {
            path: path.to_path_buf(),
            columns: positional,
            lines: BufReader::with_capacity(1 << 20, file).lines(),
            line_no: 0,
        })
    }
}

impl RecordReader for LibsvmReader {
    fn columns(&self) -> &[String] {
        &self.columns
    }

    fn next_record(&mut self, out: &mut Vec<String>) -> Result<Option<u64>> {
        loop {
            let Some(line) = self.lines.next() else {
                return Ok(None);
            };
            self.line_no += 1;
            let line = line.map_err(|e| match e.kind() {
                // not UTF-8: a bad line, not a failed read
                std::io::ErrorKind::InvalidData => DataError::BadRow {
                    path: self.path.clone(),
                    line: self.line_no,
                    field: "-".into(),
                    msg: e.to_string(),
                },
                _ => DataError::io(&self.path, e),
            })?;
            let mut toks = line.split_whitespace();
            let Some(label) = toks.next() else { continue };
            out.clear();
            out.push(if label == "-1" {
                "0".to_string()
            } else {
                label.to_string()
            });
            for (i, t) in toks.enumerate() {
                let field = self
                    .columns
                    .get(i + 1)
                    .cloned()
                    .unwrap_or_else(|| format!("#{}", i + 1));
                let idx = match t.split_once(':') {
                    Some((idx, _val)) => idx,
                    None => {
                        return Err(DataError::BadRow {
                            path: self.path.clone(),
                            line: self.line_no,
                            field,
                            msg: format!("`{t}` is not idx:value"),
                        })
                    }
                };
                out.push(idx.to_string());
            }
            if out.len() != self.columns.len() {
                return Err(DataError::BadRow {
                    path: self.path.clone(),
                    line: self.line_no,
                    field: "-".into(),
                    msg: format!(
                        "expected {} features, found {}",
                        self.columns.len() - 1,
                        out.len() - 1
                    ),
                });
            }
            return Ok(Some(self.line_no));
        }
    }

    fn path(&self) -> &Path {
        &self.path
    }
}

/// Parquet through the `parquet` crate's row API (no Arrow). List columns are joined with the
/// field's splitter so sequence fields read the same from Parquet as from CSV. The path may be
/// one file or a dataset directory of part files as Spark and DataFusion write them (read in
/// name order; `_SUCCESS`, `_committed_*`, hidden and `.crc` files ignored); every part must
/// have the same columns. Snappy, gzip, zstd and lz4 pages are read.
pub struct ParquetReader {
    /// The file being read (errors name it).
    path: PathBuf,
    /// The parts still to read after this one.
    rest: std::vec::IntoIter<PathBuf>,
    columns: Vec<String>,
    rows: parquet::record::reader::RowIter<'static>,
    splitters: std::collections::HashMap<String, String>,
    row_no: u64,
}

/// The data files of a Parquet path: itself, or a directory's part files in name order.
pub fn parquet_parts(path: &Path) -> Result<Vec<PathBuf>> {
    if !path.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut parts = Vec::new();
    for entry in std::fs::read_dir(path).map_err(|e| DataError::io(path, e))? {
        let entry = entry.map_err(|e| DataError::io(path, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        // Spark's markers (_SUCCESS, _committed_…, _started_…) and checksums (.part-….crc)
        if name.starts_with('_') || name.starts_with('.') || name.ends_with(".crc") {
            continue;
        }
        if entry
            .file_type()
            .map_err(|e| DataError::io(path, e))?
            .is_file()
        {
            parts.push(entry.path());
        }
    }
    parts.sort();
    if parts.is_empty() {
        return Err(DataError::format(
            path,
            "a Parquet dataset directory with no part files",
        ));
    }
    Ok(parts)
}

fn open_parquet_file(
    path: &Path,
) -> Result<(Vec<String>, parquet::record::reader::RowIter<'static>)> {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    let file = File::open(path).map_err(|e| DataError::io(path, e))?;
    let reader = SerializedFileReader::new(file)
        .map_err(|e| DataError::format(path, format!("not a Parquet file: {e}")))?;
    let columns = reader
        .metadata()
        .file_metadata()
        .schema_descr()
        .root_schema()
        .get_fields()
        .iter()
        .map(|f| f.name().to_string())
        .collect();
    Ok((
        columns,
        parquet::record::reader::RowIter::from_file_into(Box::new(reader)),
    ))
}

impl ParquetReader {
    pub fn open(path: &Path, splitters: std::collections::HashMap<String, String>) -> Result<Self> {
        let mut parts = parquet_parts(path)?.into_iter();
        let first = parts
            .next()
            .expect("parquet_parts returns at least one file");
        let (columns, rows) = open_parquet_file(&first)?;
        Ok(ParquetReader {
            path: first,
            rest: parts,
            columns,
            rows,
            splitters,
            row_no: 0,
        })
    }

    /// Moves to the next part file; `false` when none is left.
    fn next_part(&mut self) -> Result<bool> {
        let Some(next) = self.rest.next() else {
            return Ok(false);
        };
        let (columns, rows) = open_parquet_file(&next)?;
        if columns != self.columns {
            return Err(DataError::format(
                &next,
                format!(
                    "columns ({}) differ from the first part's ({})",
                    columns.join(", "),
                    self.columns.join(", ")
                ),
            ));
        }
        self.path = next;
        self.rows = rows;
        self.row_no = 0;
        Ok(true)
    }
}

fn field_to_string(f: &parquet::record::Field, splitter: &str) -> String {
    use parquet::record::Field;
    match f {
        Field::Null => String::new(),
        Field::Str(s) => s.clone(),
        Field::Bool(b) => (*b as u8).to_string(),
        Field::Byte(x) => x.to_string(),
        Field::Short(x) => x.to_string(),
        Field::Int(x) => x.to_string(),
        Field::Long(x) => x.to_string(),
        Field::UByte(x) => x.to_string(),
        Field::UShort(x) => x.to_string(),
        Field::UInt(x) => x.to_string(),
        Field::ULong(x) => x.to_string(),
        Field::Float(x) => x.to_string(),
        Field::Double(x) => x.to_string(),
        Field::ListInternal(list) => list
            .elements()
            .iter()
            .map(|e| field_to_string(e, splitter))
            .collect::<Vec<_>>()
            .join(splitter),
        other => other.to_string(),
    }
}

impl RecordReader for ParquetReader {
    fn columns(&self) -> &[String] {
        &self.columns
    }

    fn next_record(&mut self, out: &mut Vec<String>) -> Result<Option<u64>> {
        let row = loop {
            match self.rows.next() {
                Some(row) => break row,
                None if self.next_part()? => continue,
                None => return Ok(None),
            }
        };
        self.row_no += 1;
        let row = row.map_err(|e| DataError::BadRow {
            path: self.path.clone(),
            line: self.row_no,
            field: "-".into(),
            msg: e.to_string(),
        })?;
        out.clear();
        for (name, field) in row.get_column_iter() {
            let sp = self.splitters.get(name).map(String::as_str).unwrap_or("^");
            out.push(field_to_string(field, sp));
        }
        Ok(Some(self.row_no))
    }

    fn path(&self) -> &Path {
        &self.path
    }
}

/// Every value of column `column` of a CSV/TSV (with a header line), Parquet or JSON Lines
/// file, chosen by extension (a directory is a Parquet dataset), in row order. A JSON value must be a string or a number; a
/// missing column names the columns there are.
pub fn read_column(path: &Path, column: &str) -> Result<Vec<String>> {
    let ext = path
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    if ext == "jsonl" || ext == "ndjson" {
        return read_jsonl_column(path, column);
    }
    let mut reader: Box<dyn RecordReader> = match ext.as_str() {
        _ if path.is_dir() => Box::new(ParquetReader::open(path, Default::default())?),
        "csv" => Box::new(DelimitedReader::open(path, b',', true, Vec::new())?),
        "tsv" | "txt" => Box::new(DelimitedReader::open(path, b'\t', true, Vec::new())?),
        "parquet" => Box::new(ParquetReader::open(path, Default::default())?),
        _ => {
            return Err(DataError::format(
                path,
                "unknown extension: expected .csv, .tsv, .parquet or .jsonl",
            ))
        }
    };
    let idx = crate::features::column_index(reader.as_ref(), column)?;
    let mut out = Vec::new();
    let mut rec = Vec::new();
    while reader.next_record(&mut rec)?.is_some() {
        out.push(std::mem::take(&mut rec[idx]));
    }
    Ok(out)
}

fn read_jsonl_column(path: &Path, column: &str) -> Result<Vec<String>> {
    let file = File::open(path).map_err(|e| DataError::io(path, e))?;
    let mut out = Vec::new();
    for (i, line) in BufReader::new(file).lines().enumerate() {
        let line = line.map_err(|e| DataError::io(path, e))?;
        if line.trim().is_empty() {
            continue;
        }
        let bad = |msg: String| DataError::BadRow {
            path: path.to_path_buf(),
            line: i as u64 + 1,
            field: column.to_string(),
            msg,
        };
        let v: serde_json::Value =
            serde_json::from_str(&line).map_err(|e| bad(format!("not JSON: {e}")))?;
        match v.get(column) {
            Some(serde_json::Value::String(s)) => out.push(s.clone()),
            Some(serde_json::Value::Number(n)) => out.push(n.to_string()),
            Some(other) => return Err(bad(format!("expected a string, found {other}"))),
            None => return Err(bad("missing".into())),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (line, first value) of every record of `text` read as a headed CSV, bad rows as
    /// `(line, "!")`.
    fn lines_of(text: &[u8]) -> Vec<(u64, String)> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f.csv");
        std::fs::write(&p, text).unwrap();
        let mut r = DelimitedReader::open(&p, b',', true, Vec::new()).unwrap();
        let mut out = Vec::new();
        let mut rec = Vec::new();
        loop {
            match r.next_record(&mut rec) {
                Ok(Some(l)) => out.push((l, rec[0].trim().to_string())),
                Ok(None) => break,
                Err(DataError::BadRow { line, .. }) => out.push((line, "!".into())),
                Err(e) => panic!("{e}"),
            }
        }
        out
    }

    fn pairs(v: &[(u64, &str)]) -> Vec<(u64, String)> {
        v.iter().map(|(l, s)| (*l, s.to_string())).collect()
    }

    #[test]
    fn line_numbers_hold_for_crlf_blank_lines_and_quoted_line_breaks() {
        let want = pairs(&[(2, "a"), (3, "b"), (5, "c"), (8, "d")]);
        assert_eq!(lines_of(b"x,y\na,1\nb,2\n\nc,\"p\nq\"\n\nd,4\n"), want);
        assert_eq!(
            lines_of(b"x,y\r\na,1\r\nb,2\r\n\r\nc,\"p\nq\"\r\n\r\nd,4\r\n"),
            want
        );
        // no line break after the last line
        assert_eq!(lines_of(b"x,y\na,1\nb,2"), pairs(&[(2, "a"), (3, "b")]));
    }

    #[test]
    fn an_unclosed_quote_spoils_its_own_line_only() {
        // wrong column count, after a blank line, in CRLF
        assert_eq!(
            lines_of(b"x,y\r\na,1\r\n\r\nb,\"2,3\r\nc,3\r\nd,4\r\n"),
            pairs(&[(2, "a"), (4, "!"), (5, "c"), (6, "d")])
        );
        // after empty lines, which the csv crate passes over inside the read
        assert_eq!(
            lines_of(b"x,y\na,1\n\n\nb,\"2,3\nc,3\n"),
            pairs(&[(2, "a"), (5, "!"), (6, "c")])
        );
        // in the last column, no other quote after it: the record would run to the end
        assert_eq!(
            lines_of(b"x,y\na,1\nb,\"2\nc,3\nd,4\n"),
            pairs(&[(2, "a"), (3, "!"), (4, "c"), (5, "d")])
        );
    }
}
