//! The Gaussian diffusion DiffRec (Wang et al., SIGIR'23) runs over a user's interaction row,
//! as its reference code builds it (YiyanXu/DiffRec, `models/gaussian_diffusion.py`): the noise
//! schedule and its posterior coefficients in f64, the loss weights, the sinusoidal step
//! embedding of the denoiser's input, and the reverse process DiffRec ranks with (from the
//! un-noised row, every step, no noise added). The DiffRec model builds on these.

use recforge_nn::{Graph, NodeId, Tensor};

/// How the per-step variances are laid out (DiffRec's `noise_schedule`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NoiseSchedule {
    /// β linear from `scale·min` to `scale·max`.
    Linear,
    /// The variance 1 − ᾱ linear from `scale·min` to `scale·max` (DiffRec's tuned choice).
    LinearVar,
}

impl NoiseSchedule {
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "linear" => Some(NoiseSchedule::Linear),
            "linear-var" => Some(NoiseSchedule::LinearVar),
            _ => None,
        }
    }
}

/// β, ᾱ and the posterior coefficients of a `steps`-step schedule.
#[derive(Clone, Debug, PartialEq)]
pub struct DiffusionSchedule {
    pub betas: Vec<f64>,
    /// ᾱ_t = Π_{s ≤ t} (1 − β_s)
    pub alphas_cumprod: Vec<f64>,
    /// ᾱ_{t−1}, with ᾱ_{−1} = 1
    pub alphas_cumprod_prev: Vec<f64>,
    /// the posterior mean is `coef1[t] · x̂₀ + coef2[t] · x_t`
    pub posterior_mean_coef1: Vec<f64>,
    pub posterior_mean_coef2: Vec<f64>,
}

impl DiffusionSchedule {
    /// DiffRec's schedule; `beta_fixed` sets β₀ = 1e-5 as DiffRec does (L-DiffRec does not).
    pub fn new(
        schedule: NoiseSchedule,
        steps: usize,
        noise_scale: f64,
        noise_min: f64,
        noise_max: f64,
        beta_fixed: bool,
    ) -> Result<Self, String> {
        let (start, end) = (noise_scale * noise_min, noise_scale * noise_max);
        if steps == 0 {
            return Err("steps must be at least 1".into());
        }
        if !(start.is_finite() && end.is_finite() && 0.0 < start && start <= end && end < 1.0) {
            return Err(format!(
                "noise_scale·noise_min = {start} and noise_scale·noise_max = {end} must satisfy \
                 0 < min ≤ max < 1"
            ));
        }
        let grid = linspace(start, end, steps);
        let mut betas = match schedule {
            NoiseSchedule::Linear => grid,
            NoiseSchedule::LinearVar => {
                let alpha_bar: Vec<f64> = grid.iter().map(|v| 1.0 - v).collect();
                std::iter::once(1.0 - alpha_bar[0])
                    .chain(alpha_bar.windows(2).map(|w| (1.0 - w[1] / w[0]).min(0.999)))
                    .collect()
            }
        };
        if beta_fixed {
            betas[0] = 1e-5;
        }
        Ok(Self::from_betas(betas))
    }

    /// The schedule of the per-step variances `betas` (each in (0, 1)).
    pub fn from_betas(betas: Vec<f64>) -> Self {
        let steps = betas.len();
        let mut alphas_cumprod = Vec::with_capacity(steps);
        let mut prod = 1.0;
        for b in &betas {
            prod *= 1.0 - b;
            alphas_cumprod.push(prod);
        }
        let alphas_cumprod_prev: Vec<f64> = std::iter::once(1.0)
            .chain(alphas_cumprod[..steps.saturating_sub(1)].iter().copied())
            .collect();
        let (mut coef1, mut coef2) = (Vec::with_capacity(steps), Vec::with_capacity(steps));
        for t in 0..steps {
            let (ab, prev, b) = (alphas_cumprod[t], alphas_cumprod_prev[t], betas[t]);
            coef1.push(b * prev.sqrt() / (1.0 - ab));
            coef2.push((1.0 - prev) * (1.0 - b).sqrt() / (1.0 - ab));
        }
        DiffusionSchedule {
            betas,
            alphas_cumprod,
            alphas_cumprod_prev,
            posterior_mean_coef1: coef1,
            posterior_mean_coef2: coef2,
        }
    }

    /// `x_t = √ᾱ_t · x₀ + √(1 − ᾱ_t) · ε` on the tape, one step per row of `x0` (`B × d`, a
    /// node that may carry a gradient), `noise` row-major standard normal.
    pub fn q_sample(&self, g: &mut Graph, x0: NodeId, ts: &[usize], noise: &[f32]) -> NodeId {
        let b = ts.len();
        let d = noise.len() / b.max(1);
        let (mut a, mut scaled) = (Vec::with_capacity(b), noise.to_vec());
        for (r, &t) in ts.iter().enumerate() {
            let ab = self.alphas_cumprod[t];
            a.push(ab.sqrt() as f32);
            let c = (1.0 - ab).sqrt() as f32;
            scaled[r * d..(r + 1) * d].iter_mut().for_each(|z| *z *= c);
        }
        let a = g.input(Tensor::from_vec(b, 1, a), false);
        let signal = g.scale_rows(x0, a);
        let noise = g.input(Tensor::from_vec(b, d, scaled), false);
        g.add(signal, noise)
    }

    /// The variance of q(x_{t−1} | x_t, x₀): β_t (1 − ᾱ_{t−1}) / (1 − ᾱ_t).
    pub fn posterior_variance(&self, t: usize) -> f64 {
        self.betas[t] * (1.0 - self.alphas_cumprod_prev[t]) / (1.0 - self.alphas_cumprod[t])
    }

    pub fn steps(&self) -> usize {
        self.betas.len()
    }

    /// The signal-to-noise ratio ᾱ_t / (1 − ᾱ_t).
    pub fn snr(&self, t: usize) -> f64 {
        let ab = self.alphas_cumprod[t];
        ab / (1.0 - ab)
    }

    /// The weight of step `t`'s x₀ error in DiffRec's loss: SNR(t − 1) − SNR(t), and 1 at t = 0.
    pub fn loss_weight(&self, t: usize) -> f64 {
        match t {
            0 => 1.0,
            _ => self.snr(t - 1) - self.snr(t),
        }
    }

    /// DiffRec's ranking pass: from `x` (the user's un-noised training row), for
    /// t = T − 1 … 0, `x ← coef1[t] · denoise(x, t) + coef2[t] · x`, with no noise added.
    pub fn reverse(
        &self,
        x: &[f32],
        mut denoise: impl FnMut(&[f32], usize) -> Vec<f32>,
    ) -> Vec<f32> {
        let mut x = x.to_vec();
        for t in (0..self.steps()).rev() {
            let x0 = denoise(&x, t);
            let (c1, c2) = (
                self.posterior_mean_coef1[t] as f32,
                self.posterior_mean_coef2[t] as f32,
            );
            x.iter_mut()
                .zip(&x0)
                .for_each(|(xi, &pred)| *xi = c1 * pred + c2 * *xi);
        }
        x
    }
}

/// numpy's `linspace`: `n` values from `start` to `end`, evenly spaced, the last exactly `end`
/// (one value is `start`).
pub fn linspace(start: f64, end: f64, n: usize) -> Vec<f64> {
    (0..n)
        .map(|i| match n {
            1 => start,
            _ if i == n - 1 => end,
            _ => start + i as f64 * (end - start) / (n - 1) as f64,
        })
        .collect()
}

/// DiffRec's sinusoidal step embedding: per step `t`, `[cos(t·f_0), …, cos(t·f_{h−1}),
/// sin(t·f_0), …, sin(t·f_{h−1})]` with `f_i = max_period^(−i/h)`, `h = dim / 2` (a zero column
/// after them when `dim` is odd); row-major `[steps.len() × dim]`.
pub fn timestep_embedding(steps: &[usize], dim: usize, max_period: f64) -> Vec<f32> {
    let half = dim / 2;
    let freqs: Vec<f64> = (0..half)
        .map(|i| (-(max_period.ln()) * i as f64 / half as f64).exp())
        .collect();
    let mut out = vec![0.0f32; steps.len() * dim];
    for (row, &t) in out.chunks_exact_mut(dim.max(1)).zip(steps) {
        for (i, f) in freqs.iter().enumerate() {
            let arg = t as f64 * f;
            row[i] = arg.cos() as f32;
            row[half + i] = arg.sin() as f32;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// DiffRec's tuned ML-1M settings: 40 steps, scale 5e-3, min 5e-3, max 1e-2, β₀ fixed.
    fn ml1m() -> DiffusionSchedule {
        DiffusionSchedule::new(NoiseSchedule::LinearVar, 40, 5e-3, 5e-3, 1e-2, true).unwrap()
    }

    fn close(a: f64, b: f64, rel: f64) -> bool {
        (a - b).abs() <= rel * b.abs()
    }

    #[test]
    fn the_ml1m_schedule_has_diffrecs_values() {
        // the known answers of ../shared/design/topk.md, from DiffRec's numpy code
        let s = ml1m();
        assert_eq!(s.betas[0], 1e-5);
        assert!(close(s.betas[1], 6.41042e-7, 1e-5), "{}", s.betas[1]);
        assert!(close(s.alphas_cumprod[39], 0.999_965_0, 1e-7));
        assert!(
            close(s.loss_weight(1), 6024.18, 1e-6),
            "{}",
            s.loss_weight(1)
        );
        assert!(
            close(s.loss_weight(39), 533.05, 1e-5),
            "{}",
            s.loss_weight(39)
        );
        assert_eq!(s.loss_weight(0), 1.0);
        // at t = 0 the posterior mean is the predicted x₀ itself
        assert!(close(s.posterior_mean_coef1[0], 1.0, 1e-9));
        assert_eq!(s.posterior_mean_coef2[0], 0.0);
    }

    #[test]
    fn a_linear_schedule_is_the_grid_itself() {
        let s = DiffusionSchedule::new(NoiseSchedule::Linear, 3, 1.0, 0.1, 0.3, false).unwrap();
        let want = [0.1, 0.2, 0.3];
        assert!(s.betas.iter().zip(want).all(|(a, b)| close(*a, b, 1e-12)));
        assert!(close(s.alphas_cumprod[2], 0.9 * 0.8 * 0.7, 1e-12));
        for bad in [(0.0, 0.1), (0.2, 0.1), (0.5, 1.5)] {
            assert!(
                DiffusionSchedule::new(NoiseSchedule::Linear, 3, 1.0, bad.0, bad.1, false).is_err()
            );
        }
    }

    #[test]
    fn the_step_embedding_of_zero_is_cosines_of_zero() {
        assert_eq!(
            timestep_embedding(&[0], 10, 10_000.0),
            [1.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0]
        );
        // t = 1: f_0 = 1, f_1 = 10000^(−1/2) = 0.01 (dim 4, one zero column for dim 5)
        let e = timestep_embedding(&[1], 5, 10_000.0);
        let want = [1f64.cos(), 0.01f64.cos(), 1f64.sin(), 0.01f64.sin(), 0.0];
        assert!(
            e.iter()
                .zip(want)
                .all(|(a, b)| (*a as f64 - b).abs() < 1e-6),
            "{e:?}"
        );
    }

    #[test]
    fn a_constant_denoiser_returns_its_constant_through_inference() {
        let s = ml1m();
        let mut calls = Vec::new();
        let out = s.reverse(&[1.0, 0.0, 1.0], |x, t| {
            calls.push(t);
            vec![0.25; x.len()]
        });
        assert!(out.iter().all(|v| (v - 0.25).abs() < 1e-6), "{out:?}");
        // every step, from the last to the first
        assert_eq!(calls, (0..40).rev().collect::<Vec<_>>());
    }
}
