//! The encoder's training path on a tiny random BERT (no model files needed): gradients reach
//! every parameter and the input embeddings (checked against finite differences), packing
//! does not change results, fine-tuning lowers the loss, and weights round-trip through
//! safetensors.

use rand::rngs::StdRng;
use rand::SeedableRng;
use recforge_nn::testing::GradCheck;
use recforge_nn::{Graph, Tensor};
use recforge_text::{Bert, BertConfig, SentenceEncoder, TokenBatch, Tokens};

fn config() -> BertConfig {
    recforge_text::testing::tiny_config()
}

fn encoder(seed: u64) -> SentenceEncoder {
    recforge_text::testing::tiny_encoder(seed)
}

const PAIRS: [(&str, &str); 4] = [
    ("the cat sat on the mat", "a cat sat"),
    ("the red car drove fast", "a red car"),
    ("the bird flew home", "a bird flew"),
    ("the blue dog sat", "a slow blue dog"),
];

fn pairs(enc: &SentenceEncoder) -> (Vec<Tokens>, Vec<Tokens>) {
    let a: Vec<&str> = PAIRS.iter().map(|p| p.0).collect();
    let b: Vec<&str> = PAIRS.iter().map(|p| p.1).collect();
    (
        enc.tokenize(&a).expect("tokenize"),
        enc.tokenize(&b).expect("tokenize"),
    )
}

#[test]
fn the_tokenizer_wraps_texts_in_cls_and_sep() {
    let enc = encoder(1);
    let t = &enc.tokenize(&["The cat, zebra"]).expect("tokenize")[0];
    // [CLS] the cat , zebra [SEP]: "," and "zebra" are not in the vocabulary
    assert_eq!(t.ids, vec![2, 4, 5, 1, 1, 3]);
    assert!(t.type_ids.iter().all(|&x| x == 0));
}

#[test]
fn every_parameter_gets_a_nonzero_gradient() {
    let enc = encoder(2);
    let (a, p) = pairs(&enc);
    let mut rng = StdRng::seed_from_u64(0);
    let mut g = Graph::new(&enc.bert.params, true);
    let loss = enc.contrastive_loss(&mut g, &a, &p, 20.0, &mut rng);
    let grads = g.backward(loss);
    let mut checked = 0;
    for (id, param) in enc.bert.params.iter() {
        let grad = grads
            .param(id)
            .unwrap_or_else(|| panic!("{} received no gradient", param.name));
        assert_eq!(grad.shape(), param.value.shape(), "{}", param.name);
        assert!(
            grad.data.iter().any(|&v| v != 0.0 && v.is_finite()),
            "{}: gradient is all zero",
            param.name
        );
        checked += 1;
    }
    // 3 embedding tables + embedding norm (2) + 16 per layer
    assert_eq!(checked, 3 + 2 + 16 * 2);
}

#[test]
fn input_embedding_gradient_matches_finite_differences() {
    let enc = encoder(3);
    let toks = enc
        .tokenize(&["the cat sat", "a red car drove fast"])
        .expect("tokenize");
    let batch = TokenBatch::pack(toks.iter().map(|t| (&t.ids[..], &t.type_ids[..])));
    // soft-prompt style input: word embeddings plus an offset a caller would learn
    let base = {
        let mut g = Graph::inference(&enc.bert.params);
        let e = enc.bert.embed_ids(&mut g, &batch.ids);
        let mut t = g.value(e).clone();
        t.data
            .iter_mut()
            .enumerate()
            .for_each(|(i, v)| *v += ((i * 13 % 7) as f32 - 3.0) * 0.05);
        t
    };
    let loss_of = |embeds: &Tensor| -> (f32, Tensor) {
        let mut rng = StdRng::seed_from_u64(0);
        let mut g = Graph::new(&enc.bert.params, true);
        let x = g.input(embeds.clone(), true);
        let h = enc.bert.forward_embeds(&mut g, x, &batch, &mut rng);
        let pooled = enc.pool(&mut g, h, &batch);
        let w = g.input(
            Tensor::from_vec(
                2,
                8,
                (0..16).map(|i| ((i * 5 % 11) as f32 - 5.0) * 0.2).collect(),
            ),
            false,
        );
        // logits of each sequence against two fixed directions, first one as target
        let z = g.matmul_nt(pooled, w);
        let z = g.scale(z, 4.0);
        let loss = g.softmax_cross_entropy(z, &[0, 1]);
        let grads = g.backward(loss);
        let gx = grads.of(x).expect("input gradient").clone();
        (g.value(loss).data[0], gx)
    };
    let (_, analytic) = loss_of(&base);
    // a larger step than the default: six layers of f32 rounding
    let check = GradCheck {
        step: 1e-2,
        atol: 2e-3,
        rtol: 5e-2,
    };
    let mut moved = base.clone();
    for i in 0..base.len() {
        let what = format!("d loss/d embeds[{i}]");
        check
            .coordinate(&what, analytic.data[i] as f64, |d| {
                moved.data[i] = base.data[i] + d;
                let l = loss_of(&moved).0 as f64;
                moved.data[i] = base.data[i];
                l
            })
            .unwrap();
    }
    assert!(
        analytic.data.iter().any(|&v| v.abs() > 1e-4),
        "gradient is ~0"
    );
}

#[test]
fn packing_sequences_together_does_not_change_their_vectors() {
    let enc = encoder(4);
    let texts = [
        "the cat sat on the mat",
        "a bird",
        "the red car drove fast home",
    ];
    let together = enc.encode(&texts, 8).expect("encode");
    for (i, t) in texts.iter().enumerate() {
        let alone = enc.encode(&[t], 1).expect("encode");
        for (a, b) in alone.row(0).iter().zip(together.row(i)) {
            assert!((a - b).abs() < 1e-6, "{t}: {a} vs {b}");
        }
        let norm: f32 = together.row(i).iter().map(|v| v * v).sum();
        assert!((norm - 1.0).abs() < 1e-5, "vectors are L2-normalised");
    }
}

#[test]
fn contrastive_fine_tuning_lowers_the_loss() {
    let mut enc = encoder(5);
    let (a, p) = pairs(&enc);
    let mut trainer = recforge_text::ContrastiveTrainer::new(&enc, 1e-2, 0);
    let losses: Vec<f32> = (0..15).map(|_| trainer.step(&mut enc, &a, &p)).collect();
    assert!(
        losses[14] < 0.5 * losses[0],
        "loss did not fall: {losses:?}"
    );
}

#[test]
fn weights_round_trip_through_safetensors() {
    let enc = encoder(6);
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("model.safetensors");
    enc.bert.save(&path).expect("save");
    let back = Bert::load(config(), &path).expect("load");
    for ((_, a), (_, b)) in enc.bert.params.iter().zip(back.params.iter()) {
        assert_eq!(a.name, b.name);
        assert_eq!(a.value, b.value, "{}", a.name);
    }
    let mut small = config();
    small.hidden_size = 4;
    small.num_attention_heads = 1;
    let e = Bert::load(small, &path)
        .expect_err("shape mismatch")
        .to_string();
    assert!(
        e.contains("model.safetensors") && e.contains("expected"),
        "{e}"
    );
}

#[test]
fn a_written_model_directory_loads_back_to_the_same_encoder() {
    let dir = tempfile::tempdir().expect("tempdir");
    recforge_text::testing::write_tiny_model_dir(dir.path(), 7).expect("write");
    let loaded = SentenceEncoder::load(dir.path()).expect("load");
    let texts = ["the cat sat", "a blue car drove home"];
    assert_eq!(
        loaded.encode(&texts, 2).expect("encode"),
        encoder(7).encode(&texts, 2).expect("encode")
    );
    assert_eq!(loaded.max_seq_length, 16);
    assert!(loaded.normalize);
}

#[test]
fn a_missing_model_directory_says_how_to_fetch_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("config.json"), "{}").expect("write");
    let e = SentenceEncoder::load(dir.path())
        .err()
        .expect("incomplete dir")
        .to_string();
    assert!(
        e.contains("model.safetensors") && e.contains("scripts/fetch-minilm.sh"),
        "{e}"
    );
    let e = SentenceEncoder::load(&dir.path().join("nope"))
        .err()
        .expect("no dir")
        .to_string();
    assert!(e.contains("nope") && e.contains("fetch-minilm"), "{e}");
}

#[test]
fn a_tokenizer_larger_than_the_model_vocabulary_is_refused() {
    let mut small = config();
    small.vocab_size = 10;
    let tokenizer = recforge_text::testing::tiny_tokenizer_json()
        .parse()
        .expect("tokenizer");
    let e = SentenceEncoder::new(
        Bert::random(small, 1),
        tokenizer,
        16,
        recforge_text::Pooling::Mean,
        true,
    )
    .err()
    .expect("mismatched vocabularies")
    .to_string();
    assert!(
        e.contains("20 tokens") && e.contains("vocab_size is 10"),
        "{e}"
    );
}
