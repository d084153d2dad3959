//! Benchmarks that need no data files (see bench/run.sh for the full comparison run).
//!
//! `recforge-bench vocab-scaling [--vocab 100000,1000000,10000000] [--model DeepFM]`:
//! median training-step time of a 39-field model (batch 4096, embedding 16, MLP 400×3) as the
//! embedding tables grow; ids are Zipf(1.1) per field. Sparse row-wise updates should keep the
//! step flat. Prints one JSON line per size.
//!
//! `recforge-bench roofline [--model DeepFM,DCNv2] [--vocab 1000000] [--batch 4096] [--rounds 5]`: the
//! machine's own fp32 GEMM ceiling on a training step's shapes (every dense weight `[k×n]` is
//! one forward product `[B×k]·[k×n]` and two backward ones, timed alone with the tape's
//! `matmul`) beside the measured step: training throughput as a fraction of the GEMM-bound
//! limit, with the step's phases timed apart; the median of `--rounds` alternating rounds.
//! Prints the CPU and one JSON line per model.
//!
//! `recforge-bench predict-latency --model DIR [--batch 500] [--seconds 20]`: the model alone
//! (no HTTP) scoring batches of random ids, as `bench/serve_load.sh` compares with PyTorch.
//!
//! `recforge-bench text-encode --texts FILE [--column text] [--n 256] [--batch 32] [--reps 5]`
//! and `text-finetune … [--pairs 16] [--steps 10]`: the text encoder's sentences/s and
//! contrastive fine-tuning step time, as `bench/minilm.sh` compares with sentence-transformers.

use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Zipf};
use recforge_data::synthetic::SyntheticSpec;
use recforge_data::{Batch, FeatureMap, ModelConfig};
use recforge_train::{TrainConfig, Trainer};
use std::time::Instant;

#[path = "../alloc.rs"]
mod alloc;

fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

fn feature_map(vocab_sizes: &[usize]) -> FeatureMap {
    FeatureMap::numbered_categorical("bench", vocab_sizes)
}

fn batches(vocab_sizes: &[usize], n: usize, batch: usize, seed: u64) -> Vec<Batch> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let zipfs: Vec<Zipf<f64>> = vocab_sizes
        .iter()
        .map(|&v| Zipf::new(v as u64, 1.1).expect("zipf"))
        .collect();
    (0..n)
        .map(|_| {
            let mut b = Batch {
                size: batch,
                width: vocab_sizes.len(),
                labels: Vec::with_capacity(batch),
                slots: Vec::with_capacity(batch * vocab_sizes.len()),
            };
            for _ in 0..batch {
                b.labels.push(rng.gen_bool(0.25) as u8 as f32);
                b.slots
                    .extend(zipfs.iter().map(|z| z.sample(&mut rng) as u32));
            }
            b
        })
        .collect()
}

fn main() -> anyhow::Result<()> {
    alloc::keep_freed_memory();
    let args: Vec<String> = std::env::args().collect();
    let get = |k: &str, d: &str| {
        args.iter()
            .position(|a| a == k)
            .and_then(|i| args.get(i + 1))
            .cloned()
            .unwrap_or_else(|| d.to_string())
    };
    match args.get(1).map(String::as_str) {
        Some("vocab-scaling") => {}
        Some("roofline") => {
            let batch: usize = get("--batch", "4096").parse()?;
            let steps: usize = get("--steps", "20").parse()?;
            let total: usize = get("--vocab", "1000000").parse()?;
            let rounds: usize = get("--rounds", "5").parse()?;
            println!("cpu: {}", cpu_name());
            for m in get("--model", "DeepFM,DCNv2").split(',') {
                roofline(m.trim(), total, batch, steps, rounds)?;
            }
            return Ok(());
        }
        Some("predict-latency") => {
            return predict_latency(
                std::path::Path::new(&get("--model", "")),
                get("--batch", "500").parse()?,
                get("--seconds", "20").parse()?,
            )
        }
        Some(cmd @ ("text-encode" | "text-finetune")) => {
            let model = match args.iter().position(|a| a == "--model") {
                Some(i) => std::path::PathBuf::from(&args[i + 1]),
                None => recforge_text::default_model_dir(),
            };
            let enc = recforge_text::SentenceEncoder::load(&model)?;
            let texts = recforge_data::reader::read_column(
                std::path::Path::new(&get("--texts", "")),
                &get("--column", "text"),
            )?;
            let n: usize = get("--n", "256").parse()?;
            let texts: Vec<&str> = texts.iter().take(n).map(String::as_str).collect();
            return if cmd == "text-encode" {
                text_encode(
                    &enc,
                    &texts,
                    get("--batch", "32").parse()?,
                    get("--reps", "5").parse()?,
                )
            } else {
                text_finetune(
                    enc,
                    &texts,
                    get("--pairs", "16").parse()?,
                    get("--steps", "10").parse()?,
                )
            };
        }
        _ => anyhow::bail!(
            "usage: recforge-bench vocab-scaling [--vocab 100000,1000000,10000000] \
            [--model DeepFM] [--steps 20] [--batch 4096]\n       recforge-bench roofline \
            [--model DeepFM,DCNv2] [--vocab 1000000] [--batch 4096] [--steps 20]\n       \
            recforge-bench predict-latency \
            --model DIR [--batch 500] [--seconds 20]\n       recforge-bench \
            text-encode|text-finetune --texts FILE [--column text] [--model DIR] [--n 256] \
            [--batch 32] [--reps 5] [--pairs 16] [--steps 10]"
        ),
    }
    let model_name = get("--model", "DeepFM");
    let steps: usize = get("--steps", "20").parse()?;
    let batch: usize = get("--batch", "4096").parse()?;
    for total in get("--vocab", "100000,1000000,10000000").split(',') {
        let total: usize = total.trim().parse()?;
        let sizes = SyntheticSpec::criteo_like(0, total).vocab_sizes;
        let (_, times, _) = step_times(&model_name, &sizes, batch, steps)?;
        let med = times[times.len() / 2];
        let ms = |t: f64| (t * 1e4).round() / 10.0;
        println!(
            "{}",
            serde_json::json!({
                "model": model_name,
                "embedding_rows": sizes.iter().map(|s| s + 2).sum::<usize>(),
                "batch": batch,
                "step_ms_median": ms(med),
                "step_ms_p10": ms(times[times.len() / 10]),
                "step_ms_p90": ms(times[times.len() * 9 / 10]),
                "samples_per_sec": (batch as f64 / med).round(),
                "peak_rss_mb": peak_rss_mb().round(),
            })
        );
    }
    Ok(())
}

/// Median and tail latency of `Model::predict` on batches of uniformly random ids.
fn predict_latency(model: &std::path::Path, batch: usize, seconds: f64) -> anyhow::Result<()> {
    let lm = recforge_train::score::load_model(model)?;
    let fmap = &lm.meta.feature_map;
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    let pool: Vec<Batch> = (0..16)
        .map(|_| {
            let mut slots = Vec::with_capacity(batch * fmap.width);
            for _ in 0..batch {
                for i in 0..fmap.num_fields() {
                    slots.push(rng.gen_range(0..fmap.vocab_of(i).size()) as u32);
                }
            }
            Batch {
                size: batch,
                width: fmap.width,
                labels: vec![0.0; batch],
                slots,
            }
        })
        .collect();
    for b in &pool {
        lm.model.predict(b);
    }
    let start = Instant::now();
    let mut times = Vec::new();
    while start.elapsed().as_secs_f64() < seconds {
        let t = Instant::now();
        std::hint::black_box(lm.model.predict(&pool[times.len() % pool.len()]));
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let total = start.elapsed().as_secs_f64();
    let n = times.len();
    times.sort_by(|a, b| a.total_cmp(b));
    let r = |x: f64| (x * 1000.0).round() / 1000.0;
    println!(
        "{}",
        serde_json::json!({
            "impl": "recforge (model only)", "batch": batch, "batches_per_sec": r(n as f64 / total),
            "p50_ms": r(times[n / 2]), "p99_ms": r(times[n * 99 / 100]),
        })
    );
    Ok(())
}

/// Builds the benchmark's 39-field model (embedding 16, MLP 400×3, DCNv2 with 3 cross layers
/// beside it) and returns it with its sorted training-step times over `steps` steps.
fn step_times(
    model_name: &str,
    sizes: &[usize],
    batch: usize,
    steps: usize,
) -> anyhow::Result<(
    recforge_models::Model,
    Vec<f64>,
    serde_json::Map<String, serde_json::Value>,
)> {
    let fmap = feature_map(sizes);
    let cfg: serde_json::Map<String, serde_json::Value> =
        serde_json::from_value(serde_json::json!({
            "model": model_name, "embedding_dim": 16, "hidden_units": [400, 400, 400],
            "parallel_dnn_hidden_units": [400, 400, 400], "num_cross_layers": 3,
            "batch_size": batch, "seed": 2024,
        }))?;
    let cfg = ModelConfig::new("bench", cfg);
    let mut model = recforge_models::build(&cfg, &fmap)?;
    let mut trainer = Trainer::new(TrainConfig::from_config(&cfg)?, &model);
    let pool = batches(sizes, 8, batch, 7);
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    for b in pool.iter().take(3) {
        trainer
            .train_step(&mut model, b, &mut rng)
            .map_err(|e| e.at(0, 0))?;
    }
    let mut times = Vec::with_capacity(steps);
    let mut phases = vec![Vec::with_capacity(steps); PHASES.len()];
    for i in 0..steps {
        // `Trainer::train_step`'s pieces, timed one by one (these models keep no batch-norm
        // statistics, the only part of the step left out)
        let batch = &pool[i % pool.len()];
        let lr = trainer.learning_rate();
        let mut clock = Instant::now();
        let mut lap = |k: usize, clock: &mut Instant| {
            phases[k].push(clock.elapsed().as_secs_f64());
            *clock = Instant::now();
        };
        let t = Instant::now();
        let fwd = model.forward(batch, true, &mut rng);
        let mut graph = fwd.graph;
        let loss = graph.bce_with_logits(fwd.logits, &batch.labels);
        lap(0, &mut clock);
        let mut grads = graph.backward(loss);
        drop(graph);
        lap(1, &mut clock);
        let emb_grads = model.embedding_grads(batch, &fwd.emb_nodes, &mut grads);
        lap(2, &mut clock);
        trainer
            .apply_step(&mut model, &grads.params, &emb_grads, &mut [], lr, 0.0)
            .map_err(|e| e.at(0, i as u64))?;
        drop((grads, emb_grads));
        lap(3, &mut clock);
        times.push(t.elapsed().as_secs_f64());
    }
    times.sort_by(|a, b| a.total_cmp(b));
    let phase_ms = PHASES
        .iter()
        .zip(phases)
        .map(|(name, ts)| (name.to_string(), ((median(ts) * 1e4).round() / 10.0).into()))
        .collect();
    Ok((model, times, phase_ms))
}

/// The parts of a training step `step_times` reports: forward (embedding gather, network and
/// loss), backward through the network, the embedding rows' gradients, and the optimizer
/// (gradient norm, clipping, dense and row-wise updates).
const PHASES: [&str; 4] = ["forward", "backward", "embedding_grads", "optimizer"];

/// The CPU's model name from /proc/cpuinfo, and its vector unit.
fn cpu_name() -> String {
    let name = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|n| n.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    let simd = ["no AVX2", "AVX2", "AVX-512"][recforge_nn::kernels::simd_level().min(2) as usize];
    format!("{name} ({simd}, {} threads)", rayon::current_num_threads())
}

/// Median seconds of `c = op(a)·op(b)` at `[m×n]`, inner size `k`, over `reps` runs.
fn time_gemm(m: usize, n: usize, k: usize, trans_a: bool, trans_b: bool, reps: usize) -> f64 {
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    let a: Vec<f32> = (0..m * k).map(|_| rng.gen_range(-1.0..1.0)).collect();
    let b: Vec<f32> = (0..k * n).map(|_| rng.gen_range(-1.0..1.0)).collect();
    let mut c = vec![0.0f32; m * n];
    let times = (0..reps + 2)
        .map(|_| {
            let t = Instant::now();
            recforge_nn::kernels::matmul(&mut c, &a, &b, m, n, k, trans_a, trans_b, false);
            t.elapsed().as_secs_f64()
        })
        .skip(2)
        .collect();
    median(times)
}

/// Prints `model`'s measured step beside the time its dense products alone take, over `rounds`
/// rounds of (steps, then the products alone), so that both sides of each round's ratio see the
/// same state of a shared machine; the fraction reported is the median round's.
fn roofline(
    model_name: &str,
    total: usize,
    batch: usize,
    steps: usize,
    rounds: usize,
) -> anyhow::Result<()> {
    let sizes = SyntheticSpec::criteo_like(0, total).vocab_sizes;
    let mut per_round = Vec::new();
    for _ in 0..rounds.max(1) {
        let (model, times, phases) = step_times(model_name, &sizes, batch, steps)?;
        let step = times[times.len() / 2];
        let (mut gemm_s, mut flops) = (0.0, 0.0);
        let mut shapes = Vec::new();
        for (_, p) in model.params.iter().filter(|(_, p)| p.trainable) {
            let (k, n) = (p.value.rows, p.value.cols);
            if k < 2 || n < 1 {
                continue; // biases, norms and scalars: no product
            }
            // forward x·W, then ∂W = xᵀ·∂z and ∂x = ∂z·Wᵀ, as the fused dense op runs them
            gemm_s += time_gemm(batch, n, k, false, false, 11)
                + time_gemm(k, n, batch, true, false, 11)
                + time_gemm(batch, k, n, false, true, 11);
            flops += 3.0 * 2.0 * (batch * k * n) as f64;
            shapes.push(format!("{k}x{n}"));
        }
        per_round.push((gemm_s / step, step, gemm_s, flops, shapes, phases));
    }
    per_round.sort_by(|a, b| a.0.total_cmp(&b.0));
    let fractions: Vec<f64> = per_round
        .iter()
        .map(|r| (r.0 * 1000.0).round() / 1000.0)
        .collect();
    let (fraction, step, gemm_s, flops, shapes, phases) = &per_round[per_round.len() / 2];
    println!(
        "{}",
        serde_json::json!({
            "model": model_name,
            "batch": batch,
            "dense_weights": shapes,
            "step_ms_median": (step * 1e4).round() / 10.0,
            "step_phases_ms": phases,
            "gemm_ms": (gemm_s * 1e4).round() / 10.0,
            "gemm_gflops": (flops / gemm_s / 1e8).round() / 10.0,
            "samples_per_sec": (batch as f64 / step).round(),
            "gemm_bound_samples_per_sec": (batch as f64 / gemm_s).round(),
            "fraction_of_gemm_bound": (fraction * 1000.0).round() / 1000.0,
            "fraction_each_round": fractions,
        })
    );
    Ok(())
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(|a, b| a.total_cmp(b));
    xs[xs.len() / 2]
}

/// Sentences per second of `encode` (tokenization included, as in sentence-transformers'
/// `encode`), median over `reps` passes after one warm-up pass.
fn text_encode(
    enc: &recforge_text::SentenceEncoder,
    texts: &[&str],
    batch: usize,
    reps: usize,
) -> anyhow::Result<()> {
    enc.encode(texts, batch)?;
    let times: Vec<f64> = (0..reps)
        .map(|_| {
            let t = Instant::now();
            enc.encode(texts, batch).map(|_| t.elapsed().as_secs_f64())
        })
        .collect::<Result<_, _>>()?;
    let tokens: usize = enc.tokenize(texts)?.iter().map(|t| t.ids.len()).sum();
    let med = median(times);
    println!(
        "{}",
        serde_json::json!({"engine": "recforge", "task": "encode", "sentences": texts.len(),
            "tokens": tokens, "batch": batch,
            "sentences_per_sec": (texts.len() as f64 / med * 10.0).round() / 10.0,
            "peak_rss_mb": peak_rss_mb().round()})
    );
    Ok(())
}

/// Median time of one contrastive fine-tuning step (forward, backward, Adam over all
/// parameters) on `pairs` (text i, text i+1) pairs.
fn text_finetune(
    mut enc: recforge_text::SentenceEncoder,
    texts: &[&str],
    pairs: usize,
    steps: usize,
) -> anyhow::Result<()> {
    anyhow::ensure!(texts.len() > pairs, "need more than {pairs} texts");
    let tokens = enc.tokenize(texts)?;
    let anchors = tokens[..pairs].to_vec();
    let positives = tokens[1..pairs + 1].to_vec();
    let mut trainer = recforge_text::ContrastiveTrainer::new(&enc, 2e-5, 0);
    trainer.step(&mut enc, &anchors, &positives);
    let times: Vec<f64> = (0..steps)
        .map(|_| {
            let t = Instant::now();
            trainer.step(&mut enc, &anchors, &positives);
            t.elapsed().as_secs_f64()
        })
        .collect();
    println!(
        "{}",
        serde_json::json!({"engine": "recforge", "task": "finetune", "pairs": pairs,
            "step_ms": (median(times) * 1e4).round() / 10.0, "peak_rss_mb": peak_rss_mb().round()})
    );
    Ok(())
}
