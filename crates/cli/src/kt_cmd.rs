//! `recforge train` and `recforge evaluate` for knowledge-tracing models (datasets with
//! `task: kt`).

use crate::{
    prepare_model_config, print_fit_report, run_dir_of, write_metrics_json, EvaluateArgs, Progress,
    TrainArgs,
};
use anyhow::{Context, Result};
use recforge_data::kt::KtDatasetConfig;
use recforge_data::ModelConfig;
use recforge_models::kt::{self, KtShape};
use recforge_train::kt::{check_kt_config, evaluate_file, load_kt, KtTask, KtTrainConfig};
use recforge_train::RunDir;
use std::path::Path;

pub(crate) fn train(
    a: &TrainArgs,
    mut model_cfg: ModelConfig,
    dataset_id: &str,
    kcfg: &KtDatasetConfig,
    source: &Path,
) -> Result<()> {
    prepare_model_config(a, &mut model_cfg, check_kt_config)?;
    let mut skipped = 0;
    let data = kcfg.load(source, a.on_bad_row.into(), &mut skipped)?;
    if skipped > 0 {
        eprintln!("skipped {skipped} malformed students (--on-bad-row skip)");
    }
    let tcfg = KtTrainConfig::from_config(&model_cfg)?;
    let shape = KtShape {
        num_concepts: data.num_concepts,
        num_problems: data.num_problems,
        max_seq_len: kcfg.max_seq_len,
    };
    let model = kt::build(&model_cfg, shape)?;
    let run_dir = run_dir_of(a, &model_cfg, dataset_id);
    let run = RunDir::create(&run_dir)?;
    run.write_json(
        "config.json",
        &serde_json::json!({ "expid": a.expid, "model": model_cfg.values, "dataset": kcfg }),
    )?;
    let fit_cfg = tcfg.fit_config();
    let interactions =
        |s: &[recforge_data::kt::KtSequence]| s.iter().map(|x| x.len()).sum::<usize>();
    eprintln!(
        "dataset {dataset_id} ({:?}): {} / {} / {} students ({} / {} / {} interactions), {} concepts, {} problems",
        kcfg.form,
        data.train.len(),
        data.valid.len(),
        data.test.len(),
        interactions(&data.train),
        interactions(&data.valid),
        interactions(&data.test),
        data.num_concepts.saturating_sub(1),
        data.num_problems.saturating_sub(1),
    );
    let mut columns = vec!["auc".to_string(), "acc".to_string()];
    if tcfg.monitor != "auc" {
        columns.push(tcfg.monitor.clone());
    }
    let mut task = KtTask::new(model, &data, kcfg, shape, tcfg, &model_cfg)?;
    let (windows, predicted) = task.training_size();
    eprintln!(
        "model {} ({} parameters), {windows} training windows predicting {predicted} responses, run directory {}",
        task.model.name(),
        task.model.params().num_values(),
        run_dir.display()
    );
    eprintln!(
        "early stopping on valid {} (stopping after {} epochs without a gain above {})",
        fit_cfg.monitor.describe(),
        fit_cfg.patience,
        fit_cfg.min_delta
    );
    let report = recforge_train::fit(
        &mut task,
        &fit_cfg,
        &run,
        a.resume,
        &mut Progress::with_columns(columns),
    )?;
    print_fit_report(
        &report,
        report.valid.as_ref().map(|m| m.describe()),
        report.test.as_ref().map(|m| m.describe()),
        a.metrics_json.as_deref(),
    )
}

/// Next-step and multi-step metrics on every student of `--data`, read in the format the
/// model was trained on.
pub(crate) fn evaluate(a: &EvaluateArgs, checkpoint: &Path) -> Result<()> {
    if !a.exclude.is_empty() {
        anyhow::bail!("--exclude is for top-K models: a knowledge-tracing model masks nothing");
    }
    let loaded =
        load_kt(checkpoint).with_context(|| format!("loading {}", checkpoint.display()))?;
    let (m, students, skipped) = evaluate_file(&loaded, &a.data, a.on_bad_row.into())?;
    eprintln!("{students} students read; {skipped} skipped");
    println!("{students} students  {}", m.describe());
    if let Some(p) = &a.metrics_json {
        write_metrics_json(p, &serde_json::json!({ "test": m.to_json() }))?;
    }
    Ok(())
}
