//! `recforge embed`, `recforge search` and `type: text` fields, on a tiny random encoder
//! written as a sentence-transformers directory (the real MiniLM is tested in recforge-text's
//! `pretrained` suite).

mod common;

use common::recforge;
use std::path::Path;

fn tiny_model(d: &Path) -> String {
    let dir = d.join("tiny-model");
    recforge_text::testing::write_tiny_model_dir(&dir, 3).expect("write the tiny model");
    dir.to_string_lossy().into_owned()
}

#[test]
fn embed_writes_one_vector_per_row_and_caches_repeated_texts() {
    let d = tempfile::tempdir().expect("tempdir");
    let model = tiny_model(d.path());
    std::fs::write(
        d.path().join("items.jsonl"),
        "{\"id\": 1, \"text\": \"the red car\"}\n{\"id\": 2, \"text\": \"a bird flew home\"}\
            \n{\"id\": 3, \"text\": \"the red car\"}\n",
    )
    .expect("write");
    let args = [
        "embed",
        "--input",
        "items.jsonl",
        "--column",
        "text",
        "--out",
        "v.npy",
        "--model",
        &model,
        "--cache",
        "cache.safetensors",
    ];
    let (ok, _, err) = recforge(&args, d.path());
    assert!(ok, "{err}");
    assert!(err.contains("encoded 2 distinct new texts"), "{err}");
    let v = recforge_text::vectors::load(&d.path().join("v.npy")).expect("load");
    assert_eq!((v.rows, v.cols), (3, 8));
    assert_eq!(v.row(0), v.row(2), "the same text, the same vector");
    assert_ne!(v.row(0), v.row(1));
    // the same vectors as the library computes
    let enc = recforge_text::SentenceEncoder::load(Path::new(&model)).expect("load");
    let want = enc
        .encode(&["the red car", "a bird flew home"], 8)
        .expect("encode");
    for (a, b) in v.row(1).iter().zip(want.row(1)) {
        assert!((a - b).abs() < 1e-6);
    }
    // a second run takes everything from the cache; safetensors output holds the same rows
    let args = [
        "embed",
        "--input",
        "items.jsonl",
        "--column",
        "text",
        "--out",
        "v.safetensors",
        "--model",
        &model,
        "--cache",
        "cache.safetensors",
    ];
    let (ok, _, err) = recforge(&args, d.path());
    assert!(ok, "{err}");
    assert!(err.contains("encoded 0 distinct new texts"), "{err}");
    let again = recforge_text::vectors::load(&d.path().join("v.safetensors")).expect("load");
    assert_eq!(again, v);
}

#[test]
fn embed_names_the_file_line_and_field_of_bad_input() {
    let d = tempfile::tempdir().expect("tempdir");
    let model = tiny_model(d.path());
    std::fs::write(
        d.path().join("bad.jsonl"),
        "{\"text\": \"the cat\"}\n{\"text\": [1, 2]}\n",
    )
    .expect("write");
    let args = [
        "embed",
        "--input",
        "bad.jsonl",
        "--column",
        "text",
        "--out",
        "v.npy",
        "--model",
        &model,
    ];
    let (ok, _, err) = recforge(&args, d.path());
    assert!(!ok);
    assert!(err.contains("bad.jsonl:2") && err.contains("text"), "{err}");
    assert!(!d.path().join("v.npy").exists(), "no partial output");
    std::fs::write(d.path().join("t.csv"), "id,title\n1,the cat\n").expect("write");
    let args = [
        "embed", "--input", "t.csv", "--column", "text", "--out", "v.npy", "--model", &model,
    ];
    let (ok, _, err) = recforge(&args, d.path());
    assert!(
        !ok && err.contains("no column `text`") && err.contains("title"),
        "{err}"
    );
    let args = [
        "embed",
        "--input",
        "t.csv",
        "--column",
        "title",
        "--out",
        "v.npy",
        "--model",
        "no-such-model",
    ];
    let (ok, _, err) = recforge(&args, d.path());
    assert!(!ok && err.contains("fetch-minilm.sh"), "{err}");
}

#[test]
fn search_finds_the_stored_text_itself_first() {
    let d = tempfile::tempdir().expect("tempdir");
    let model = tiny_model(d.path());
    std::fs::write(
        d.path().join("corpus.csv"),
        "id,text\nt1,the red car drove fast\nt2,a bird flew home\nt3,the cat sat on the mat\nt4,a \
            slow blue dog\n",
    )
    .expect("write");
    let args = [
        "embed",
        "--input",
        "corpus.csv",
        "--column",
        "text",
        "--out",
        "c.safetensors",
        "--model",
        &model,
    ];
    let (ok, _, err) = recforge(&args, d.path());
    assert!(ok, "{err}");
    let args = [
        "search",
        "--vectors",
        "c.safetensors",
        "--corpus",
        "corpus.csv",
        "--id-column",
        "id",
        "--query",
        "the cat sat on the mat",
        "--query",
        "a bird flew home",
        "--top-k",
        "2",
        "--model",
        &model,
    ];
    let (ok, out, err) = recforge(&args, d.path());
    assert!(ok, "{err}");
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    assert_eq!(lines.len(), 2);
    for (line, (id, text)) in lines
        .iter()
        .zip([("t3", "the cat sat on the mat"), ("t2", "a bird flew home")])
    {
        let hits = line["hits"].as_array().expect("hits");
        assert_eq!(hits.len(), 2);
        assert_eq!(hits[0]["id"], id);
        assert_eq!(hits[0]["text"], text);
        assert!((hits[0]["score"].as_f64().expect("score") - 1.0).abs() < 1e-5);
        assert!(hits[1]["score"].as_f64() <= hits[0]["score"].as_f64());
    }
}

/// Rows whose label is decided by the text alone; the test split has a text the training
/// split never had.
fn write_text_ctr(d: &Path) {
    let texts = [
        ("the red car drove fast", 0.9),
        ("a blue car drove fast", 0.85),
        ("the cat sat on the mat", 0.1),
        ("a dog sat on the mat", 0.15),
        ("the bird flew home", 0.5),
    ];
    std::fs::create_dir_all(d.join("data")).expect("mkdir");
    for (split, n) in [("train", 3000), ("valid", 600), ("test", 600)] {
        let mut s = String::from("label,user,item_text\n");
        for i in 0..n {
            let k = if split == "test" && i % 10 == 0 {
                // unseen in training
                None
            } else {
                Some(i * 7 % texts.len())
            };
            let (text, p) = match k {
                Some(k) => texts[k],
                None => ("a red car drove home fast", 0.9),
            };
            // a fixed pseudo-random draw per row
            let u = ((i * 2654435761usize) % 1000) as f64 / 1000.0;
            s += &format!("{},{},{text}\n", (u < p) as u8, i % 13);
        }
        std::fs::write(d.join(format!("data/{split}.csv")), s).expect("write");
    }
    std::fs::create_dir_all(d.join("cfg")).expect("mkdir");
    std::fs::write(
        d.join("cfg/dataset_config.yaml"),
        "texty:\n  data_root: ./processed/\n  data_format: csv\n  train_data: ./data/train.csv\n  \
            valid_data: ./data/valid.csv\n  test_data: ./data/test.csv\n  feature_cols:\n    - \
            {name: user, active: true, dtype: str, type: categorical}\n    - {name: item_text, \
            active: true, dtype: str, type: text, text_model: ./tiny-model}\n  label_col: {name: \
            label, dtype: float}\n",
    )
    .expect("write");
    std::fs::write(
        d.join("cfg/model_config.yaml"),
        "DeepFM_text:\n  model: DeepFM\n  dataset_id: texty\n  optimizer: adam\n  learning_rate: \
            0.01\n  epochs: 8\n  seed: 1\n  embedding_dim: 4\n  hidden_units: [16]\n  batch_size: \
            256\n  monitor: AUC\n",
    )
    .expect("write");
}

#[test]
fn a_text_field_trains_into_the_model_and_is_saved_with_it() {
    let d = tempfile::tempdir().expect("tempdir");
    tiny_model(d.path());
    write_text_ctr(d.path());
    let args = [
        "--threads",
        "2",
        "train",
        "--config",
        "cfg",
        "--expid",
        "DeepFM_text",
        "--run-dir",
        "run",
    ];
    let (ok, out, err) = recforge(&args, d.path());
    assert!(ok, "{err}");
    assert!(
        err.contains("text field `item_text`: 6 texts, 6 encoded"),
        "{err}"
    );
    let test_auc: f64 = out
        .lines()
        .find(|l| l.starts_with("test"))
        .and_then(|l| l.split_whitespace().nth(2))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no test AUC in {out}"));
    // the best achievable AUC here is about 0.85: the text decides the click probability
    eprintln!("test AUC {test_auc}");
    assert!(test_auc > 0.75, "test AUC {test_auc}\n{err}");
    // the vocabulary holds the test-only text, so it has its own vector, not the OOV row
    let side = serde_json::to_value(
        recforge_train::checkpoint::read_meta(&d.path().join("run/model.safetensors"))
            .expect("checkpoint metadata"),
    )
    .expect("json");
    let vocab = side["feature_map"]["vocabs"][1]["tokens"].to_string();
    assert!(vocab.contains("a red car drove home fast"), "{vocab}");
    assert_eq!(side["feature_map"]["fields"][1]["text_dim"], 8);
    // scoring from the checkpoint alone (no encoder needed) gives the same AUC
    std::fs::remove_dir_all(d.path().join("tiny-model")).expect("rm model");
    let (ok, out, err) = recforge(
        &["evaluate", "--model", "run", "--data", "data/test.csv"],
        d.path(),
    );
    assert!(ok, "{err}");
    assert!(
        out.contains(&format!("AUC {test_auc:.6}")),
        "{out} vs {test_auc}"
    );
    // training, unlike scoring, needs the encoder: its absence is an error that says so
    let (ok, _, err) = recforge(&args, d.path());
    assert!(
        !ok && err.contains("tiny-model") && err.contains("fetch"),
        "{err}"
    );
}
