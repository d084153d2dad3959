//! The serving engine: the model in use (swapped atomically on reload), the encoding of JSON
//! instances with the model's own feature map, and the three operations every front end
//! (HTTP, MCP) exposes: predict, rank and describe.

use crate::batcher::{Batcher, BatcherConfig};
use crate::error::ServeError;
use crate::metrics::Metrics;
use arc_swap::ArcSwap;
use recforge_data::{FeatureMap, FieldKind};
use recforge_train::kt::LoadedKt;
use recforge_train::score::{load_model, LoadedModel};
use recforge_train::seq::LoadedSeq;
use recforge_train::topk::LoadedTopk;
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// One JSON object of field name → value.
pub type Instance = Map<String, Value>;

/// A loaded checkpoint of any family.
pub enum Served {
    Ctr(LoadedModel),
    Topk(LoadedTopk),
    Seq(LoadedSeq),
    Kt(LoadedKt),
}

/// A loaded checkpoint with the version number it is served under.
pub struct ServedModel {
    pub loaded: Served,
    pub path: PathBuf,
    pub version: u64,
    pub loaded_at_unix: u64,
}

impl ServedModel {
    /// The CTR model, or a 422 saying what is served instead.
    pub fn ctr(&self) -> Result<&LoadedModel, ServeError> {
        match &self.loaded {
            Served::Ctr(m) => Ok(m),
            Served::Topk(_) | Served::Seq(_) | Served::Kt(_) => Err(self.wrong_family()),
        }
    }

    /// The top-K model, or a 422 saying what is served instead.
    pub fn topk(&self) -> Result<&LoadedTopk, ServeError> {
        match &self.loaded {
            Served::Topk(t) => Ok(t),
            Served::Ctr(_) | Served::Seq(_) | Served::Kt(_) => Err(self.wrong_family()),
        }
    }

    /// The knowledge-tracing model, or a 422 saying what is served instead.
    pub fn kt(&self) -> Result<&LoadedKt, ServeError> {
        match &self.loaded {
            Served::Kt(k) => Ok(k),
            Served::Ctr(_) | Served::Topk(_) | Served::Seq(_) => Err(self.wrong_family()),
        }
    }

    /// Whether the served model answers `/v1/recommend` (top-K and sequential models).
    pub fn recommends(&self) -> bool {
        matches!(self.loaded, Served::Topk(_) | Served::Seq(_))
    }

    /// Whether the served model is a knowledge-tracing model (`/v1/kt/*`).
    pub fn traces_knowledge(&self) -> bool {
        matches!(self.loaded, Served::Kt(_))
    }

    /// A 422 naming the served model's family and the routes that serve it.
    fn wrong_family(&self) -> ServeError {
        let msg = match &self.loaded {
            Served::Ctr(m) => format!(
                "the served model is a CTR model ({}): use /v1/predict or /v1/rank",
                m.meta.model
            ),
            Served::Topk(t) => format!(
                "the served model is a top-K recommender ({}): use /v1/recommend",
                t.meta.model
            ),
            Served::Seq(s) => format!(
                "the served model is a sequential recommender ({}): use /v1/recommend",
                s.meta.model
            ),
            Served::Kt(k) => format!(
                "the served model is a knowledge-tracing model ({}): use /v1/kt/predict, \
                 /v1/kt/recommend or /v1/kt/diagnose",
                k.meta.model
            ),
        };
        ServeError::invalid("", msg)
    }

    pub fn feature_map(&self) -> Result<&FeatureMap, ServeError> {
        Ok(&self.ctr()?.meta.feature_map)
    }
}

#[derive(Clone, Debug)]
pub struct Limits {
    /// Most instances in one predict request, and most candidates in one rank request.
    pub max_instances: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_instances: 10_000,
        }
    }
}

pub struct Engine {
    current: ArcSwap<ServedModel>,
    versions: AtomicU64,
    reload_lock: tokio::sync::Mutex<()>,
    batcher: Batcher,
    pub limits: Limits,
    pub metrics: Metrics,
}

/// Scores for one predict call.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct Predictions {
    pub model_version: u64,
    pub predictions: Vec<f32>,
}

#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct RankedCandidate {
    /// Position of the candidate in the request's `candidates` list.
    pub index: usize,
    /// Click probability.
    pub score: f32,
}

#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct Ranking {
    pub model_version: u64,
    pub ranked: Vec<RankedCandidate>,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Loads a checkpoint and checks that it scores: a model that cannot score an all-default
/// instance, or scores it as NaN, is refused before it can replace a working one.
fn load_checked(path: &Path, version: u64) -> Result<ServedModel, ServeError> {
    let load_err = |msg: String| ServeError::Load {
        path: path.to_path_buf(),
        msg,
    };
    let file = recforge_train::score::resolve_checkpoint(path);
    let format = recforge_train::checkpoint::checkpoint_format(&file)
        .map_err(|e| load_err(e.to_string()))?;
    if format == recforge_train::topk::TOPK_FORMAT {
        let loaded = recforge_train::topk::load_topk(&file).map_err(|e| load_err(e.to_string()))?;
        let mut scores = vec![0f32; loaded.meta.shape.n_items];
        loaded.model.score_history(&[], &mut scores);
        if scores.iter().any(|s| !s.is_finite()) {
            return Err(load_err("smoke scoring produced a non-finite score".into()));
        }
        return Ok(ServedModel {
            loaded: Served::Topk(loaded),
            path: path.to_path_buf(),
            version,
            loaded_at_unix: unix_now(),
        });
    }
    if format == recforge_train::kt::KT_FORMAT {
        let loaded = recforge_train::kt::load_kt(&file).map_err(|e| load_err(e.to_string()))?;
        // smoke: one answer, then a question of concept 1 (or 0 in a one-concept table)
        let mut seq = recforge_data::kt::KtSequence::default();
        let c = (loaded.meta.shape.num_concepts > 1) as u32;
        seq.push(0, &[c], 1);
        seq.push(0, &[c], 0);
        let batch = recforge_models::kt::KtBatch::from_parts([(&seq, 0, 2, None)]);
        if loaded.model.predict(&batch).iter().any(|p| !p.is_finite()) {
            return Err(load_err("smoke scoring produced a non-finite score".into()));
        }
        return Ok(ServedModel {
            loaded: Served::Kt(loaded),
            path: path.to_path_buf(),
            version,
            loaded_at_unix: unix_now(),
        });
    }
    if format == recforge_train::seq::SEQ_FORMAT {
        let loaded = recforge_train::seq::load_seq(&file).map_err(|e| load_err(e.to_string()))?;
        if loaded.meta.shape.n_items == 0
            || loaded.score_history(&[1]).iter().any(|s| !s.is_finite())
        {
            return Err(load_err("smoke scoring produced a non-finite score".into()));
        }
        return Ok(ServedModel {
            loaded: Served::Seq(loaded),
            path: path.to_path_buf(),
            version,
            loaded_at_unix: unix_now(),
        });
    }
    let loaded = load_model(path).map_err(|e| load_err(e.to_string()))?;
    let fmap = &loaded.meta.feature_map;
    let mut slots = vec![0u32; fmap.width];
    encode_instance(fmap, &Instance::new(), &mut slots)
        .and_then(|_| {
            let p = loaded.model.predict(&batch_of(fmap.width, 1, slots));
            if p.len() == 1 && p[0].is_finite() {
                Ok(())
            } else {
                Err(ServeError::invalid("", "model produced a non-finite score"))
            }
        })
        .map_err(|e| ServeError::Load {
            path: path.to_path_buf(),
            msg: format!("smoke prediction failed: {e}"),
        })?;
    Ok(ServedModel {
        loaded: Served::Ctr(loaded),
        path: path.to_path_buf(),
        version,
        loaded_at_unix: unix_now(),
    })
}

pub(crate) fn batch_of(width: usize, size: usize, slots: Vec<u32>) -> recforge_data::Batch {
    recforge_data::Batch {
        size,
        width,
        labels: vec![0.0; size],
        slots,
    }
}

/// The text a CSV cell would hold for this JSON value, so that a value means the same thing
/// over HTTP as in the training file. `None` for null (a missing value).
fn cell_text(field: &str, kind: &FieldKind, v: &Value) -> Result<Option<String>, (String, String)> {
    let wrong = |what: &str| {
        (
            field.to_string(),
            format!("{what} is not a valid value here"),
        )
    };
    let text = match v {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(_) if matches!(kind, FieldKind::Numeric) => {
            return Err(wrong("a boolean"));
        }
        Value::Bool(b) => Some(b.to_string()),
        Value::Array(items) => match kind {
            FieldKind::Sequence { splitter, .. } => {
                let mut parts = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    match item {
                        Value::String(s) => parts.push(s.clone()),
                        Value::Number(n) => parts.push(n.to_string()),
                        _ => {
                            return Err((
                                format!("{field}[{i}]"),
                                "sequence items must be strings or numbers".into(),
                            ))
                        }
                    }
                }
                Some(parts.join(splitter))
            }
            _ => return Err(wrong("an array (only sequence fields take arrays)")),
        },
        Value::Object(_) => return Err(wrong("an object")),
    };
    if let (FieldKind::Numeric, Some(t)) = (kind, &text) {
        check_finite(field, t)?;
    }
    Ok(text)
}

/// A numeric cell must read as a finite `f32`: `"NaN"`, `"inf"` and values beyond `f32`'s
/// range (`1e308`) would be scored as NaN or infinity, and a non-finite input gives a
/// non-finite score. Text that is not a number at all is left to the feature map's error.
fn check_finite(field: &str, text: &str) -> Result<(), (String, String)> {
    match text.trim().parse::<f32>() {
        Ok(x) if !x.is_finite() => Err((
            field.to_string(),
            format!("`{text}` is not a finite number (numeric fields take finite f32 values)"),
        )),
        _ => Ok(()),
    }
}

/// Candidates by score, best first, ties in request order. A non-finite score (which a
/// finite input should never produce) always sorts after every finite one, so that a broken
/// score can never come out on top.
fn rank_order(scores: Vec<f32>) -> Vec<RankedCandidate> {
    let mut ranked: Vec<RankedCandidate> = scores
        .into_iter()
        .enumerate()
        .map(|(index, score)| RankedCandidate { index, score })
        .collect();
    ranked.sort_by(|a, b| {
        b.score
            .is_finite()
            .cmp(&a.score.is_finite())
            .then_with(|| b.score.total_cmp(&a.score))
            .then(a.index.cmp(&b.index))
    });
    ranked
}

/// Encodes one instance with the model's feature map. Missing fields and nulls are empty
/// cells (the field's `fill_na`, or OOV), unseen values map to OOV, and fields the model does
/// not use are ignored — exactly as when a CSV is scored.
pub fn encode_instance(
    fmap: &FeatureMap,
    instance: &Instance,
    out: &mut [u32],
) -> Result<(), ServeError> {
    encode_merged(fmap, instance, None, out)
}

/// As [`encode_instance`], with `overlay`'s fields taking precedence over `base`'s (a
/// candidate's item fields over the request's context).
fn encode_merged(
    fmap: &FeatureMap,
    base: &Instance,
    overlay: Option<&Instance>,
    out: &mut [u32],
) -> Result<(), ServeError> {
    let mut values: Vec<String> = Vec::with_capacity(fmap.fields.len());
    for f in &fmap.fields {
        let name = &f.spec.name;
        // a derived field (Avazu's `weekday`) reads its source column, as from a CSV
        let v = f
            .spec
            .source_columns()
            .into_iter()
            .find_map(|c| overlay.and_then(|o| o.get(c)).or_else(|| base.get(c)));
        let text = match v {
            Some(v) => cell_text(name, &f.spec.kind, v).map_err(ServeError::from)?,
            None => None,
        };
        values.push(text.unwrap_or_default());
    }
    fmap.encode_fields(&values, out).map_err(ServeError::from)
}

fn at(prefix: String, e: ServeError) -> ServeError {
    match e {
        ServeError::Invalid { field, msg } if field.is_empty() => {
            ServeError::Invalid { field: prefix, msg }
        }
        ServeError::Invalid { field, msg } => ServeError::Invalid {
            field: format!("{prefix}.{field}"),
            msg,
        },
        other => other,
    }
}

impl Engine {
    /// Loads the checkpoint at `source` (file or run directory) and starts the batcher.
    pub fn open(
        source: &Path,
        batching: BatcherConfig,
        limits: Limits,
    ) -> Result<Self, ServeError> {
        let model = load_checked(source, 1)?;
        let metrics = Metrics::new();
        metrics.model_version.set(1);
        let batcher = Batcher::start(batching, metrics.clone())?;
        Ok(Engine {
            current: ArcSwap::from_pointee(model),
            versions: AtomicU64::new(1),
            reload_lock: tokio::sync::Mutex::new(()),
            batcher,
            limits,
            metrics,
        })
    }

    /// The model new requests are scored with. A request holds its `Arc` to the end, so a
    /// reload never changes the model under a request in flight.
    pub fn model(&self) -> Arc<ServedModel> {
        self.current.load_full()
    }

    /// Announces a request to the micro-batcher (see [`Batcher::begin`]); hold the ticket
    /// until the response is built.
    pub fn begin(&self) -> crate::batcher::Ticket {
        self.batcher.begin()
    }

    pub fn is_ready(&self) -> bool {
        self.batcher.is_alive()
    }

    pub(crate) fn check_count(&self, what: &str, n: usize) -> Result<(), ServeError> {
        if n == 0 {
            return Err(ServeError::invalid(what, "must not be empty"));
        }
        if n > self.limits.max_instances {
            return Err(ServeError::invalid(
                what,
                format!(
                    "{n} entries; this server takes at most {}",
                    self.limits.max_instances
                ),
            ));
        }
        Ok(())
    }

    /// Click probabilities for `instances`, in order.
    pub async fn predict(&self, instances: &[Instance]) -> Result<Predictions, ServeError> {
        self.check_count("instances", instances.len())?;
        let model = self.model();
        let fmap = model.feature_map()?;
        let width = fmap.width;
        let mut slots = vec![0u32; width * instances.len()];
        for (i, (inst, row)) in instances.iter().zip(slots.chunks_mut(width)).enumerate() {
            encode_instance(fmap, inst, row).map_err(|e| at(format!("instances[{i}]"), e))?;
        }
        let version = model.version;
        let predictions = self.batcher.score(model, instances.len(), slots).await?;
        Ok(Predictions {
            model_version: version,
            predictions,
        })
    }

    /// Scores each candidate merged with `context` (candidate fields win) and returns the
    /// best `top_k` (all when `None`), highest score first; ties keep request order.
    pub async fn rank(
        &self,
        context: &Instance,
        candidates: &[Instance],
        top_k: Option<usize>,
    ) -> Result<Ranking, ServeError> {
        self.check_count("candidates", candidates.len())?;
        if top_k == Some(0) {
            return Err(ServeError::invalid("top_k", "must be at least 1"));
        }
        let model = self.model();
        let fmap = model.feature_map()?;
        let width = fmap.width;
        let mut slots = vec![0u32; width * candidates.len()];
        for (i, (cand, row)) in candidates.iter().zip(slots.chunks_mut(width)).enumerate() {
            encode_merged(fmap, context, Some(cand), row)
                .map_err(|e| at(format!("candidates[{i}]"), e))?;
        }
        let version = model.version;
        let scores = self.batcher.score(model, candidates.len(), slots).await?;
        let mut ranked = rank_order(scores);
        ranked.truncate(top_k.unwrap_or(usize::MAX));
        Ok(Ranking {
            model_version: version,
            ranked,
        })
    }

    /// What is being served: name, type, fields, training metrics, checksum.
    pub fn info(&self) -> ModelInfo {
        ModelInfo::of(&self.model())
    }

    /// Loads `path` (default: the checkpoint being served, read again) and swaps it in. A
    /// checkpoint that fails to load or to score is refused and the current model keeps
    /// serving.
    pub async fn reload(self: &Arc<Self>, path: Option<PathBuf>) -> Result<ModelInfo, ServeError> {
        let _one_at_a_time = self.reload_lock.lock().await;
        let path = path.unwrap_or_else(|| self.model().path.clone());
        let version = self.versions.load(Ordering::SeqCst) + 1;
        let loaded = tokio::task::spawn_blocking(move || load_checked(&path, version))
            .await
            .map_err(|e| ServeError::Internal(format!("reload task failed: {e}")))?;
        match loaded {
            Ok(m) => {
                self.versions.store(version, Ordering::SeqCst);
                self.current.store(Arc::new(m));
                self.metrics.model_version.set(version as i64);
                self.metrics.reload("ok");
                Ok(self.info())
            }
            Err(e) => {
                self.metrics.reload("refused");
                Err(e)
            }
        }
    }
}

/// A field as a client must send it.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct FieldInfo {
    pub name: String,
    /// `categorical`, `numeric` or `sequence`.
    pub kind: String,
    /// Distinct values seen in training (categorical and sequence fields).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vocabulary_size: Option<usize>,
}

#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct ModelInfo {
    /// The experiment id the model was trained as.
    pub name: String,
    /// Model type (`DeepFM`, `DCNv2`, `LightGCN`, …).
    pub model: String,
    /// `ctr` (predict, rank), `topk` / `seq` (recommend, similar items) or `kt` (`/v1/kt/*`).
    pub family: String,
    pub version: u64,
    pub loaded_at_unix: u64,
    /// SHA-256 of the checkpoint's tensors.
    pub checksum: String,
    /// Input fields of a CTR model (empty for top-K models).
    pub fields: Vec<FieldInfo>,
    /// Users and items a top-K model knows (a knowledge-tracing model: its concept ids).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub users: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub items: Option<usize>,
    /// Metrics recorded at training time.
    #[schema(value_type = Object)]
    pub metrics: Map<String, Value>,
}

impl ModelInfo {
    fn of(m: &ServedModel) -> Self {
        let meta = match &m.loaded {
            Served::Ctr(c) => &c.meta,
            Served::Topk(t) => {
                return ModelInfo {
                    name: t.meta.model_config.expid.clone(),
                    model: t.meta.model.clone(),
                    family: "topk".into(),
                    version: m.version,
                    loaded_at_unix: m.loaded_at_unix,
                    checksum: t.sha256.clone(),
                    fields: Vec::new(),
                    users: Some(t.meta.shape.n_users),
                    items: Some(t.meta.shape.n_items),
                    metrics: t.meta.metrics.clone(),
                }
            }
            Served::Seq(s) => {
                return ModelInfo {
                    name: s.meta.model_config.expid.clone(),
                    model: s.meta.model.clone(),
                    family: "seq".into(),
                    version: m.version,
                    loaded_at_unix: m.loaded_at_unix,
                    checksum: s.sha256.clone(),
                    fields: Vec::new(),
                    users: Some(s.meta.user_tokens.len()),
                    items: Some(s.meta.shape.n_items),
                    metrics: s.meta.metrics.clone(),
                }
            }
            Served::Kt(k) => {
                return ModelInfo {
                    name: k.meta.model_config.expid.clone(),
                    model: k.meta.model.clone(),
                    family: "kt".into(),
                    version: m.version,
                    loaded_at_unix: m.loaded_at_unix,
                    checksum: k.sha256.clone(),
                    fields: Vec::new(),
                    users: None,
                    items: Some(k.meta.shape.num_concepts),
                    metrics: k.meta.metrics.clone(),
                }
            }
        };
        let fmap = &meta.feature_map;
        let fields = fmap
            .fields
            .iter()
            .enumerate()
            .map(|(i, f)| {
                let (kind, vocab) = match &f.spec.kind {
                    FieldKind::Categorical => ("categorical", Some(fmap.vocab_of(i).size())),
                    FieldKind::Numeric => ("numeric", None),
                    FieldKind::Sequence { .. } => ("sequence", Some(fmap.vocab_of(i).size())),
                };
                FieldInfo {
                    name: f.spec.name.clone(),
                    kind: kind.into(),
                    vocabulary_size: vocab,
                }
            })
            .collect();
        ModelInfo {
            name: meta.model_config.expid.clone(),
            model: meta.model.clone(),
            family: "ctr".into(),
            version: m.version,
            loaded_at_unix: m.loaded_at_unix,
            checksum: meta.tensors_sha256.clone(),
            fields,
            users: None,
            items: None,
            metrics: meta.metrics.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn seq() -> FieldKind {
        FieldKind::Sequence {
            max_len: 4,
            splitter: "^".into(),
            pad_post: true,
        }
    }

    #[test]
    fn json_values_read_as_their_csv_text() {
        let cat = FieldKind::Categorical;
        let text = |k: &FieldKind, v: Value| cell_text("f", k, &v);
        assert_eq!(text(&cat, json!("a b")), Ok(Some("a b".into())));
        assert_eq!(text(&cat, json!(12)), Ok(Some("12".into())));
        assert_eq!(
            text(&FieldKind::Numeric, json!(0.25)),
            Ok(Some("0.25".into()))
        );
        assert_eq!(text(&cat, json!(true)), Ok(Some("true".into())));
        assert_eq!(text(&cat, Value::Null), Ok(None));
        assert_eq!(text(&seq(), json!(["x", 3, "y"])), Ok(Some("x^3^y".into())));
        assert_eq!(text(&seq(), json!("x^y")), Ok(Some("x^y".into())));
        assert_eq!(text(&FieldKind::Numeric, json!(true)).unwrap_err().0, "f");
        assert_eq!(text(&cat, json!(["x"])).unwrap_err().0, "f");
        assert_eq!(text(&seq(), json!(["x", {}])).unwrap_err().0, "f[1]");
        assert_eq!(text(&cat, json!({"a": 1})).unwrap_err().0, "f");
    }

    #[test]
    fn non_finite_numbers_are_refused_naming_the_field() {
        let num = FieldKind::Numeric;
        for bad in [
            json!("NaN"),
            json!("inf"),
            json!("-infinity"),
            json!(1e308),
            json!("1e39"),
        ] {
            let e = cell_text("age", &num, &bad).unwrap_err();
            assert_eq!(e.0, "age", "{bad}");
            assert!(e.1.contains("finite"), "{bad}: {}", e.1);
        }
        for good in [json!(3.4e38), json!("-1e-30"), json!(0), json!(" 2.5 ")] {
            assert!(cell_text("age", &num, &good).is_ok(), "{good}");
        }
        // a categorical value "NaN" is just a token
        assert!(cell_text("c", &FieldKind::Categorical, &json!("NaN")).is_ok());
    }

    #[test]
    fn non_finite_scores_never_rank_first() {
        let order = |s: Vec<f32>| -> Vec<usize> { rank_order(s).iter().map(|r| r.index).collect() };
        assert_eq!(order(vec![0.2, f32::NAN, 0.9, 0.2]), [2, 0, 3, 1]);
        assert_eq!(order(vec![f32::INFINITY, 0.1, -f32::NAN]), [1, 0, 2]);
        assert_eq!(order(vec![f32::NEG_INFINITY, 0.0]), [1, 0]);
    }

    #[test]
    fn errors_are_prefixed_with_where_they_happened() {
        let e = at("instances[2]".into(), ServeError::invalid("age", "bad"));
        assert_eq!(e.to_string(), "instances[2].age: bad");
        let e = at("candidates[0]".into(), ServeError::invalid("", "bad"));
        assert_eq!(e.to_string(), "candidates[0]: bad");
    }
}
