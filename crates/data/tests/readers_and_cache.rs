//! Readers, encoding rules, bad-row handling and the cache, on small files written here.

use recforge_data::config::load_experiment;
use recforge_data::features::OnBadRow;
use recforge_data::{DataError, EncodedDataset};
use std::path::Path;

fn write_config(dir: &Path, format: &str, ext: &str, cols: &str, extra: &str) {
    let p = |s: &str| dir.join(format!("{s}.{ext}")).display().to_string();
    std::fs::write(
        dir.join("dataset_config.yaml"),
        format!(
            "d:\n  data_root: {}\n  data_format: {format}\n  train_data: {}\n  valid_data: {}\n  \
                min_categr_count: 1\n{extra}  feature_cols:\n{cols}  label_col: {{name: label, \
                dtype: float}}\n",
            dir.join("processed").display(),
            p("train"),
            p("valid")
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("model_config.yaml"),
        "m:\n  model: LR\n  dataset_id: d\n",
    )
    .unwrap();
}

fn prepare(dir: &Path, on_bad: OnBadRow) -> Result<EncodedDataset, DataError> {
    let exp = load_experiment(dir, "m")?;
    EncodedDataset::prepare(&exp.dataset, on_bad, false, &|_| {})
}

#[test]
fn criteo_raw_tsv_without_header_buckets_numbers_and_maps_na_to_oov() {
    let dir = tempfile::tempdir().unwrap();
    // label, I1, I2, C1
    std::fs::write(
        dir.path().join("train.tsv"),
        "1\t5\t\tab\n0\t0\t3\tab\n1\t100\t1\t\n0\t5\t2\tcd\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("valid.tsv"), "1\t1000\t7\tzz\n").unwrap();
    write_config(
        dir.path(),
        "tsv",
        "tsv",
        "    - {name: [I1, I2], active: true, dtype: float, type: categorical, preprocess: \
            convert_to_bucket, fill_na: 0}\n    - {name: C1, active: true, dtype: str, type: \
            categorical, fill_na: \"\"}\n",
        "",
    );
    let ds = prepare(dir.path(), OnBadRow::Error).unwrap();
    let fm = &ds.feature_map;
    // I1 buckets: 5→2 (ln5²=2.59), 0→na, 100→21, 5→2 ⇒ vocab [2 (×2), 21]
    assert_eq!(fm.vocab_of(0).tokens, ["2", "21"]);
    // I2: missing→na(0), 3→1, 1→1, 2→2 ⇒ [1 (×2), 2]
    assert_eq!(fm.vocab_of(1).tokens, ["1", "2"]);
    assert_eq!(fm.vocab_of(2).tokens, ["ab", "cd"]);
    let oov = |f: usize| fm.vocab_of(f).oov();
    assert_eq!(&ds.train.row(1)[1..], &[oov(0), 1, 1]); // I1=0 is the fill_na token → OOV
                                                        // empty C1 → OOV
    assert_eq!(&ds.train.row(2)[1..], &[2, 1, oov(2)]);
    // valid: 1000 → floor(ln(1000)^2) = 47 unseen → OOV; 7 → 3 unseen → OOV; zz unseen → OOV
    assert_eq!(
        &ds.valid.as_ref().unwrap().row(0)[1..],
        &[oov(0), oov(1), oov(2)]
    );
    assert_eq!(ds.valid.as_ref().unwrap().label(0), 1.0);
}

#[test]
fn libfm_reads_frappe_layout() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("train.libfm"),
        "-1 3:1 10:1\n1 4:1 10:1\n1 3:1 11:1\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("valid.libfm"), "1 3:1 12:1\n").unwrap();
    write_config(
        dir.path(),
        "libfm",
        "libfm",
        "    - {name: [f0, f1], active: true, dtype: str, type: categorical}\n",
        "",
    );
    let ds = prepare(dir.path(), OnBadRow::Error).unwrap();
    assert_eq!(ds.train.labels(), vec![0.0, 1.0, 1.0]);
    assert_eq!(ds.feature_map.vocab_of(0).tokens, ["3", "4"]);
    assert_eq!(ds.feature_map.vocab_of(1).tokens, ["10", "11"]);
    assert_eq!(&ds.valid.as_ref().unwrap().row(0)[1..], &[1, 3]);
}

#[test]
fn sequences_are_padded_truncated_and_share_vocabularies() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("train.csv"),
        "label,item,hist,recent\n1,a,b^a^c^a,b^a^c^a\n0,b,,\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("valid.csv"),
        "label,item,hist,recent\n1,zz,a,a\n",
    )
    .unwrap();
    write_config(
        dir.path(),
        "csv",
        "csv",
        "    - {name: item, active: true, dtype: str, type: categorical}\n    - {name: hist, \
            active: true, dtype: str, type: sequence, splitter: ^, max_len: 3, share_embedding: \
            item}\n    - {name: recent, active: true, dtype: str, type: sequence, max_len: 3, \
            padding: pre, share_embedding: item, feature_encoder: null}\n",
        "",
    );
    let ds = prepare(dir.path(), OnBadRow::Error).unwrap();
    let fm = &ds.feature_map;
    // shared counts: a×5, b×3, c×2
    assert_eq!(fm.vocab_of(0).tokens, ["a", "b", "c"]);
    assert_eq!(fm.vocab_of(1).tokens, ["a", "b", "c"]);
    // FuxiCTR truncates on the padding side (keras' truncating = padding): post keeps the
    // first 3 (b a c), pre the last 3 (a c a)
    assert_eq!(&ds.train.row(0)[1..], &[1, 2, 1, 3, 1, 3, 1]);
    assert_eq!(&ds.train.row(1)[1..], &[2, 0, 0, 0, 0, 0, 0]);
    assert_eq!(
        &ds.valid.as_ref().unwrap().row(0)[1..],
        &[4, 1, 0, 0, 0, 0, 1]
    );
}

#[test]
fn malformed_rows_name_file_line_and_field_or_are_skipped() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("train.csv"),
        "label,item,price\n1,a,0.5\n0,b,cheap\n1,a,2\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("valid.csv"),
        "label,item,price\n1,a,1\n0,a\n",
    )
    .unwrap();
    write_config(
        dir.path(),
        "csv",
        "csv",
        "    - {name: item, active: true, dtype: str, type: categorical}\n    - {name: price, \
            active: true, dtype: float, type: numeric}\n",
        "",
    );
    let err = prepare(dir.path(), OnBadRow::Error)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("train.csv:3") && err.contains("`price`") && err.contains("cheap"),
        "{err}"
    );
    // nothing half-written is left behind
    let left: Vec<_> = std::fs::read_dir(dir.path().join("processed/d"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(
        left.iter()
            .all(|f| !f.ends_with(".tmp") && f != "feature_map.json"),
        "{left:?}"
    );
    let ds = prepare(dir.path(), OnBadRow::Skip).unwrap();
    assert_eq!(ds.train.rows, 2);
    assert_eq!(ds.valid.as_ref().unwrap().rows, 1);
    assert_eq!(ds.skipped, 2);
    assert_eq!(f32::from_bits(ds.train.row(1)[2]), 2.0);
}

#[test]
fn cache_is_reused_and_rebuilt_when_the_config_or_data_change() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("train.csv"), "label,item\n1,a\n0,b\n").unwrap();
    std::fs::write(dir.path().join("valid.csv"), "label,item\n1,a\n").unwrap();
    let cols = "    - {name: item, active: true, dtype: str, type: categorical}\n";
    write_config(dir.path(), "csv", "csv", cols, "");
    assert!(prepare(dir.path(), OnBadRow::Error).unwrap().built);
    assert!(!prepare(dir.path(), OnBadRow::Error).unwrap().built);
    // min_categr_count changed: rebuilt, and `a`/`b` (seen once each) fall to OOV
    let text = std::fs::read_to_string(dir.path().join("dataset_config.yaml"))
        .unwrap()
        .replace("min_categr_count: 1", "min_categr_count: 2");
    std::fs::write(dir.path().join("dataset_config.yaml"), text).unwrap();
    let ds = prepare(dir.path(), OnBadRow::Error).unwrap();
    assert!(ds.built);
    assert!(ds.feature_map.vocab_of(0).tokens.is_empty());
    // the data changed: rebuilt
    std::thread::sleep(std::time::Duration::from_millis(20));
    std::fs::write(dir.path().join("train.csv"), "label,item\n1,a\n0,a\n1,a\n").unwrap();
    let ds = prepare(dir.path(), OnBadRow::Error).unwrap();
    assert!(ds.built);
    assert_eq!(ds.train.rows, 3);
}

/// Writes a `label, item` Parquet file with pages compressed by `codec`.
fn write_parquet(path: &Path, labels: &[f32], items: &[&str], codec: parquet::basic::Compression) {
    use parquet::data_type::{ByteArray, ByteArrayType, FloatType};
    use parquet::file::properties::WriterProperties;
    use parquet::file::writer::SerializedFileWriter;
    use parquet::schema::parser::parse_message_type;
    use std::sync::Arc;
    let schema = Arc::new(
        parse_message_type("message s { required float label; required binary item (UTF8); }")
            .unwrap(),
    );
    let file = std::fs::File::create(path).unwrap();
    let props = WriterProperties::builder().set_compression(codec).build();
    let mut w = SerializedFileWriter::new(file, schema, Arc::new(props)).unwrap();
    let mut rg = w.next_row_group().unwrap();
    let mut c = rg.next_column().unwrap().unwrap();
    c.typed::<FloatType>()
        .write_batch(labels, None, None)
        .unwrap();
    c.close().unwrap();
    let mut c = rg.next_column().unwrap().unwrap();
    let vals: Vec<ByteArray> = items.iter().map(|s| ByteArray::from(*s)).collect();
    c.typed::<ByteArrayType>()
        .write_batch(&vals, None, None)
        .unwrap();
    c.close().unwrap();
    rg.close().unwrap();
    w.close().unwrap();
}

#[test]
fn parquet_reads_like_csv() {
    let dir = tempfile::tempdir().unwrap();
    for (name, labels, items) in [
        ("train", vec![1.0f32, 0.0, 1.0], vec!["a", "b", "a"]),
        ("valid", vec![0.0], vec!["b"]),
    ] {
        let path = dir.path().join(format!("{name}.parquet"));
        write_parquet(
            &path,
            &labels,
            &items,
            parquet::basic::Compression::UNCOMPRESSED,
        );
    }
    write_config(
        dir.path(),
        "parquet",
        "parquet",
        "    - {name: item, active: true, dtype: str, type: categorical}\n",
        "",
    );
    let ds = prepare(dir.path(), OnBadRow::Error).unwrap();
    assert_eq!(ds.train.labels(), vec![1.0, 0.0, 1.0]);
    assert_eq!(ds.feature_map.vocab_of(0).tokens, ["a", "b"]);
    assert_eq!(&ds.valid.as_ref().unwrap().row(0)[1..], &[2]);
}

/// A CSV with `n` good rows (`label,item,price`) and `bad` put at line `at` (1-based, after
/// the header at line 1).
fn csv_with(n: usize, at: usize, bad: &str) -> String {
    let mut s = String::from("label,item,price\n");
    for i in 0..n {
        if i + 2 == at {
            s += bad;
            s.push('\n');
        }
        s += &format!("{},i{},{}\n", i % 2, i % 7, (i % 5) as f32 * 0.5);
    }
    s
}

fn item_price_config(dir: &Path) {
    write_config(
        dir,
        "csv",
        "csv",
        "    - {name: item, active: true, dtype: str, type: categorical}\n    - {name: price, \
            active: true, dtype: float, type: numeric}\n",
        "",
    );
}

#[test]
fn non_finite_numbers_and_labels_outside_the_loss_domain_are_bad_rows() {
    for (bad, field) in [
        ("1,a,NaN", "price"),
        ("1,a,inf", "price"),
        ("1,a,-inf", "price"),
        ("1,a,1e400", "price"),
        ("1,a,1e39", "price"), // finite in f64, infinite in f32
        ("NaN,a,1", "label"),
        ("2,a,1", "label"),
        ("-3,a,1", "label"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("train.csv"), csv_with(2400, 100, bad)).unwrap();
        std::fs::write(dir.path().join("valid.csv"), csv_with(10, 0, "")).unwrap();
        item_price_config(dir.path());
        let err = prepare(dir.path(), OnBadRow::Error)
            .err()
            .unwrap_or_else(|| panic!("`{bad}` was accepted"))
            .to_string();
        assert!(
            err.contains("train.csv:100") && err.contains(&format!("`{field}`")),
            "{bad}: {err}"
        );
        let ds = prepare(dir.path(), OnBadRow::Skip).unwrap();
        assert_eq!((ds.train.rows, ds.skipped), (2400, 1), "{bad}");
        let labels = ds.train.labels();
        assert!(labels.iter().all(|l| (0.0..=1.0).contains(l)));
        for r in 0..ds.train.rows {
            assert!(f32::from_bits(ds.train.row(r)[2]).is_finite());
        }
    }
    // -1 is libSVM's negative class, not a bad label
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("train.csv"), csv_with(20, 5, "-1,a,1")).unwrap();
    std::fs::write(dir.path().join("valid.csv"), csv_with(10, 0, "")).unwrap();
    item_price_config(dir.path());
    let ds = prepare(dir.path(), OnBadRow::Error).unwrap();
    assert_eq!(ds.train.label(3), 0.0);
}

#[test]
fn a_stray_quote_is_confined_to_its_own_row() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("train.csv"),
        csv_with(2400, 10, "1,\"a,0.5"),
    )
    .unwrap();
    std::fs::write(dir.path().join("valid.csv"), csv_with(10, 0, "")).unwrap();
    item_price_config(dir.path());
    let err = prepare(dir.path(), OnBadRow::Error)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("train.csv:10") && err.contains("quote"),
        "{err}"
    );
    let logs = std::cell::RefCell::new(Vec::new());
    let exp = load_experiment(dir.path(), "m").unwrap();
    let ds = EncodedDataset::prepare(&exp.dataset, OnBadRow::Skip, false, &|m| {
        logs.borrow_mut().push(m.to_string())
    })
    .unwrap();
    assert_eq!((ds.train.rows, ds.skipped), (2400, 1));
    assert!(
        logs.borrow()
            .iter()
            .any(|l| l == "train: 2401 rows read, 2400 encoded, 1 skipped"),
        "{:?}",
        logs.borrow()
    );
    // a legitimate quoted field across lines still reads as one value
    std::fs::write(
        dir.path().join("train.csv"),
        "label,item,price\n1,\"two\nlines\",1\n0,b,2\n",
    )
    .unwrap();
    let ds = prepare(dir.path(), OnBadRow::Error).unwrap();
    assert_eq!(ds.train.rows, 2);
    assert!(ds
        .feature_map
        .vocab_of(0)
        .tokens
        .contains(&"two\nlines".to_string()));
}

#[test]
fn empty_train_or_valid_splits_are_errors() {
    for (train, valid, split) in [
        ("label,item,price\n", "label,item,price\n1,a,1\n", "train"),
        ("label,item,price\n1,a,1\n", "label,item,price\n", "valid"),
        (
            "label,item,price\nx,a,1\n",
            "label,item,price\n1,a,1\n",
            "train",
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("train.csv"), train).unwrap();
        std::fs::write(dir.path().join("valid.csv"), valid).unwrap();
        item_price_config(dir.path());
        let err = prepare(dir.path(), OnBadRow::Skip)
            .err()
            .unwrap_or_else(|| panic!("an empty {split} split was accepted"))
            .to_string();
        assert!(
            err.contains(&format!("the {split} split has no usable rows")),
            "{err}"
        );
    }
}

#[test]
fn the_bad_row_policy_is_part_of_the_cache_key() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("train.csv"), csv_with(50, 7, "1,a,oops")).unwrap();
    std::fs::write(dir.path().join("valid.csv"), csv_with(10, 0, "")).unwrap();
    item_price_config(dir.path());
    assert_eq!(prepare(dir.path(), OnBadRow::Skip).unwrap().skipped, 1);
    // the skipping cache must not serve a run that asked to fail on bad rows
    let err = prepare(dir.path(), OnBadRow::Error)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("train.csv:7"), "{err}");
}

#[test]
fn a_damaged_cache_is_detected_and_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("train.csv"), csv_with(200, 0, "")).unwrap();
    std::fs::write(dir.path().join("valid.csv"), csv_with(10, 0, "")).unwrap();
    item_price_config(dir.path());
    let good = prepare(dir.path(), OnBadRow::Error).unwrap();
    let expected = good.train.data().to_vec();
    drop(good);
    let bin = dir.path().join("processed/d/train.bin");
    // row 5's item id (slot 1, bytes 4..8 of the row) and row 9's price (slot 2)
    for (offset, what) in [(5 * 12 + 7, "item"), (9 * 12 + 11, "price")] {
        let mut bytes = std::fs::read(&bin).unwrap();
        bytes[offset] = if what == "item" { 0xff } else { 0x7f };
        bytes[offset - 1] = 0xff;
        std::fs::write(&bin, bytes).unwrap();
        let logs = std::cell::RefCell::new(Vec::new());
        let exp = load_experiment(dir.path(), "m").unwrap();
        let ds = EncodedDataset::prepare(&exp.dataset, OnBadRow::Error, false, &|m| {
            logs.borrow_mut().push(m.to_string())
        })
        .unwrap();
        assert!(ds.built, "{what}: a damaged cache was reused");
        assert!(
            logs.borrow()
                .iter()
                .any(|l| l.contains("corrupt") && l.contains(what)),
            "{what}: {:?}",
            logs.borrow()
        );
        assert_eq!(ds.train.data(), &expected[..]);
    }
}

#[test]
fn a_cache_being_built_elsewhere_is_waited_for() {
    use recforge_data::cache::DirLock;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("train.csv"), csv_with(50, 0, "")).unwrap();
    std::fs::write(dir.path().join("valid.csv"), csv_with(10, 0, "")).unwrap();
    item_price_config(dir.path());
    let held = DirLock::try_take(&dir.path().join("processed/d"), "the cache").unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let root = dir.path().to_path_buf();
    let other = std::thread::spawn(move || {
        let exp = load_experiment(&root, "m").unwrap();
        EncodedDataset::prepare(&exp.dataset, OnBadRow::Error, false, &|m| {
            let _ = tx.send(m.to_string());
        })
        .map(|ds| ds.train.rows)
    });
    let first = rx
        .recv_timeout(std::time::Duration::from_secs(20))
        .expect("a message");
    assert!(
        first.starts_with("waiting for another recforge process"),
        "{first}"
    );
    drop(held);
    assert_eq!(other.join().unwrap().unwrap(), 50);
}

#[test]
fn avazu_hour_weekday_and_weekend_are_derived_from_the_hour_column() {
    let dir = tempfile::tempdir().unwrap();
    // 2014-10-21 Tue 00h, 2014-10-25 Sat 23h, 2014-10-26 Sun 14h
    let rows = "label,hour,site\n1,14102100,a\n0,14102523,b\n1,14102614,a\n";
    std::fs::write(dir.path().join("train.csv"), rows).unwrap();
    std::fs::write(dir.path().join("valid.csv"), rows).unwrap();
    // listed after `hour`, as in BARS' Avazu config: the derived fields read the raw timestamp,
    // not the converted hour
    write_config(
        dir.path(),
        "csv",
        "csv",
        "    - {name: hour, active: true, dtype: str, type: categorical, preprocess: \
            convert_hour}\n    - {name: weekday, active: true, dtype: str, type: categorical, \
            preprocess: convert_weekday}\n    - {name: weekend, active: true, dtype: str, type: \
            categorical, preprocess: convert_weekend}\n    - {name: site, active: true, dtype: \
            str, type: categorical}\n",
        "",
    );
    let ds = prepare(dir.path(), OnBadRow::Error).unwrap();
    let fm = &ds.feature_map;
    let token = |field: usize, row: usize| {
        let id = ds.train.row(row)[1 + fm.fields[field].offset];
        fm.vocab_of(field).tokens[id as usize - 1].clone()
    };
    let got: Vec<[String; 3]> = (0..3)
        .map(|r| [token(0, r), token(1, r), token(2, r)])
        .collect();
    assert_eq!(
        got,
        [["0", "2", "0"], ["23", "6", "1"], ["14", "0", "1"]].map(|r| r.map(String::from))
    );
}

#[test]
fn a_derived_field_without_its_source_column_or_with_a_bad_timestamp_is_a_named_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("train.csv"), "label,site\n1,a\n").unwrap();
    std::fs::write(dir.path().join("valid.csv"), "label,site\n1,a\n").unwrap();
    let cols = "    - {name: weekday, active: true, dtype: str, type: categorical, preprocess: \
        convert_weekday}\n    - {name: site, active: true, dtype: str, type: categorical}\n";
    write_config(dir.path(), "csv", "csv", cols, "");
    let err = prepare(dir.path(), OnBadRow::Error)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("train.csv") && err.contains("`weekday`") && err.contains("`hour`"),
        "{err}"
    );
    std::fs::write(
        dir.path().join("train.csv"),
        "label,hour,site\n1,14102100,a\n0,1410,b\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("valid.csv"),
        "label,hour,site\n1,14102100,a\n",
    )
    .unwrap();
    let err = prepare(dir.path(), OnBadRow::Error)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("train.csv:3") && err.contains("weekday") && err.contains("not a timestamp"),
        "{err}"
    );
    // an unknown preprocess lists the supported ones
    write_config(
        dir.path(),
        "csv",
        "csv",
        "    - {name: site, active: true, dtype: str, type: categorical, preprocess: \
            convert_month}\n",
        "",
    );
    let err = prepare(dir.path(), OnBadRow::Error)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("convert_month") && err.contains("convert_weekend"),
        "{err}"
    );
}

#[test]
fn a_spark_output_directory_of_zstd_lz4_and_snappy_parts_reads_as_one_file() {
    use parquet::basic::{Compression, ZstdLevel};
    let dir = tempfile::tempdir().unwrap();
    let train = dir.path().join("train.parquet");
    std::fs::create_dir(&train).unwrap();
    // Spark's layout: part files in name order, a _SUCCESS marker and .crc checksums
    write_parquet(
        &train.join("part-00000-1f.zstd.parquet"),
        &[1.0, 0.0],
        &["a", "b"],
        Compression::ZSTD(ZstdLevel::default()),
    );
    write_parquet(
        &train.join("part-00001-1f.lz4.parquet"),
        &[1.0],
        &["a"],
        Compression::LZ4_RAW,
    );
    write_parquet(
        &train.join("part-00002-1f.snappy.parquet"),
        &[0.0, 1.0],
        &["c", "a"],
        Compression::SNAPPY,
    );
    std::fs::write(train.join("_SUCCESS"), "").unwrap();
    std::fs::write(train.join(".part-00000-1f.zstd.parquet.crc"), "crc").unwrap();
    write_parquet(
        &dir.path().join("valid.parquet"),
        &[0.0],
        &["b"],
        Compression::LZ4,
    );
    write_config(
        dir.path(),
        "parquet",
        "parquet",
        "    - {name: item, active: true, dtype: str, type: categorical}\n",
        "",
    );
    let ds = prepare(dir.path(), OnBadRow::Error).unwrap();
    assert_eq!(ds.train.labels(), vec![1.0, 0.0, 1.0, 0.0, 1.0]);
    assert_eq!(ds.feature_map.vocab_of(0).tokens, ["a", "b", "c"]);
    assert_eq!(&ds.valid.as_ref().unwrap().row(0)[1..], &[2]);
    let col = recforge_data::reader::read_column(&train, "item").unwrap();
    assert_eq!(col, ["a", "b", "a", "c", "a"]);
    // a new part changes the data: the cache is rebuilt
    write_parquet(
        &train.join("part-00003-1f.snappy.parquet"),
        &[1.0],
        &["d"],
        Compression::SNAPPY,
    );
    let again = prepare(dir.path(), OnBadRow::Error).unwrap();
    assert!(again.built);
    assert_eq!(again.train.labels().len(), 6);
    // a directory without part files is a named error
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let err = recforge_data::reader::read_column(&empty, "item")
        .unwrap_err()
        .to_string();
    assert!(err.contains("no part files"), "{err}");
}
