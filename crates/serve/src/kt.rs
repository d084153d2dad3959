//! Knowledge-tracing serving: a student's answers so far → the probability of answering each
//! candidate question correctly (`/v1/kt/predict`), the questions whose predicted success is
//! nearest a target (`/v1/kt/recommend`: the tutoring policy of practising at a set
//! difficulty, 0.7 by default), and per-concept mastery (`/v1/kt/diagnose`, the MCP tool
//! `diagnose_student`: the predicted success on a question of each concept).
//!
//! Questions are the training files' ids: `concepts` (one or more; a three-line file's
//! question id is its concept) and, for data with problem ids, `problem` (0, a row no file
//! uses, reads as a problem of average difficulty). The history is oldest first; only its
//! last `max_seq_len − 1` answers fit the model's window beside the question asked.

use crate::engine::Engine;
use crate::error::ServeError;
use recforge_data::kt::KtSequence;
use recforge_models::kt::KtBatch;
use recforge_train::kt::LoadedKt;
use serde::{Deserialize, Serialize};

/// A question: its concept ids and, where the data has them, its problem id.
#[derive(Debug, Clone, Deserialize, Serialize, utoipa::ToSchema, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KtQuestion {
    /// Concept (skill) ids as in the training files; at least one.
    pub concepts: Vec<u32>,
    /// Problem id (data with problem ids; default 0: average difficulty).
    #[serde(default)]
    pub problem: u32,
}

/// One answer of the student's history.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KtAnswer {
    pub concepts: Vec<u32>,
    #[serde(default)]
    pub problem: u32,
    /// Whether the answer was correct.
    pub correct: bool,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KtPredictRequest {
    /// The student's answers, oldest first (at least one).
    pub history: Vec<KtAnswer>,
    /// The questions to predict.
    pub questions: Vec<KtQuestion>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KtRecommendRequest {
    pub history: Vec<KtAnswer>,
    /// The questions to choose from (default: one per concept the model knows).
    #[serde(default)]
    pub questions: Option<Vec<KtQuestion>>,
    /// The predicted success to aim at (default 0.7).
    #[serde(default)]
    pub target: Option<f64>,
    /// How many questions (default 10).
    #[serde(default, deserialize_with = "crate::http::top_k_value")]
    #[schema(minimum = 1, maximum = 4294967295_u64)]
    pub top_k: Option<usize>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KtDiagnoseRequest {
    pub history: Vec<KtAnswer>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct KtPredictions {
    pub model_version: u64,
    /// One probability of a correct answer per question, in order.
    pub predictions: Vec<f32>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct KtScoredQuestion {
    pub question: KtQuestion,
    /// The predicted probability of a correct answer.
    pub success: f32,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct KtRecommendation {
    pub model_version: u64,
    pub target: f64,
    /// Nearest the target first; ties in candidate order.
    pub questions: Vec<KtScoredQuestion>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ConceptMastery {
    pub concept: u32,
    /// The predicted success on a question of this concept (problem 0).
    pub mastery: f32,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct KtDiagnosis {
    pub model_version: u64,
    /// Every concept the model knows (ids 1.. as the files write them).
    pub concepts: Vec<ConceptMastery>,
}

/// Checks a question's ids against the model's tables; `field` names it in errors.
fn check_question(
    m: &LoadedKt,
    concepts: &[u32],
    problem: u32,
    field: &str,
) -> Result<(), ServeError> {
    let shape = m.meta.shape;
    if concepts.is_empty() {
        return Err(ServeError::invalid(
            format!("{field}.concepts"),
            "must name at least one concept",
        ));
    }
    if let Some((i, c)) = concepts
        .iter()
        .enumerate()
        .find(|(_, &c)| c as usize >= shape.num_concepts)
    {
        return Err(ServeError::invalid(
            format!("{field}.concepts[{i}]"),
            format!(
                "concept {c} is beyond the model's {} concept ids (0..={})",
                shape.num_concepts,
                shape.num_concepts.saturating_sub(1)
            ),
        ));
    }
    if problem as usize >= shape.num_problems.max(1) {
        return Err(ServeError::invalid(
            format!("{field}.problem"),
            if shape.num_problems == 0 {
                "this model was trained without problem ids: leave `problem` out".to_string()
            } else {
                format!(
                    "problem {problem} is beyond the model's problem ids (0..={})",
                    shape.num_problems - 1
                )
            },
        ));
    }
    Ok(())
}

/// The history as a sequence: its last `max_seq_len − 1` answers.
fn history_sequence(m: &LoadedKt, history: &[KtAnswer]) -> Result<KtSequence, ServeError> {
    if history.is_empty() {
        return Err(ServeError::invalid(
            "history",
            "must hold at least one answer (a knowledge-tracing model predicts from answers)",
        ));
    }
    let keep = m.meta.shape.max_seq_len.saturating_sub(1).max(1);
    let mut seq = KtSequence::default();
    let skip = history.len().saturating_sub(keep);
    for (i, a) in history.iter().enumerate() {
        check_question(m, &a.concepts, a.problem, &format!("history[{i}]"))?;
        if i >= skip {
            seq.push(a.problem, &a.concepts, a.correct as u8);
        }
    }
    Ok(seq)
}

/// The predicted success on each of `questions` after `history` (one window per question,
/// the question last; its response is a placeholder the model cannot see).
fn predict_after(m: &LoadedKt, history: &KtSequence, questions: &[KtQuestion]) -> Vec<f32> {
    let seqs: Vec<KtSequence> = questions
        .iter()
        .map(|q| {
            let mut s = history.clone();
            s.push(q.problem, &q.concepts, 0);
            s
        })
        .collect();
    // each window's last scored row is its question
    let per = history.len();
    let mut out = Vec::with_capacity(questions.len());
    for chunk in seqs.chunks(256) {
        let batch = KtBatch::from_parts(chunk.iter().map(|s| (s, 0, s.len(), None)));
        let probs = m.model.predict(&batch);
        out.extend(probs.chunks(per).map(|c| c[per - 1]));
    }
    out
}

impl Engine {
    fn questions_checked(&self, m: &LoadedKt, questions: &[KtQuestion]) -> Result<(), ServeError> {
        self.check_count("questions", questions.len())?;
        for (i, q) in questions.iter().enumerate() {
            check_question(m, &q.concepts, q.problem, &format!("questions[{i}]"))?;
        }
        Ok(())
    }

    /// The probability of a correct answer to each question after the history.
    pub fn kt_predict(&self, req: &KtPredictRequest) -> Result<KtPredictions, ServeError> {
        let served = self.model();
        let m = served.kt()?;
        let history = history_sequence(m, &req.history)?;
        self.questions_checked(m, &req.questions)?;
        let predictions = predict_after(m, &history, &req.questions);
        finite(&predictions)?;
        Ok(KtPredictions {
            model_version: served.version,
            predictions,
        })
    }

    /// The `top_k` questions whose predicted success is nearest `target`.
    pub fn kt_recommend(&self, req: &KtRecommendRequest) -> Result<KtRecommendation, ServeError> {
        let served = self.model();
        let m = served.kt()?;
        let target = req.target.unwrap_or(0.7);
        if !(0.0..=1.0).contains(&target) {
            return Err(ServeError::invalid("target", "must lie in [0, 1]"));
        }
        let top_k = req.top_k.unwrap_or(10);
        if top_k == 0 {
            return Err(ServeError::invalid("top_k", "must be at least 1"));
        }
        let history = history_sequence(m, &req.history)?;
        let questions = match &req.questions {
            Some(q) => {
                self.questions_checked(m, q)?;
                q.clone()
            }
            None => every_concept(m),
        };
        let success = predict_after(m, &history, &questions);
        finite(&success)?;
        let mut order: Vec<usize> = (0..questions.len()).collect();
        let gap = |i: usize| (success[i] as f64 - target).abs();
        order.sort_by(|&a, &b| gap(a).total_cmp(&gap(b)).then(a.cmp(&b)));
        Ok(KtRecommendation {
            model_version: served.version,
            target,
            questions: order
                .into_iter()
                .take(top_k)
                .map(|i| KtScoredQuestion {
                    question: questions[i].clone(),
                    success: success[i],
                })
                .collect(),
        })
    }

    /// The predicted success on a question of every concept after the history.
    pub fn kt_diagnose(&self, req: &KtDiagnoseRequest) -> Result<KtDiagnosis, ServeError> {
        let served = self.model();
        let m = served.kt()?;
        let history = history_sequence(m, &req.history)?;
        let questions = every_concept(m);
        let mastery = predict_after(m, &history, &questions);
        finite(&mastery)?;
        Ok(KtDiagnosis {
            model_version: served.version,
            concepts: questions
                .iter()
                .zip(mastery)
                .map(|(q, mastery)| ConceptMastery {
                    concept: q.concepts[0],
                    mastery,
                })
                .collect(),
        })
    }
}

/// One question per concept id 1.. (row 0 is the files' unused id), problem 0.
fn every_concept(m: &LoadedKt) -> Vec<KtQuestion> {
    (1..m.meta.shape.num_concepts as u32)
        .map(|c| KtQuestion {
            concepts: vec![c],
            problem: 0,
        })
        .collect()
}

/// A finite input never gives a non-finite probability; if a broken model does, say so.
fn finite(p: &[f32]) -> Result<(), ServeError> {
    if p.iter().all(|v| v.is_finite()) {
        Ok(())
    } else {
        Err(ServeError::Internal(
            "the model produced a non-finite probability".into(),
        ))
    }
}
