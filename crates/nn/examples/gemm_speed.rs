//! Measures matmul GFLOP/s for the shapes of a DeepFM step (batch 4096, 39×16 inputs, 400 units).
use recforge_nn::kernels::matmul;
use std::time::Instant;

fn main() {
    let threads: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(2);
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build_global()
        .unwrap();
    let shapes = [
        (4096, 400, 624, false, false),
        (4096, 400, 400, false, false),
        (624, 400, 4096, true, false),
        (4096, 624, 400, false, true),
    ];
    for (m, n, k, ta, tb) in shapes {
        let a = vec![0.5f32; m * k];
        let b = vec![0.25f32; k * n];
        let mut c = vec![0.0f32; m * n];
        let mut times = Vec::new();
        for _ in 0..15 {
            let t = Instant::now();
            matmul(&mut c, &a, &b, m, n, k, ta, tb, false);
            times.push(t.elapsed().as_secs_f64());
        }
        times.sort_by(|a, b| a.partial_cmp(b).unwrap());
        let med = times[times.len() / 2];
        println!(
            "m={m} n={n} k={k} ta={ta} tb={tb}: {:.2} ms, {:.1} GFLOP/s",
            med * 1e3,
            2.0 * (m * n * k) as f64 / med / 1e9
        );
    }
}
