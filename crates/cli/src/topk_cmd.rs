//! `recforge train` and `recforge evaluate` for top-K models (datasets with `task: topk`).

use crate::{
    prepare_model_config, print_fit_report, run_dir_of, write_metrics_json, EvaluateArgs, Progress,
    TrainArgs,
};
use anyhow::{Context, Result};
use recforge_data::interactions::{load_interactions, InteractionConfig};
use recforge_data::ModelConfig;
use recforge_models::topk::{self, TopkShape};
use recforge_train::topk::{
    check_topk_config, evaluate_file, load_topk, write_per_user, TopkTask, TopkTrainConfig,
};
use recforge_train::RunDir;
use std::path::Path;

pub(crate) fn train(
    a: &TrainArgs,
    mut model_cfg: ModelConfig,
    dataset_id: &str,
    icfg: &InteractionConfig,
    source: &Path,
) -> Result<()> {
    prepare_model_config(a, &mut model_cfg, check_topk_config)?;
    let data = load_interactions(icfg, source, a.on_bad_row.into())?;
    let skipped: u64 = data.skipped.iter().sum();
    if skipped > 0 {
        eprintln!(
            "skipped {skipped} malformed rows (--on-bad-row skip): {:?} per split",
            data.skipped
        );
    }
    eprintln!("dataset {dataset_id}: {}", data.describe());
    let tcfg = TopkTrainConfig::from_config(&model_cfg)?;
    let shape = TopkShape {
        n_users: data.n_users,
        n_items: data.n_items,
    };
    let model = topk::build(&model_cfg, shape, &data.train)?;
    let run_dir = run_dir_of(a, &model_cfg, dataset_id);
    let run = RunDir::create(&run_dir)?;
    run.write_json(
        "config.json",
        &serde_json::json!({ "expid": a.expid, "model": model_cfg.values, "dataset": icfg }),
    )?;
    eprintln!(
        "model {} ({} parameters), run directory {}",
        model.name(),
        model.params().num_values(),
        run_dir.display()
    );
    let fit_cfg = tcfg.fit_config(model.input());
    eprintln!(
        "early stopping on valid {} (evaluated every {} epochs, stopping after {} without improvement)",
        fit_cfg.monitor.describe(),
        fit_cfg.eval_step,
        fit_cfg.patience
    );
    let columns = tcfg.metrics.iter().map(|m| m.name()).collect();
    let mut task = TopkTask::new(model, &data, tcfg, &model_cfg)?;
    let report = recforge_train::fit(
        &mut task,
        &fit_cfg,
        &run,
        a.resume,
        &mut Progress::with_columns(columns),
    )?;
    if let Some(r) = &task.test_report {
        write_per_user(&run.path.join("test_per_user.csv"), r, &data.user_tokens)?;
    }
    print_fit_report(
        &report,
        report.valid.as_ref().map(|m| m.describe()),
        report.test.as_ref().map(|m| m.describe()),
        a.metrics_json.as_deref(),
    )
}

pub(crate) fn evaluate(a: &EvaluateArgs, checkpoint: &Path) -> Result<()> {
    let loaded =
        load_topk(checkpoint).with_context(|| format!("loading {}", checkpoint.display()))?;
    let (m, report, skipped) = evaluate_file(&loaded, &a.data, &a.exclude, a.on_bad_row.into())?;
    eprintln!(
        "{} users ranked; {skipped} rows skipped",
        report.users.len()
    );
    println!("{} users  {}", report.users.len(), m.describe());
    if let Some(p) = &a.metrics_json {
        write_metrics_json(p, &serde_json::json!({ "test": m.to_json() }))?;
    }
    Ok(())
}

#[derive(clap::Args)]
pub(crate) struct ItemVectorsArgs {
    /// A top-K checkpoint (.safetensors) or its run directory
    #[arg(long)]
    model: std::path::PathBuf,
    /// The `.npy` to write (`[n_items × d]`, float32, row k = item id k)
    #[arg(long)]
    out: std::path::PathBuf,
}

pub(crate) fn item_vectors(a: &ItemVectorsArgs) -> Result<()> {
    let ckpt = recforge_train::score::resolve_checkpoint(&a.model);
    let loaded = load_topk(&ckpt)?;
    let v = loaded.model.item_vectors().with_context(|| {
        format!(
            "{}: a {} model has no item vectors",
            ckpt.display(),
            loaded.model.name()
        )
    })?;
    recforge_data::interactions::write_npy_matrix(&a.out, v.rows, v.cols, &v.data)?;
    eprintln!(
        "{} item vectors of {} values from {} to {}",
        v.rows,
        v.cols,
        ckpt.display(),
        a.out.display()
    );
    Ok(())
}
