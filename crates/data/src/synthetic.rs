//! A synthetic click log with a planted ground truth.
//!
//! Each field draws ids from a Zipf law over its vocabulary. The click probability is
//! `sigmoid(bias + Σ_f w_f[id_f] + Σ_{f<g} ⟨v_f[id_f], v_g[id_g]⟩)`: first-order weights plus
//! factorized pairwise terms, the structure FM/DeepFM are built to learn. Hidden weights are
//! derived by hashing (seed, field, id), so vocabularies of 10^7 cost no memory. Since the true
//! probability of every row is known, the AUC of the Bayes-optimal scorer on the test split is
//! reported next to what a model reaches.

use crate::error::{DataError, Result};
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Zipf};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::Path;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SyntheticSpec {
    pub rows: usize,
    pub vocab_sizes: Vec<usize>,
    pub zipf_exponent: f64,
    pub latent_dim: usize,
    /// Standard deviation of the first-order part of the logit.
    pub first_order_scale: f64,
    /// Standard deviation of the pairwise part of the logit.
    pub pairwise_scale: f64,
    pub bias: f64,
    pub valid_fraction: f64,
    pub test_fraction: f64,
    pub seed: u64,
}

impl Default for SyntheticSpec {
    fn default() -> Self {
        SyntheticSpec {
            rows: 200_000,
            vocab_sizes: vec![1000; 16],
            zipf_exponent: 1.1,
            latent_dim: 4,
            first_order_scale: 1.0,
            pairwise_scale: 1.0,
            bias: -1.0,
            valid_fraction: 0.1,
            test_fraction: 0.1,
            seed: 2024,
        }
    }
}

impl SyntheticSpec {
    /// The throughput benchmark's layout (as in ../shared/anchors/FUXICTR.md): 13 fields of
    /// 100 ids and 26 fields whose vocabularies fall from 300k to 50, summing to 1,000,000 rows
    /// of embeddings with the 13 small fields.
    pub fn criteo_like(rows: usize, total_vocab: usize) -> Self {
        let mut sizes = vec![100usize; 13];
        let big = total_vocab.saturating_sub(1300).max(26 * 50);
        // geometric fall from the largest to 50, scaled to sum to `big`
        let ratio: f64 = (50.0f64 / 300_000.0).powf(1.0 / 25.0);
        let raw: Vec<f64> = (0..26).map(|i| ratio.powi(i)).collect();
        let s: f64 = raw.iter().sum();
        let mut tail: Vec<usize> = raw
            .iter()
            .map(|r| ((r / s) * big as f64).round().max(50.0) as usize)
            .collect();
        let diff = big as i64 - tail.iter().sum::<usize>() as i64;
        tail[0] = (tail[0] as i64 + diff).max(50) as usize;
        sizes.extend(tail);
        SyntheticSpec {
            rows,
            vocab_sizes: sizes,
            ..Default::default()
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SyntheticInfo {
    pub spec: SyntheticSpec,
    pub train_rows: usize,
    pub valid_rows: usize,
    pub test_rows: usize,
    pub click_rate: f64,
    /// AUC of the true click probabilities on the test split: no model can do better.
    pub bayes_auc_test: f64,
    pub bayes_logloss_test: f64,
}

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// A standard normal that depends only on its arguments (Box–Muller on two hashes).
fn hashed_normal(seed: u64, field: usize, id: u64, k: usize) -> f64 {
    let h = splitmix(seed ^ splitmix((field as u64) << 40 ^ (k as u64) << 32 ^ splitmix(id)));
    let u1 = ((h >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
    let u2 = ((splitmix(h) >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// The planted click probability of a row of ids.
pub fn true_probability(spec: &SyntheticSpec, ids: &[u64]) -> f64 {
    let f = ids.len();
    let k = spec.latent_dim;
    let first: f64 = ids
        .iter()
        .enumerate()
        .map(|(i, &id)| hashed_normal(spec.seed, i, id, 0))
        .sum::<f64>()
        * spec.first_order_scale
        / (f as f64).sqrt();
    let pairs = (f * (f - 1) / 2).max(1) as f64;
    // Σ_{f<g} ⟨v_f, v_g⟩ = ½ (‖Σ v‖² − Σ ‖v‖²)
    let mut sum = vec![0.0f64; k];
    let mut sq = 0.0;
    for (i, &id) in ids.iter().enumerate() {
        for (d, s) in sum.iter_mut().enumerate() {
            let v = hashed_normal(spec.seed, i, id, d + 1);
            *s += v;
            sq += v * v;
        }
    }
    let pair = 0.5 * (sum.iter().map(|s| s * s).sum::<f64>() - sq) * spec.pairwise_scale
        / (pairs * k as f64).sqrt();
    let z = spec.bias + first + pair;
    1.0 / (1.0 + (-z).exp())
}

/// A generated chunk: its CSV text and, per row, (row index, label, true probability).
type ChunkOut = (String, Vec<(usize, f32, f32)>);

/// Writes `train.csv`, `valid.csv`, `test.csv` (header `label,f0,…`), a dataset and a model
/// config for them, and `synthetic.json` with the Bayes-optimal test AUC.
pub fn generate(
    spec: &SyntheticSpec,
    out: &Path,
    progress: &(dyn Fn(usize) + Sync),
) -> Result<SyntheticInfo> {
    if spec.vocab_sizes.is_empty() || spec.vocab_sizes.contains(&0) {
        return Err(DataError::Other(
            "synthetic: every field needs a vocabulary of at least 1".into(),
        ));
    }
    std::fs::create_dir_all(out).map_err(|e| DataError::io(out, e))?;
    let n_test = (spec.rows as f64 * spec.test_fraction).round() as usize;
    let n_valid = (spec.rows as f64 * spec.valid_fraction).round() as usize;
    let n_train = spec.rows - n_test - n_valid;
    let zipfs: Vec<Zipf<f64>> = spec
        .vocab_sizes
        .iter()
        .map(|&n| {
            Zipf::new(n as u64, spec.zipf_exponent)
                .map_err(|e| DataError::Other(format!("zipf: {e:?}")))
        })
        .collect::<Result<_>>()?;
    let header = std::iter::once("label".to_string())
        .chain((0..spec.vocab_sizes.len()).map(|i| format!("f{i}")))
        .collect::<Vec<_>>()
        .join(",")
        + "\n";
    let open = |name: &str| -> Result<std::io::BufWriter<std::fs::File>> {
        let p = out.join(name);
        let f = std::fs::File::create(&p).map_err(|e| DataError::io(&p, e))?;
        let mut w = std::io::BufWriter::with_capacity(1 << 20, f);
        w.write_all(header.as_bytes())
            .map_err(|e| DataError::io(&p, e))?;
        Ok(w)
    };
    let mut writers = [open("train.csv")?, open("valid.csv")?, open("test.csv")?];
    const CHUNK: usize = 50_000;
    let mut test_labels = Vec::with_capacity(n_test);
    let mut test_probs = Vec::with_capacity(n_test);
    let mut clicks = 0usize;
    let mut done = 0usize;
    for chunk_start in (0..spec.rows).step_by(CHUNK * 8) {
        let hi = (chunk_start + CHUNK * 8).min(spec.rows);
        let parts: Vec<ChunkOut> = (chunk_start..hi)
            .step_by(CHUNK)
            .collect::<Vec<_>>()
            .into_par_iter()
            .map(|lo| {
                let mut rng = rand::rngs::StdRng::seed_from_u64(splitmix(spec.seed ^ lo as u64));
                let mut text = String::with_capacity(CHUNK * 8 * spec.vocab_sizes.len());
                let mut rows = Vec::new();
                let mut ids = vec![0u64; spec.vocab_sizes.len()];
                for r in lo..(lo + CHUNK).min(hi) {
                    for (id, z) in ids.iter_mut().zip(&zipfs) {
                        *id = z.sample(&mut rng) as u64 - 1;
                    }
                    let p = true_probability(spec, &ids);
                    let y = rng.gen::<f64>() < p;
                    text.push(if y { '1' } else { '0' });
                    for id in &ids {
                        text.push(',');
                        text.push_str(&id.to_string());
                    }
                    text.push('\n');
                    rows.push((r, y as u8 as f32, p as f32));
                }
                (text, rows)
            })
            .collect();
        for (text, rows) in parts {
            // rows of one part can straddle a split boundary: write line by line
            for (line, (r, y, p)) in text.lines().zip(rows) {
                let which = if r < n_train {
                    0
                } else if r < n_train + n_valid {
                    1
                } else {
                    2
                };
                writers[which]
                    .write_all(line.as_bytes())
                    .and_then(|_| writers[which].write_all(b"\n"))
                    .map_err(|e| DataError::io(out, e))?;
                clicks += y as usize;
                if which == 2 {
                    test_labels.push(y);
                    test_probs.push(p);
                }
            }
        }
        done = hi;
        progress(done);
    }
    debug_assert_eq!(done, spec.rows);
    for w in &mut writers {
        w.flush().map_err(|e| DataError::io(out, e))?;
    }
    let info = SyntheticInfo {
        spec: spec.clone(),
        train_rows: n_train,
        valid_rows: n_valid,
        test_rows: n_test,
        click_rate: clicks as f64 / spec.rows.max(1) as f64,
        bayes_auc_test: recforge_metrics::auc(&test_labels, &test_probs).unwrap_or(f64::NAN),
        bayes_logloss_test: recforge_metrics::logloss(&test_labels, &test_probs),
    };
    let json = serde_json::to_string_pretty(&info).map_err(|e| DataError::Other(e.to_string()))?;
    crate::cache::write_atomic(&out.join("synthetic.json"), json.as_bytes())?;
    write_configs(spec, out)?;
    Ok(info)
}

fn write_configs(spec: &SyntheticSpec, out: &Path) -> Result<()> {
    let names: Vec<String> = (0..spec.vocab_sizes.len())
        .map(|i| format!("f{i}"))
        .collect();
    let p = |f: &str| out.join(f).display().to_string();
    let dataset = format!(
        "synthetic:\n    data_root: {}\n    data_format: csv\n    train_data: {}\n    valid_data: \
            {}\n    test_data: {}\n    min_categr_count: 1\n    feature_cols:\n        - {{name: \
            [{}], active: True, dtype: str, type: categorical}}\n    label_col: {{name: label, \
            dtype: float}}\n",
        p("processed"),
        p("train.csv"),
        p("valid.csv"),
        p("test.csv"),
        names.join(", ")
    );
    let common = "  dataset_id: synthetic\n  loss: binary_crossentropy\n  metrics: [logloss, AUC]\
        \n  optimizer: adam\n  learning_rate: 0.001\n  epochs: 5\n  shuffle: true\n  seed: 2024\
        \n  monitor: AUC\n  monitor_mode: max\n  early_stop_patience: 2\n  batch_size: 4096\n  \
        embedding_dim: 16\n";
    let model = format!(
        "Base: {{model_root: {}}}\nLR_synthetic:\n  model: LR\n{common}DeepFM_synthetic:\n  \
            model: DeepFM\n{common}  hidden_units: [400, 400, 400]\n  hidden_activations: relu\n  \
            net_dropout: 0\n  batch_norm: false\nDCNv2_synthetic:\n  model: DCNv2\n{common}  \
            model_structure: parallel\n  num_cross_layers: 3\n  parallel_dnn_hidden_units: [400, \
            400, 400]\n  dnn_activations: relu\n  net_dropout: 0\n  batch_norm: false\n",
        p("checkpoints")
    );
    crate::cache::write_atomic(&out.join("dataset_config.yaml"), dataset.as_bytes())?;
    crate::cache::write_atomic(&out.join("model_config.yaml"), model.as_bytes())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generates_configs_and_a_meaningful_bayes_auc() {
        let dir = tempfile::tempdir().unwrap();
        let spec = SyntheticSpec {
            rows: 20_000,
            vocab_sizes: vec![50, 200, 30, 1000],
            ..Default::default()
        };
        let info = generate(&spec, dir.path(), &|_| {}).unwrap();
        assert_eq!(info.train_rows + info.valid_rows + info.test_rows, 20_000);
        assert!(
            info.bayes_auc_test > 0.65 && info.bayes_auc_test < 0.95,
            "{}",
            info.bayes_auc_test
        );
        assert!(info.click_rate > 0.1 && info.click_rate < 0.6);
        let test = std::fs::read_to_string(dir.path().join("test.csv")).unwrap();
        assert_eq!(test.lines().count(), info.test_rows + 1);
        assert!(test.starts_with("label,f0,f1,f2,f3\n"));
        let e = crate::config::load_experiment(dir.path(), "DeepFM_synthetic").unwrap();
        assert_eq!(e.dataset.fields.len(), 4);
        // the same seed gives the same file
        let dir2 = tempfile::tempdir().unwrap();
        generate(&spec, dir2.path(), &|_| {}).unwrap();
        assert_eq!(
            std::fs::read(dir.path().join("train.csv")).unwrap(),
            std::fs::read(dir2.path().join("train.csv")).unwrap()
        );
    }

    #[test]
    fn criteo_like_layout_sums_to_the_total() {
        let s = SyntheticSpec::criteo_like(1000, 1_000_000);
        assert_eq!(s.vocab_sizes.len(), 39);
        assert_eq!(s.vocab_sizes.iter().sum::<usize>(), 1_000_000);
        assert!(*s.vocab_sizes.last().unwrap() >= 50);
    }
}
