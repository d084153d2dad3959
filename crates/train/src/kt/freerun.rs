//! AdvKT's code protocol ("free-running"): each window is generated from its start, the
//! model reading its own thresholded guesses (p ≥ 0.5 → 1) for every response but the
//! window's first, and scored at every position after it. It is what a tutor that never sees
//! an answer would predict.
//!
//! Done naively, position `j` needs a pass over the `j` tokens before it: `L²/2` tokens a
//! window. Here every pass scores the whole window on the current guesses and replaces them
//! with the thresholds of what it predicted, until nothing changes (a Jacobi iteration). The
//! models are causal, so after pass `k` the first `k` guesses are exactly the sequential
//! ones, and a window whose guesses did not change is at the one fixed point of the
//! recursion: the sequential answer, reached in at most `L` passes and usually in a few.

use super::accuracy;
use crate::fit::Metrics;
use recforge_data::kt::{KtSequence, KtWindow};
use recforge_models::kt::{KtBatch, KtModel};

/// Which windows the free-running evaluation generates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FreeRunConfig {
    /// The first this many windows of length ≥ 2 (0: none).
    pub windows: usize,
}

/// The free-running predictions at every scored position of the windows generated.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FreeRunResult {
    pub labels: Vec<f32>,
    pub probs: Vec<f32>,
    pub windows: usize,
    /// Forward passes over a window, summed over windows (the naive way needs `L − 1` each).
    pub passes: usize,
}

impl FreeRunResult {
    /// `freerun_auc` (when both classes occur) and `freerun_acc`.
    pub fn metrics(&self) -> Metrics {
        let mut m = Metrics::default();
        if self.labels.is_empty() {
            return m;
        }
        if let Some(a) = recforge_metrics::auc(&self.labels, &self.probs) {
            m.push("freerun_auc", a);
        }
        m.push("freerun_acc", accuracy(&self.labels, &self.probs));
        m
    }
}

/// Generates the first `cfg.windows` windows of `seqs` free-running, `block` windows a pass.
pub fn free_run(
    model: &dyn KtModel,
    seqs: &[KtSequence],
    windows: &[KtWindow],
    cfg: FreeRunConfig,
    block: usize,
) -> FreeRunResult {
    struct Case<'a> {
        seq: &'a KtSequence,
        start: usize,
        len: usize,
        /// the true first response, then the guesses
        responses: Vec<u8>,
        probs: Vec<f32>,
        passes: usize,
        done: bool,
    }
    let mut cases: Vec<Case> = windows
        .iter()
        .filter(|w| w.len >= 2)
        .take(cfg.windows)
        .map(|w| {
            let (start, len) = (w.start as usize, w.len as usize);
            let seq = &seqs[w.student as usize];
            let mut responses = vec![0; len];
            responses[0] = seq.responses[start];
            Case {
                seq,
                start,
                len,
                responses,
                probs: vec![0.0; len - 1],
                passes: 0,
                done: false,
            }
        })
        .collect();
    let block = block.max(1);
    loop {
        let active: Vec<usize> = (0..cases.len()).filter(|&c| !cases[c].done).collect();
        if active.is_empty() {
            break;
        }
        for chunk in active.chunks(block) {
            let batch = KtBatch::from_parts(chunk.iter().map(|&c| {
                let case = &cases[c];
                (case.seq, case.start, case.len, Some(&case.responses[..]))
            }));
            let p = model.predict(&batch);
            let mut first = 0;
            for &c in chunk {
                let case = &mut cases[c];
                let probs = &p[first..first + case.len - 1];
                first += case.len - 1;
                let mut changed = false;
                for (r, &q) in case.responses[1..].iter_mut().zip(probs) {
                    let guess = u8::from(q >= 0.5);
                    changed |= *r != guess;
                    *r = guess;
                }
                case.probs.copy_from_slice(probs);
                case.passes += 1;
                // `len` passes settle every guess in exact arithmetic; the cap keeps a
                // probability that rounds either side of 0.5 between passes from looping
                case.done = !changed || case.passes >= case.len;
            }
        }
    }
    let mut out = FreeRunResult {
        windows: cases.len(),
        passes: cases.iter().map(|c| c.passes).sum(),
        ..Default::default()
    };
    for case in &cases {
        out.labels.extend(
            case.seq.responses[case.start + 1..case.start + case.len]
                .iter()
                .map(|&r| r as f32),
        );
        out.probs.extend_from_slice(&case.probs);
    }
    out
}
