//! `recforge train` and `recforge evaluate` for sequential models (datasets with `task: seq`).

use crate::{
    prepare_model_config, print_fit_report, run_dir_of, write_metrics_json, EvaluateArgs, Progress,
    TrainArgs,
};
use anyhow::{Context, Result};
use recforge_data::sequences::SequenceConfig;
use recforge_data::ModelConfig;
use recforge_models::seq::{self, SeqShape};
use recforge_train::seq::{check_seq_config, evaluate_file, load_seq, SeqTask, SeqTrainConfig};
use recforge_train::topk::write_per_user;
use recforge_train::RunDir;
use std::path::Path;

pub(crate) fn train(
    a: &TrainArgs,
    mut model_cfg: ModelConfig,
    dataset_id: &str,
    scfg: &SequenceConfig,
    _source: &Path,
) -> Result<()> {
    prepare_model_config(a, &mut model_cfg, check_seq_config)?;
    let mut skipped = 0;
    let data = scfg.load(a.on_bad_row.into(), &mut skipped)?;
    if skipped > 0 {
        eprintln!("skipped {skipped} malformed lines (--on-bad-row skip)");
    }
    let tcfg = SeqTrainConfig::from_config(&model_cfg)?;
    let shape = SeqShape {
        n_items: data.num_items(),
    };
    let model = seq::build(&model_cfg, shape)?;
    let run_dir = run_dir_of(a, &model_cfg, dataset_id);
    let run = RunDir::create(&run_dir)?;
    run.write_json(
        "config.json",
        &serde_json::json!({ "expid": a.expid, "model": model_cfg.values, "dataset": scfg }),
    )?;
    let fit_cfg = tcfg.fit_config();
    let columns = tcfg.base.metrics.iter().map(|m| m.name()).collect();
    let mode = tcfg.mode;
    let mut task = SeqTask::new(model, &data, tcfg, &model_cfg)?;
    let (windows, pairs) = task.training_size();
    eprintln!(
        "dataset {dataset_id}: {} users ({} with fewer than 3 items left out), {} items, {} interactions; {windows} training windows ({mode:?}) scoring {pairs} next items",
        data.users.len(),
        task.short_users(),
        data.num_items(),
        data.num_interactions(),
    );
    eprintln!(
        "model {} ({} parameters), run directory {}",
        task.model.name(),
        task.model.params().num_values(),
        run_dir.display()
    );
    eprintln!(
        "early stopping on valid {} (evaluated every {} epochs, stopping after {} without improvement)",
        fit_cfg.monitor.describe(),
        fit_cfg.eval_step,
        fit_cfg.patience
    );
    let report = recforge_train::fit(
        &mut task,
        &fit_cfg,
        &run,
        a.resume,
        &mut Progress::with_columns(columns),
    )?;
    if let Some(r) = &task.test_report {
        write_per_user(&run.path.join("test_per_user.csv"), r, &task.users())?;
    }
    print_fit_report(
        &report,
        report.valid.as_ref().map(|m| m.describe()),
        report.test.as_ref().map(|m| m.describe()),
        a.metrics_json.as_deref(),
    )
}

/// Ranks the last item of every sequence in `--data` after the items before it.
pub(crate) fn evaluate(a: &EvaluateArgs, checkpoint: &Path) -> Result<()> {
    if !a.exclude.is_empty() {
        anyhow::bail!(
            "--exclude is for top-K models: a sequential model masks nothing but padding"
        );
    }
    let loaded =
        load_seq(checkpoint).with_context(|| format!("loading {}", checkpoint.display()))?;
    let (m, report, users, skipped) = evaluate_file(&loaded, &a.data, a.on_bad_row.into())?;
    eprintln!("{} sequences ranked; {skipped} lines skipped", users.len());
    println!("{} users  {}", report.users.len(), m.describe());
    if let Some(p) = &a.metrics_json {
        write_metrics_json(p, &serde_json::json!({ "test": m.to_json() }))?;
    }
    Ok(())
}
