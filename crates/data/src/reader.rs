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

/// CSV or TSV, with or without a header line (quotes handled by the `csv` crate).
pub struct DelimitedReader {
    path: PathBuf,
    columns: Vec<String>,
    inner: csv::Reader<BufReader<File>>,
    record: csv::StringRecord,
}

impl DelimitedReader {
    pub fn open(path: &Path, delimiter: u8, header: bool, positional: Vec<String>) -> Result<Self> {
        let file = File::open(path).map_err(|e| DataError::io(path, e))?;
        let mut inner = csv::ReaderBuilder::new()
            .delimiter(delimiter)
            .has_headers(false)
            .flexible(true)
            .quoting(delimiter == b',')
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
        })
    }
}

fn csv_error(path: &Path, e: csv::Error) -> DataError {
    let line = e.position().map(|p| p.line()).unwrap_or(0);
    DataError::BadRow {
        path: path.to_path_buf(),
        line,
        field: "-".into(),
        msg: e.to_string(),
    }
}

impl DelimitedReader {
    /// Moves the reader to the start of the line after `line`, where the last record began.
    fn resync_after_line(&mut self, line: u64) -> Result<()> {
        use std::io::{Seek, SeekFrom};
        let start = self.record.position().map_or(0, |p| p.byte());
        let mut f = File::open(&self.path).map_err(|e| DataError::io(&self.path, e))?;
        f.seek(SeekFrom::Start(start))
            .map_err(|e| DataError::io(&self.path, e))?;
        let mut first_line = Vec::new();
        BufReader::new(f)
            .read_until(b'\n', &mut first_line)
            .map_err(|e| DataError::io(&self.path, e))?;
        let mut pos = csv::Position::new();
        pos.set_byte(start + first_line.len() as u64)
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
            let line = self.record.position().map(|p| p.line()).unwrap_or(0);
            if self.record.len() == 1 && self.record[0].is_empty() {
                continue; // blank line
            }
            if self.record.len() != self.columns.len() {
                let mut msg = format!(
                    "expected {} columns, found {}",
                    self.columns.len(),
                    self.record.len()
                );
                if self.record.iter().any(|f| f.contains(['\n', '\r'])) {
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
            let line = line.map_err(|e| DataError::io(&self.path, e))?;
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
/// field's splitter so sequence fields read the same from Parquet as from CSV.
pub struct ParquetReader {
    path: PathBuf,
    columns: Vec<String>,
    rows: parquet::record::reader::RowIter<'static>,
    splitters: std::collections::HashMap<String, String>,
    row_no: u64,
}

impl ParquetReader {
    pub fn open(path: &Path, splitters: std::collections::HashMap<String, String>) -> Result<Self> {
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
        let rows = parquet::record::reader::RowIter::from_file_into(Box::new(reader));
        Ok(ParquetReader {
            path: path.to_path_buf(),
            columns,
            rows,
            splitters,
            row_no: 0,
        })
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
        let Some(row) = self.rows.next() else {
            return Ok(None);
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
/// file, chosen by extension, in row order. A JSON value must be a string or a number; a
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
