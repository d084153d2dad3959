//! A run directory: the resolved config, per-epoch metrics (CSV and JSON), a training-curve
//! plot (SVG) and the checkpoints.

use crate::{Result, TrainError};
use recforge_data::cache::write_atomic;
use serde::Serialize;
use std::path::{Path, PathBuf};

pub use crate::fit::EpochLog;

/// A run directory, locked for as long as this value lives: a second training into the same
/// directory fails at once instead of interleaving its files with the first one's.
pub struct RunDir {
    pub path: PathBuf,
    _lock: recforge_data::cache::DirLock,
}

impl RunDir {
    pub fn create(path: &Path) -> Result<Self> {
        let lock = recforge_data::cache::DirLock::try_take(path, "run directory")?;
        Ok(RunDir {
            path: path.to_path_buf(),
            _lock: lock,
        })
    }

    pub fn best_checkpoint(&self) -> PathBuf {
        self.path.join("model.safetensors")
    }

    pub fn last_checkpoint(&self) -> PathBuf {
        self.path.join("last.safetensors")
    }

    pub fn write_json(&self, name: &str, value: &impl Serialize) -> Result<()> {
        let bytes =
            serde_json::to_vec_pretty(value).map_err(|e| TrainError::Config(e.to_string()))?;
        Ok(write_atomic(&self.path.join(name), &bytes)?)
    }

    /// Writes `metrics.csv`, `metrics.json` and `curve.svg` for the epochs so far; the
    /// validation columns are the metrics the epochs report, by name.
    pub fn write_epochs(&self, epochs: &[EpochLog]) -> Result<()> {
        let columns = |of: fn(&EpochLog) -> &crate::fit::Metrics| {
            let mut names: Vec<&str> = Vec::new();
            for e in epochs {
                for (k, _) in &of(e).0 {
                    if !names.contains(&k.as_str()) {
                        names.push(k);
                    }
                }
            }
            names
        };
        let train_names = columns(|e| &e.train);
        let names = columns(|e| &e.valid);
        let mut csv = String::from("epoch,learning_rate,train_loss");
        for n in &train_names {
            csv += &format!(",train_{n}");
        }
        for n in &names {
            csv += &format!(",valid_{n}");
        }
        csv += ",seconds,samples_per_sec\n";
        for e in epochs {
            csv += &format!("{},{},{:.6}", e.epoch, e.learning_rate, e.train_loss);
            let cells = train_names
                .iter()
                .map(|n| e.train.get(n))
                .chain(names.iter().map(|n| e.valid.get(n)));
            for v in cells {
                csv += ",";
                if let Some(v) = v {
                    csv += &format!("{v:.6}");
                }
            }
            csv += &format!(",{:.3},{:.0}\n", e.seconds, e.samples_per_sec);
        }
        write_atomic(&self.path.join("metrics.csv"), csv.as_bytes())?;
        self.write_json("metrics.json", &epochs)?;
        // the lower panel shows the first validation metric that is not a loss (or, without
        // validation, the objective's own first metric)
        let shown = names
            .iter()
            .find(|n| !n.eq_ignore_ascii_case("logloss"))
            .map(|n| (Panel::Valid, *n))
            .or_else(|| train_names.first().map(|n| (Panel::Train, *n)));
        self.plot(epochs, shown)
    }

    fn plot(&self, epochs: &[EpochLog], metric: Option<(Panel, &str)>) -> Result<()> {
        use plotters::prelude::*;
        let path = self.path.join("curve.svg");
        let mut svg = String::new();
        {
            let root = SVGBackend::with_string(&mut svg, (800, 480)).into_drawing_area();
            let err = |e: String| TrainError::Config(format!("plot: {e}"));
            root.fill(&WHITE).map_err(|e| err(e.to_string()))?;
            let (top, bottom) = root.split_vertically(240);
            let n = epochs.len().max(2) as f64;
            let losses: Vec<(f64, f64)> = epochs
                .iter()
                .map(|e| (e.epoch as f64, e.train_loss))
                .collect();
            let vloss: Vec<(f64, f64)> = epochs
                .iter()
                .filter_map(|e| e.valid.get("logloss").map(|v| (e.epoch as f64, v)))
                .collect();
            let aucs: Vec<(f64, f64)> = epochs
                .iter()
                .filter_map(|e| {
                    metric
                        .and_then(|(panel, m)| match panel {
                            Panel::Valid => e.valid.get(m),
                            Panel::Train => e.train.get(m),
                        })
                        .map(|v| (e.epoch as f64, v))
                })
                .collect();
            let range = |pts: &[(f64, f64)]| {
                let lo = pts.iter().map(|p| p.1).fold(f64::INFINITY, f64::min);
                let hi = pts.iter().map(|p| p.1).fold(f64::NEG_INFINITY, f64::max);
                if lo.is_finite() && hi > lo {
                    let pad = (hi - lo) * 0.1;
                    (lo - pad)..(hi + pad)
                } else if lo.is_finite() {
                    (lo - 0.01)..(lo + 0.01)
                } else {
                    0.0..1.0
                }
            };
            let all_loss: Vec<(f64, f64)> = losses.iter().chain(&vloss).cloned().collect();
            let mut c = ChartBuilder::on(&top)
                .caption("loss", ("sans-serif", 16))
                .margin(8)
                .x_label_area_size(24)
                .y_label_area_size(48)
                .build_cartesian_2d(1.0..n, range(&all_loss))
                .map_err(|e| err(e.to_string()))?;
            c.configure_mesh()
                .x_desc("epoch")
                .draw()
                .map_err(|e| err(e.to_string()))?;
            c.draw_series(LineSeries::new(losses, &BLUE))
                .map_err(|e| err(e.to_string()))?
                .label("train")
                .legend(|(x, y)| PathElement::new([(x, y), (x + 16, y)], BLUE));
            c.draw_series(LineSeries::new(vloss, &RED))
                .map_err(|e| err(e.to_string()))?
                .label("valid")
                .legend(|(x, y)| PathElement::new([(x, y), (x + 16, y)], RED));
            c.configure_series_labels()
                .border_style(BLACK)
                .draw()
                .map_err(|e| err(e.to_string()))?;
            let mut c2 = ChartBuilder::on(&bottom)
                .caption(
                    match metric {
                        Some((Panel::Valid, m)) => format!("valid {m}"),
                        Some((Panel::Train, m)) => format!("train {m}"),
                        None => "valid -".into(),
                    },
                    ("sans-serif", 16),
                )
                .margin(8)
                .x_label_area_size(24)
                .y_label_area_size(48)
                .build_cartesian_2d(1.0..n, range(&aucs))
                .map_err(|e| err(e.to_string()))?;
            c2.configure_mesh()
                .x_desc("epoch")
                .draw()
                .map_err(|e| err(e.to_string()))?;
            c2.draw_series(LineSeries::new(aucs, &GREEN))
                .map_err(|e| err(e.to_string()))?;
            root.present().map_err(|e| err(e.to_string()))?;
        }
        Ok(write_atomic(&path, svg.as_bytes())?)
    }
}

/// Which split's metric the lower panel of the plot shows.
#[derive(Clone, Copy)]
enum Panel {
    Valid,
    Train,
}
