//! Multi-head self-attention within the segments of a packed batch (the kernels are in
//! [`crate::transformer`]).

use crate::graph::{accumulate, Graph, NodeId, Op};
use crate::tensor::Tensor;
use crate::transformer::{self, AttentionOptions, Segment};
use rand::{Rng, SeedableRng};

impl Graph<'_> {
    /// Multi-head self-attention within each segment of packed `q`, `k`, `v` (`[tokens × width]`).
    pub fn attention(
        &mut self,
        q: NodeId,
        k: NodeId,
        v: NodeId,
        heads: usize,
        segs: &[Segment],
    ) -> NodeId {
        // no dropout, so the generator is never drawn from
        let mut no_rng = rand::rngs::StdRng::seed_from_u64(0);
        self.attention_with(
            q,
            k,
            v,
            heads,
            segs,
            AttentionOptions::default(),
            &mut no_rng,
        )
    }

    /// As [`Graph::attention`], with the score scaling and probability dropout of `opts`
    /// (dropout only in training; its masks are drawn from `rng`).
    #[allow(clippy::too_many_arguments)]
    pub fn attention_with(
        &mut self,
        q: NodeId,
        k: NodeId,
        v: NodeId,
        heads: usize,
        segs: &[Segment],
        opts: AttentionOptions,
        rng: &mut impl Rng,
    ) -> NodeId {
        let (qv, kv, vv) = (self.value(q), self.value(k), self.value(v));
        assert!(
            qv.shape() == kv.shape() && kv.shape() == vv.shape(),
            "attention: q, k, v shapes differ"
        );
        let (rows, width) = qv.shape();
        assert_eq!(
            segs.iter().map(|s| s.len).sum::<usize>(),
            rows,
            "attention: segments do not cover the rows"
        );
        let scale = opts.score_scale(width / heads.max(1));
        let drop = (self.train && opts.dropout > 0.0)
            .then(|| dropout_masks(segs, heads, opts.dropout, rng));
        let mut out = Tensor::zeros(rows, width);
        let probs = transformer::attention_forward(
            &qv.data,
            &kv.data,
            &vv.data,
            &mut out.data,
            width,
            heads,
            segs,
            scale,
            drop.as_deref(),
            opts.causal,
        );
        let probs = if self.no_grad { Vec::new() } else { probs };
        let rg = self.rg(q) || self.rg(k) || self.rg(v);
        self.push(
            Op::Attention {
                q,
                k,
                v,
                heads,
                segs: segs.to_vec(),
                scale,
                probs,
                drop,
            },
            out,
            rg,
        )
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn attention_backward(
        &self,
        g: &mut [Option<Tensor>],
        gy: Tensor,
        (q, k, v): (NodeId, NodeId, NodeId),
        heads: usize,
        segs: &[Segment],
        scale: f32,
        probs: &[Vec<f32>],
        drop: Option<&[Vec<f32>]>,
    ) {
        let (qv, kv, vv) = (self.value(q), self.value(k), self.value(v));
        let (gq, gk, gv) = transformer::attention_backward(
            &qv.data, &kv.data, &vv.data, &gy.data, probs, qv.cols, heads, segs, scale, drop,
        );
        let (r, c) = qv.shape();
        for (id, grad) in [(q, gq), (k, gk), (v, gv)] {
            if self.rg(id) {
                accumulate(&mut g[id.0], Tensor::from_vec(r, c, grad));
            }
        }
    }
}

/// Inverted-dropout masks (`0` or `1/(1−p)`) over the attention probabilities of each
/// segment (`heads × len × len`), drawn from `rng` in order.
pub(crate) fn dropout_masks(
    segs: &[Segment],
    heads: usize,
    p: f32,
    rng: &mut impl Rng,
) -> Vec<Vec<f32>> {
    let keep = 1.0 - p;
    segs.iter()
        .map(|s| {
            (0..heads * s.len * s.len)
                .map(|_| {
                    if rng.gen::<f32>() < keep {
                        1.0 / keep
                    } else {
                        0.0
                    }
                })
                .collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use crate::init;
    use crate::ops::test_support::{check, rand_input};
    use crate::params::ParamStore;
    use crate::tensor::Tensor;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    #[test]
    fn transformer_block_matches_finite_differences() {
        // a packed batch of two sequences (3 and 2 tokens): attention with 2 heads, output
        // projection, residual, layer norm, GELU feed-forward, per-token logit
        let mut rng = StdRng::seed_from_u64(21);
        let mut s = ParamStore::new();
        let mut lin = |s: &mut ParamStore, name: &str, i: usize, o: usize| {
            let w = s.add(
                format!("{name}.w"),
                init::normal(&mut rng, i, o, 0.5),
                true,
                true,
            );
            let b = s.add(
                format!("{name}.b"),
                init::normal(&mut rng, 1, o, 0.3),
                true,
                false,
            );
            (w, b)
        };
        let (wq, bq) = lin(&mut s, "q", 4, 4);
        let (wk, bk) = lin(&mut s, "k", 4, 4);
        let (wv, bv) = lin(&mut s, "v", 4, 4);
        let (wo, bo) = lin(&mut s, "o", 4, 4);
        let (wf, bf) = lin(&mut s, "f", 4, 3);
        let (wl, bl) = lin(&mut s, "l", 3, 1);
        let gamma = s.add(
            "ln.g",
            Tensor::from_vec(1, 4, vec![1.1, 0.9, 1.3, 0.7]),
            true,
            false,
        );
        let beta = s.add(
            "ln.b",
            Tensor::from_vec(1, 4, vec![0.1, -0.2, 0.0, 0.3]),
            true,
            false,
        );
        let segs = crate::segments_from_lengths(&[3, 2]);
        check(s, rand_input(&mut rng, 5, 4), |g, x| {
            let q = g.linear(x, wq, Some(bq));
            let k = g.linear(x, wk, Some(bk));
            let v = g.linear(x, wv, Some(bv));
            let a = g.attention(q, k, v, 2, &segs);
            let o = g.linear(a, wo, Some(bo));
            let n = g.add_layer_norm(o, x, gamma, beta, 1e-5);
            let n = g.layer_norm(n, gamma, beta, 1e-5);
            let f = g.linear(n, wf, Some(bf));
            let h = g.gelu(f);
            g.linear(h, wl, Some(bl))
        });
    }

    #[test]
    fn attention_with_probability_dropout_and_no_scaling_matches_finite_differences() {
        // the same masks on every evaluation (a fresh generator per forward pass)
        use crate::transformer::AttentionOptions;
        let mut rng = StdRng::seed_from_u64(5);
        // segments of 1 to 34 tokens
        let segs = crate::segments_from_lengths(&[3, 4, 1, 34]);
        let x = rand_input(&mut rng, 42, 4);
        let mut s = ParamStore::new();
        let wv = s.add("v", init::normal(&mut rng, 4, 4, 0.5), true, true);
        let opts = AttentionOptions {
            scaled: false,
            dropout: 0.3,
            causal: false,
        };
        check(s, x, |g, x| {
            let mut drop_rng = StdRng::seed_from_u64(9);
            let v = g.linear(x, wv, None);
            let a = g.attention_with(x, x, v, 2, &segs, opts, &mut drop_rng);
            g.sum_cols(a)
        });
    }

    #[test]
    fn attention_dropout_zeroes_probabilities_only_in_training() {
        use crate::graph::Graph;
        use crate::transformer::AttentionOptions;
        let mut rng = StdRng::seed_from_u64(2);
        let segs = crate::segments_from_lengths(&[4]);
        let x = rand_input(&mut rng, 4, 2);
        let store = ParamStore::new();
        let opts = AttentionOptions {
            scaled: true,
            dropout: 0.5,
            causal: false,
        };
        let out = |train: bool| {
            let mut g = Graph::new(&store, train);
            let xi = g.input(x.clone(), false);
            let a = g.attention_with(xi, xi, xi, 1, &segs, opts, &mut StdRng::seed_from_u64(1));
            let b = g.attention(xi, xi, xi, 1, &segs);
            (g.value(a).clone(), g.value(b).clone())
        };
        let (eval_drop, eval_plain) = out(false);
        assert_eq!(eval_drop, eval_plain);
        let (train_drop, train_plain) = out(true);
        assert_eq!(train_plain, eval_plain);
        assert_ne!(train_drop, train_plain);
    }

    #[test]
    fn causal_attention_matches_finite_differences() {
        use crate::transformer::AttentionOptions;
        let mut rng = StdRng::seed_from_u64(6);
        let segs = crate::segments_from_lengths(&[5, 1, 3]);
        let x = rand_input(&mut rng, 9, 4);
        let mut s = ParamStore::new();
        let wq = s.add("q", init::normal(&mut rng, 4, 4, 0.5), true, true);
        let wv = s.add("v", init::normal(&mut rng, 4, 4, 0.5), true, true);
        let opts = AttentionOptions {
            causal: true,
            dropout: 0.2,
            ..AttentionOptions::default()
        };
        check(s, x, |g, x| {
            let mut drop_rng = StdRng::seed_from_u64(4);
            let q = g.linear(x, wq, None);
            let v = g.linear(x, wv, None);
            let a = g.attention_with(q, x, v, 2, &segs, opts, &mut drop_rng);
            g.sum_cols(a)
        });
    }

    /// Causal attention of packed `x` (q = k = v) over segments of `lengths`, one head.
    fn causal_self_attention(x: &Tensor, lengths: &[usize], causal: bool) -> Tensor {
        use crate::graph::Graph;
        use crate::transformer::AttentionOptions;
        let store = ParamStore::new();
        let mut g = Graph::new(&store, false);
        let xi = g.input(x.clone(), false);
        let opts = AttentionOptions {
            causal,
            ..AttentionOptions::default()
        };
        let segs = crate::segments_from_lengths(lengths);
        let a = g.attention_with(xi, xi, xi, 2, &segs, opts, &mut StdRng::seed_from_u64(0));
        g.value(a).clone()
    }

    #[test]
    fn causal_attention_does_not_see_later_tokens() {
        let mut rng = StdRng::seed_from_u64(7);
        let x = rand_input(&mut rng, 8, 4);
        let before = causal_self_attention(&x, &[5, 3], true);
        // change tokens 3 and 4 of the first sequence: its tokens 0..=2 must not move
        let mut changed = x.clone();
        for v in &mut changed.data[3 * 4..5 * 4] {
            *v += 3.0;
        }
        let after = causal_self_attention(&changed, &[5, 3], true);
        assert_eq!(&before.data[..3 * 4], &after.data[..3 * 4]);
        assert_ne!(&before.data[3 * 4..5 * 4], &after.data[3 * 4..5 * 4]);
        // the second sequence does not see the first at all
        assert_eq!(&before.data[5 * 4..], &after.data[5 * 4..]);
        // and without the mask the early tokens do see the change
        let (plain, plain_changed) = (
            causal_self_attention(&x, &[5, 3], false),
            causal_self_attention(&changed, &[5, 3], false),
        );
        assert_ne!(&plain.data[..3 * 4], &plain_changed.data[..3 * 4]);
    }

    #[test]
    fn causal_attention_at_each_token_is_attention_over_its_prefix() {
        // what lets SASRec train on every position of a sequence at once: the output at token
        // t equals unmasked attention over the prefix 0..=t
        let mut rng = StdRng::seed_from_u64(8);
        let x = rand_input(&mut rng, 6, 4);
        let all = causal_self_attention(&x, &[6], true);
        for t in 0..6 {
            let prefix = Tensor::from_vec(t + 1, 4, x.data[..(t + 1) * 4].to_vec());
            let alone = causal_self_attention(&prefix, &[t + 1], false);
            for (a, b) in all.row(t).iter().zip(alone.row(t)) {
                assert!((a - b).abs() < 1e-6, "token {t}: {a} vs {b}");
            }
        }
    }
}
