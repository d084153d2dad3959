//! FuxiCTR's config format, read as it is: a config directory holds `dataset_config.yaml` (or a
//! `dataset_config/` folder of YAML files) mapping dataset ids to dataset configs, and
//! `model_config.yaml` (or `model_config/`) mapping experiment ids to model configs, with a
//! `Base` entry that every experiment inherits. Relative data paths are taken from the working
//! directory, as FuxiCTR does.

use crate::error::{DataError, Result};
use serde::Deserialize;
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DataFormat {
    Csv,
    Tsv,
    #[serde(alias = "libfm")]
    Libsvm,
    Parquet,
}

#[derive(Clone, Debug, Deserialize, serde::Serialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn names(&self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s.clone()],
            OneOrMany::Many(v) => v.clone(),
        }
    }
}

fn yes() -> bool {
    true
}

/// One entry of `feature_cols`, as written; a list of names expands into one field each.
#[derive(Clone, Debug, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawFeatureCol {
    pub name: OneOrMany,
    #[serde(default = "yes")]
    pub active: bool,
    #[serde(default)]
    pub dtype: Option<String>,
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub preprocess: Option<String>,
    #[serde(default)]
    pub fill_na: Option<Value>,
    #[serde(default)]
    pub min_categr_count: Option<usize>,
    #[serde(default)]
    pub embedding_dim: Option<usize>,
    #[serde(default)]
    pub share_embedding: Option<String>,
    #[serde(default)]
    pub max_len: Option<usize>,
    #[serde(default)]
    pub splitter: Option<String>,
    #[serde(default)]
    pub padding: Option<String>,
    /// FuxiCTR's encoder of a sequence field: its default masked average pooling, or null to
    /// keep the positions (DIN's sequences). recforge pools every sequence field except those a
    /// model attends over, so both values are accepted and anything else refused.
    #[serde(default)]
    pub feature_encoder: Option<Value>,
    /// recforge extension, `type: text` fields: the sentence-transformers model directory
    /// that encodes them (default: $RECFORGE_MODELS/all-MiniLM-L6-v2).
    #[serde(default)]
    pub text_model: Option<String>,
}

#[derive(Clone, Debug, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct LabelCol {
    pub name: String,
    #[serde(default)]
    pub dtype: Option<String>,
}

#[derive(Clone, Debug, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawDatasetConfig {
    #[serde(default)]
    pub data_root: Option<String>,
    pub data_format: DataFormat,
    pub train_data: String,
    #[serde(default)]
    pub valid_data: Option<String>,
    #[serde(default)]
    pub test_data: Option<String>,
    #[serde(default)]
    pub min_categr_count: Option<usize>,
    pub feature_cols: Vec<RawFeatureCol>,
    pub label_col: LabelCol,
    /// recforge extension: whether CSV/TSV files start with a header line (default: CSV yes,
    /// TSV no). Without one, columns are the label then the features in config order.
    #[serde(default)]
    pub header: Option<bool>,
}

pub use crate::preprocess::Preprocess;

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum FieldKind {
    Categorical,
    Numeric,
    Sequence {
        max_len: usize,
        splitter: String,
        pad_post: bool,
    },
}

/// One input field after expanding the config.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct FieldSpec {
    pub name: String,
    pub kind: FieldKind,
    /// Whether the raw value is a number (`dtype: float|int`) rather than a string.
    pub numeric_dtype: bool,
    pub preprocess: Option<Preprocess>,
    /// The column a preprocess reads when the config names one (`convert_hour(time_stamp)`).
    #[serde(default)]
    pub preprocess_arg: Option<String>,
    /// The token that stands for a missing value; it maps to OOV, never into the vocabulary.
    pub fill_na: String,
    pub min_count: usize,
    pub embedding_dim: Option<usize>,
    pub share_embedding: Option<String>,
    /// A `type: text` field: categorical over whole texts, each embedded as its frozen
    /// sentence vector times a learned projection.
    #[serde(default)]
    pub text: bool,
    /// The encoder of a text field (a sentence-transformers directory); `None`: the default.
    #[serde(default)]
    pub text_model: Option<String>,
}

impl FieldSpec {
    /// The columns this field may read its raw value from, in order of preference: its own,
    /// or the source of its preprocess.
    pub fn source_columns(&self) -> Vec<&str> {
        match self.preprocess {
            Some(p) => p.source_columns(&self.name, self.preprocess_arg.as_deref()),
            None => vec![self.name.as_str()],
        }
    }
}

#[derive(Clone, Debug)]
pub struct DatasetConfig {
    pub dataset_id: String,
    pub raw: RawDatasetConfig,
    pub fields: Vec<FieldSpec>,
    /// The file the config came from, for error messages.
    pub source: PathBuf,
}

fn value_to_token(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => normalize_number(&n.to_string()),
        Value::Bool(b) => b.to_string(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// `"1.0"` and `"1"` are the same number: integral values print without a fraction.
pub fn normalize_number(s: &str) -> String {
    match s.trim().parse::<f64>() {
        Ok(x) if x.fract() == 0.0 && x.abs() < 1e15 => format!("{}", x as i64),
        Ok(x) => format!("{x}"),
        Err(_) => s.to_string(),
    }
}

impl DatasetConfig {
    pub fn from_raw(dataset_id: &str, raw: RawDatasetConfig, source: &Path) -> Result<Self> {
        let mut fields = Vec::new();
        let global_min = raw.min_categr_count.unwrap_or(1);
        for col in &raw.feature_cols {
            if !col.active {
                continue;
            }
            let numeric_dtype = matches!(
                col.dtype.as_deref(),
                Some("float" | "int" | "float32" | "int32" | "int64" | "float64")
            );
            let text = col.kind == "text";
            let bad = |msg: String| {
                DataError::config(
                    source,
                    format!(
                        "dataset `{dataset_id}`, field {:?}: {msg}",
                        col.name.names()
                    ),
                )
            };
            if col.embedding_dim == Some(0) {
                return Err(bad("embedding_dim must be positive".into()));
            }
            if col.max_len == Some(0) {
                return Err(bad("max_len must be positive".into()));
            }
            if col.splitter.as_deref() == Some("") {
                return Err(bad("splitter must not be empty".into()));
            }
            match &col.feature_encoder {
                None | Some(Value::Null) => {}
                Some(Value::String(e))
                    if matches!(
                        e.as_str(),
                        "null" | "None" | "none" | "layers.MaskedAveragePooling()"
                    ) => {}
                Some(other) => {
                    return Err(bad(format!(
                        "feature_encoder {other} is not supported (null, or \
                         layers.MaskedAveragePooling())"
                    )))
                }
            }
            if let Some(p) = col
                .padding
                .as_deref()
                .filter(|p| !matches!(*p, "post" | "pre"))
            {
                return Err(bad(format!("padding `{p}` (post or pre)")));
            }
            let kind = match col.kind.as_str() {
                "categorical" | "text" => FieldKind::Categorical,
                "numeric" => FieldKind::Numeric,
                "sequence" => FieldKind::Sequence {
                    max_len: col.max_len.ok_or_else(|| {
                        DataError::config(
                            source,
                            format!("sequence field {:?} needs max_len", col.name.names()),
                        )
                    })?,
                    splitter: col.splitter.clone().unwrap_or_else(|| "^".into()),
                    pad_post: col.padding.as_deref().unwrap_or("post") == "post",
                },
                other => {
                    return Err(DataError::config(
                        source,
                        format!(
                        "feature type `{other}` is not supported (categorical, numeric, sequence, \
                            text)"
                    ),
                    ))
                }
            };
            let (preprocess, preprocess_arg) = match col.preprocess.as_deref() {
                None => (None, None),
                Some(text) => {
                    let (p, arg) =
                        Preprocess::parse(text).map_err(|m| DataError::config(source, m))?;
                    (Some(p), arg)
                }
            };
            let fill_na = match &col.fill_na {
                Some(v) => value_to_token(v),
                None if numeric_dtype => "0".into(),
                None => String::new(),
            };
            for name in col.name.names() {
                fields.push(FieldSpec {
                    name,
                    kind: kind.clone(),
                    numeric_dtype,
                    preprocess,
                    preprocess_arg: preprocess_arg.clone(),
                    fill_na: fill_na.clone(),
                    // a text's vector is not learned: every text gets its row, however rare
                    min_count: if text {
                        1
                    } else {
                        col.min_categr_count.unwrap_or(global_min)
                    },
                    embedding_dim: col.embedding_dim,
                    share_embedding: col.share_embedding.clone(),
                    text,
                    text_model: col.text_model.clone(),
                });
            }
        }
        if fields.is_empty() {
            return Err(DataError::config(
                source,
                format!("dataset `{dataset_id}` has no active feature_cols"),
            ));
        }
        let mut seen = std::collections::HashSet::new();
        for f in &fields {
            if !seen.insert(f.name.as_str()) {
                return Err(DataError::config(
                    source,
                    format!(
                        "dataset `{dataset_id}`: field `{}` is listed twice in feature_cols",
                        f.name
                    ),
                ));
            }
            if f.name == raw.label_col.name {
                return Err(DataError::config(
                    source,
                    format!(
                        "dataset `{dataset_id}`: the label `{}` is also a feature",
                        f.name
                    ),
                ));
            }
        }
        for f in &fields {
            if let Some(s) = &f.share_embedding {
                if !fields.iter().any(|g| &g.name == s) {
                    return Err(DataError::config(
                        source,
                        format!(
                            "field `{}` shares the embedding of unknown field `{s}`",
                            f.name
                        ),
                    ));
                }
            }
        }
        Ok(DatasetConfig {
            dataset_id: dataset_id.to_string(),
            raw,
            fields,
            source: source.to_path_buf(),
        })
    }

    /// A config that reads one file with an already-fitted set of fields (scoring a saved
    /// model): the format is taken from the file's extension.
    pub fn for_file(path: &Path, fields: Vec<FieldSpec>, label: &str) -> Result<Self> {
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .unwrap_or("")
            .to_ascii_lowercase();
        let data_format = match ext.as_str() {
            "csv" => DataFormat::Csv,
            "tsv" | "txt" => DataFormat::Tsv,
            "libsvm" | "libfm" | "svm" => DataFormat::Libsvm,
            "parquet" | "pq" => DataFormat::Parquet,
            other => {
                return Err(DataError::format(
                    path,
                    format!(
                        "cannot tell the format from the \
                extension `{other}` (csv, tsv, libsvm, libfm, parquet)"
                    ),
                ))
            }
        };
        let raw = RawDatasetConfig {
            data_root: None,
            data_format,
            train_data: path.display().to_string(),
            valid_data: None,
            test_data: None,
            min_categr_count: None,
            feature_cols: Vec::new(),
            label_col: LabelCol {
                name: label.to_string(),
                dtype: None,
            },
            header: None,
        };
        Ok(DatasetConfig {
            dataset_id: "scoring".into(),
            raw,
            fields,
            source: path.to_path_buf(),
        })
    }

    pub fn has_header(&self) -> bool {
        self.raw.header.unwrap_or(matches!(
            self.raw.data_format,
            DataFormat::Csv | DataFormat::Parquet
        ))
    }

    /// Column order of header-less files: the label, then the fields in config order (a
    /// field derived from another column, such as Avazu's `weekday`, has no column of its own).
    pub fn positional_columns(&self) -> Vec<String> {
        std::iter::once(self.raw.label_col.name.clone())
            .chain(
                self.fields
                    .iter()
                    .filter(|f| f.source_columns().contains(&f.name.as_str()))
                    .map(|f| f.name.clone()),
            )
            .collect()
    }

    pub fn data_root(&self) -> PathBuf {
        PathBuf::from(
            self.raw
                .data_root
                .clone()
                .unwrap_or_else(|| "./processed/".into()),
        )
        .join(&self.dataset_id)
    }

    /// A canonical rendering that identifies everything encoding depends on.
    pub fn canonical_json(&self) -> String {
        serde_json::json!({
            "format": self.raw.data_format,
            "train": self.raw.train_data, "valid": self.raw.valid_data, "test": self.raw.test_data,
            "header": self.has_header(),
            "label": self.raw.label_col.name,
            "fields": self.fields,
        })
        .to_string()
    }
}

/// A model config: the merged `Base` + experiment entries, with typed accessors.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct ModelConfig {
    pub expid: String,
    pub values: Map<String, Value>,
}

impl ModelConfig {
    pub fn new(expid: impl Into<String>, values: Map<String, Value>) -> Self {
        ModelConfig {
            expid: expid.into(),
            values,
        }
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.values.get(key).filter(|v| !v.is_null())
    }

    pub fn str_or(&self, key: &str, default: &str) -> String {
        match self.get(key) {
            Some(Value::String(s)) => s.clone(),
            Some(v) => v.to_string(),
            None => default.to_string(),
        }
    }

    pub fn f64_or(&self, key: &str, default: f64) -> Result<f64> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v
                .as_f64()
                .ok_or_else(|| self.type_error(key, "a number", v)),
        }
    }

    pub fn usize_or(&self, key: &str, default: usize) -> Result<usize> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v
                .as_u64()
                .map(|x| x as usize)
                .ok_or_else(|| self.type_error(key, "a non-negative integer", v)),
        }
    }

    pub fn bool_or(&self, key: &str, default: bool) -> Result<bool> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v
                .as_bool()
                .ok_or_else(|| self.type_error(key, "true or false", v)),
        }
    }

    pub fn usize_list_or(&self, key: &str, default: &[usize]) -> Result<Vec<usize>> {
        match self.get(key) {
            None => Ok(default.to_vec()),
            Some(Value::Array(a)) => a
                .iter()
                .map(|v| {
                    v.as_u64()
                        .map(|x| x as usize)
                        .ok_or_else(|| self.type_error(key, "a list of integers", v))
                })
                .collect(),
            Some(v) => Err(self.type_error(key, "a list of integers", v)),
        }
    }

    /// `net_dropout`-style values: a number, or a list with one number per layer (first used).
    pub fn f64_or_first(&self, key: &str, default: f64) -> Result<f64> {
        match self.get(key) {
            Some(Value::Array(a)) => a
                .first()
                .and_then(|v| v.as_f64())
                .ok_or_else(|| self.type_error(key, "a number", &Value::Array(a.clone()))),
            _ => self.f64_or(key, default),
        }
    }

    /// The number at `key` (or `default`) if `ok` holds for it, else an error saying `want`.
    fn f64_where(&self, key: &str, default: f64, ok: fn(f64) -> bool, want: &str) -> Result<f64> {
        let x = self.f64_or(key, default)?;
        if ok(x) {
            Ok(x)
        } else {
            Err(self.type_error(key, want, &Value::from(x)))
        }
    }

    /// A positive, finite number.
    pub fn positive_f64_or(&self, key: &str, default: f64) -> Result<f64> {
        self.f64_where(
            key,
            default,
            |x| x > 0.0 && x.is_finite(),
            "a positive number",
        )
    }

    /// A non-negative, finite number.
    pub fn non_negative_f64_or(&self, key: &str, default: f64) -> Result<f64> {
        self.f64_where(
            key,
            default,
            |x| x >= 0.0 && x.is_finite(),
            "a non-negative number",
        )
    }

    /// A positive number that stays positive and finite as an f32 (learning rates: `1e-50`
    /// would silently become 0).
    pub fn positive_f32_or(&self, key: &str, default: f64) -> Result<f32> {
        self.positive_f64_or(key, default)?;
        let want = "a positive number that fits a 32-bit float";
        Ok(self.f64_where(key, default, |x| (x as f32).is_normal(), want)? as f32)
    }

    /// A non-negative number that stays finite as an f32 (regularisation weights).
    pub fn non_negative_f32_or(&self, key: &str, default: f64) -> Result<f32> {
        self.non_negative_f64_or(key, default)?;
        let want = "a non-negative number that fits a 32-bit float";
        Ok(self.f64_where(key, default, |x| (x as f32).is_finite(), want)? as f32)
    }

    /// A positive integer.
    pub fn positive_usize_or(&self, key: &str, default: usize) -> Result<usize> {
        match self.usize_or(key, default)? {
            0 => Err(self.type_error(key, "a positive integer", &Value::from(0))),
            n => Ok(n),
        }
    }

    /// Refuses keys outside `known` (with the nearest known key as a suggestion); returns a
    /// warning for each key of `ignored` present (keys a peer's config carries that do not
    /// change what recforge does, e.g. FuxiCTR's `num_workers`).
    pub fn check_keys(&self, known: &[&str], ignored: &[&str]) -> Result<Vec<String>> {
        let mut warnings = Vec::new();
        let mut unknown = Vec::new();
        for key in self.values.keys() {
            if known.contains(&key.as_str()) {
                continue;
            }
            if ignored.contains(&key.as_str()) {
                if self.get(key).is_some() {
                    warnings.push(format!(
                        "model config `{}`: `{key}` is not used by recforge (ignored)",
                        self.expid
                    ));
                }
                continue;
            }
            let nearest = known
                .iter()
                .map(|k| (strsim::damerau_levenshtein(key, k), *k))
                .min()
                .filter(|(d, k)| *d <= 2.max(k.len() / 4));
            unknown.push(match nearest {
                Some((_, k)) => format!("`{key}` (did you mean `{k}`?)"),
                None => format!("`{key}`"),
            });
        }
        if unknown.is_empty() {
            return Ok(warnings);
        }
        Err(DataError::Other(format!(
            "model config `{}`: unknown key{} {}",
            self.expid,
            if unknown.len() > 1 { "s" } else { "" },
            unknown.join(", ")
        )))
    }

    fn type_error(&self, key: &str, want: &str, got: &Value) -> DataError {
        DataError::Other(format!(
            "model config `{}`: `{key}` should be {want}, got {got}",
            self.expid
        ))
    }
}

/// A dataset config plus a model config, picked by experiment id.
#[derive(Clone, Debug)]
pub struct ExperimentConfig {
    pub expid: String,
    pub model: ModelConfig,
    pub dataset: DatasetConfig,
}

fn read_yaml_maps(dir: &Path, stem: &str) -> Result<Vec<(PathBuf, Map<String, Value>)>> {
    let mut files = Vec::new();
    for ext in ["yaml", "yml"] {
        let f = dir.join(format!("{stem}.{ext}"));
        if f.is_file() {
            files.push(f);
        }
    }
    let sub = dir.join(stem);
    if sub.is_dir() {
        let mut inner: Vec<PathBuf> = std::fs::read_dir(&sub)
            .map_err(|e| DataError::io(&sub, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")))
            .collect();
        inner.sort();
        files.extend(inner);
    }
    if files.is_empty() {
        return Err(DataError::config(
            dir,
            format!("no {stem}.yaml (or {stem}/*.yaml) in the config directory"),
        ));
    }
    files
        .into_iter()
        .map(|f| {
            let text = std::fs::read_to_string(&f).map_err(|e| DataError::io(&f, e))?;
            let yaml: serde_norway::Value = serde_norway::from_str(&text)
                .map_err(|e| DataError::config(&f, format!("invalid YAML: {e}")))?;
            // JSON has no NaN or infinity: they would silently become null (the default)
            if let Some(at) = non_finite_at(&yaml, "") {
                return Err(DataError::config(
                    &f,
                    format!("`{at}` is not a finite number"),
                ));
            }
            let v: Value = serde_json::to_value(&yaml)
                .map_err(|e| DataError::config(&f, format!("invalid YAML: {e}")))?;
            match v {
                Value::Object(m) => Ok((f, m)),
                Value::Null => Ok((f, Map::new())),
                _ => Err(DataError::config(
                    &f,
                    "expected a mapping of ids to configs",
                )),
            }
        })
        .collect()
}

/// The key path of the first non-finite number in a YAML value.
fn non_finite_at(v: &serde_norway::Value, path: &str) -> Option<String> {
    use serde_norway::Value as Y;
    match v {
        Y::Number(n) if n.as_f64().is_some_and(|x| !x.is_finite()) => Some(path.to_string()),
        Y::Sequence(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, x)| non_finite_at(x, &format!("{path}[{i}]"))),
        Y::Mapping(m) => m.iter().find_map(|(k, x)| {
            let key = match k {
                Y::String(s) => s.clone(),
                other => format!("{other:?}"),
            };
            let p = if path.is_empty() {
                key
            } else {
                format!("{path}.{key}")
            };
            non_finite_at(x, &p)
        }),
        Y::Tagged(t) => non_finite_at(&t.value, path),
        _ => None,
    }
}

pub fn load_dataset_config(dir: &Path, dataset_id: &str) -> Result<DatasetConfig> {
    for (file, map) in read_yaml_maps(dir, "dataset_config")? {
        if let Some(v) = map.get(dataset_id) {
            let raw: RawDatasetConfig = serde_json::from_value(v.clone())
                .map_err(|e| DataError::config(&file, format!("dataset `{dataset_id}`: {e}")))?;
            return DatasetConfig::from_raw(dataset_id, raw, &file);
        }
    }
    Err(DataError::config(
        dir,
        format!("dataset id `{dataset_id}` not found in dataset_config"),
    ))
}

/// The model config of experiment `expid` (`Base` merged under it) and its `dataset_id`.
pub fn load_model_config(dir: &Path, expid: &str) -> Result<(ModelConfig, String)> {
    let maps = read_yaml_maps(dir, "model_config")?;
    let mut base = Map::new();
    let mut exp: Option<(PathBuf, Map<String, Value>)> = None;
    for (file, map) in &maps {
        if let Some(Value::Object(b)) = map.get("Base") {
            base.extend(b.clone());
        }
        if let Some(v) = map.get(expid) {
            match v {
                Value::Object(m) => exp = Some((file.clone(), m.clone())),
                _ => {
                    return Err(DataError::config(
                        file,
                        format!("experiment `{expid}` is not a mapping"),
                    ))
                }
            }
        }
    }
    let (file, exp) = exp.ok_or_else(|| {
        let mut ids: Vec<&String> = maps
            .iter()
            .flat_map(|(_, m)| m.keys())
            .filter(|k| *k != "Base")
            .collect();
        ids.sort();
        DataError::config(
            dir,
            format!(
                "experiment id `{expid}` not found in model_config; known: {}",
                ids.iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )
    })?;
    base.extend(exp);
    let model = ModelConfig::new(expid, base);
    let dataset_id = match model.get("dataset_id") {
        Some(Value::String(s)) => s.clone(),
        _ => {
            return Err(DataError::config(
                &file,
                format!("experiment `{expid}` has no dataset_id"),
            ))
        }
    };
    Ok((model, dataset_id))
}

/// A dataset entry of any family: CTR rows, interactions (`task: topk`), users' item
/// sequences (`task: seq`) or students' responses (`task: kt`).
#[derive(Clone, Debug)]
pub enum DatasetEntry {
    Ctr(DatasetConfig),
    Topk {
        dataset_id: String,
        config: crate::interactions::InteractionConfig,
        /// the YAML file it came from
        source: PathBuf,
    },
    Seq {
        dataset_id: String,
        config: crate::sequences::SequenceConfig,
        source: PathBuf,
    },
    /// Students' response sequences (`task: kt`).
    Kt {
        dataset_id: String,
        config: crate::kt::KtDatasetConfig,
        source: PathBuf,
    },
}

/// Reads dataset `dataset_id`, as the family its `task` key names (none: CTR).
pub fn load_dataset_entry(dir: &Path, dataset_id: &str) -> Result<DatasetEntry> {
    for (file, map) in read_yaml_maps(dir, "dataset_config")? {
        let Some(v) = map.get(dataset_id) else {
            continue;
        };
        return match v.get("task").and_then(Value::as_str) {
            Some("topk") => {
                let config: crate::interactions::InteractionConfig =
                    serde_json::from_value(v.clone()).map_err(|e| {
                        DataError::config(&file, format!("dataset `{dataset_id}`: {e}"))
                    })?;
                config.validate(&file)?;
                Ok(DatasetEntry::Topk {
                    dataset_id: dataset_id.to_string(),
                    config,
                    source: file,
                })
            }
            Some("seq") => {
                let config: crate::sequences::SequenceConfig = serde_json::from_value(v.clone())
                    .map_err(|e| {
                        DataError::config(&file, format!("dataset `{dataset_id}`: {e}"))
                    })?;
                Ok(DatasetEntry::Seq {
                    dataset_id: dataset_id.to_string(),
                    config,
                    source: file,
                })
            }
            Some("kt") => {
                let config: crate::kt::KtDatasetConfig = serde_json::from_value(v.clone())
                    .map_err(|e| {
                        DataError::config(&file, format!("dataset `{dataset_id}`: {e}"))
                    })?;
                Ok(DatasetEntry::Kt {
                    dataset_id: dataset_id.to_string(),
                    config,
                    source: file,
                })
            }
            Some(other) => Err(DataError::config(
                &file,
                format!(
                    "dataset `{dataset_id}`: unknown task `{other}` (topk, seq, kt, or none for CTR)"
                ),
            )),
            None => load_dataset_config(dir, dataset_id).map(DatasetEntry::Ctr),
        };
    }
    Err(DataError::config(
        dir,
        format!("dataset id `{dataset_id}` not found in dataset_config"),
    ))
}

/// A CTR experiment: its model config and dataset config.
pub fn load_experiment(dir: &Path, expid: &str) -> Result<ExperimentConfig> {
    let (model, dataset_id) = load_model_config(dir, expid)?;
    let dataset = match load_dataset_entry(dir, &dataset_id)? {
        DatasetEntry::Ctr(d) => d,
        DatasetEntry::Topk { source, .. } => {
            return Err(DataError::config(
                source,
                format!("dataset `{dataset_id}` is a top-K dataset (task: topk), not CTR rows"),
            ))
        }
        DatasetEntry::Seq { source, .. } => {
            return Err(DataError::config(
                source,
                format!("dataset `{dataset_id}` holds item sequences (task: seq), not CTR rows"),
            ))
        }
        DatasetEntry::Kt { source, .. } => {
            return Err(DataError::config(
                source,
                format!("dataset `{dataset_id}` holds response sequences (task: kt), not CTR rows"),
            ))
        }
    };
    Ok(ExperimentConfig {
        expid: expid.to_string(),
        model,
        dataset,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_fuxictr_configs_with_base_and_lists() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("dataset_config.yaml"),
            r#"
criteo_s:
    data_root: ./processed/
    data_format: csv
    train_data: ./data/criteo/train.csv
    valid_data: ./data/criteo/valid.csv
    min_categr_count: 2
    feature_cols:
        - {name: [I1, I2], active: True, dtype: float, type: categorical, preprocess: convert_to_bucket, fill_na: 0}
        - {name: [C1, C2, C3], active: True, dtype: str, type: categorical, fill_na: ""}
        - {name: genres, active: True, dtype: str, type: sequence, splitter: ^, max_len: 6, padding: post}
        - {name: off, active: False, dtype: str, type: categorical}
    label_col: {name: label, dtype: float}
"#,
        )
        .unwrap();
        std::fs::write(
            dir.path().join("model_config.yaml"),
            "Base: {model_root: ./checkpoints/, early_stop_patience: 2}\nDeepFM_c:\n  model: \
                DeepFM\n  dataset_id: criteo_s\n  hidden_units: [400, 400]\n  \
                early_stop_patience: 3\n",
        )
        .unwrap();
        let e = load_experiment(dir.path(), "DeepFM_c").unwrap();
        assert_eq!(e.model.usize_or("early_stop_patience", 0).unwrap(), 3);
        assert_eq!(e.model.str_or("model_root", ""), "./checkpoints/");
        assert_eq!(
            e.model.usize_list_or("hidden_units", &[]).unwrap(),
            vec![400, 400]
        );
        let names: Vec<_> = e.dataset.fields.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["I1", "I2", "C1", "C2", "C3", "genres"]);
        assert_eq!(e.dataset.fields[0].fill_na, "0");
        assert_eq!(
            e.dataset.fields[0].preprocess,
            Some(Preprocess::ConvertToBucket)
        );
        assert_eq!(e.dataset.fields[0].min_count, 2);
        assert!(matches!(
            e.dataset.fields[5].kind,
            FieldKind::Sequence {
                max_len: 6,
                pad_post: true,
                ..
            }
        ));
        let err = load_experiment(dir.path(), "Nope").unwrap_err().to_string();
        assert!(err.contains("Nope") && err.contains("DeepFM_c"), "{err}");
    }

    #[test]
    fn normalizes_numbers() {
        assert_eq!(normalize_number("1.0"), "1");
        assert_eq!(normalize_number("-3"), "-3");
        assert_eq!(normalize_number("0.5"), "0.5");
        assert_eq!(normalize_number("abc"), "abc");
    }
}
