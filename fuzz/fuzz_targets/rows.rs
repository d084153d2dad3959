//! The CSV, TSV and libSVM row readers and the encoder behind them: the first byte picks the
//! format, the rest is the file. Fitting vocabularies and encoding every row must never panic,
//! whatever the bytes, under either bad-row policy.
#![no_main]

use libfuzzer_sys::fuzz_target;
use recforge_data::features::OnBadRow;
use recforge_data::{reader, DatasetConfig, FeatureMap};

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let ext = ["csv", "tsv", "libsvm"][selector as usize % 3];
    let on_bad = if selector & 0x80 != 0 {
        OnBadRow::Skip
    } else {
        OnBadRow::Error
    };
    let path = recforge_fuzz::file_with(&format!("rows.{ext}"), body);
    let fields: Vec<_> = recforge_fuzz::feature_map()
        .fields
        .iter()
        .map(|f| f.spec.clone())
        .collect();
    let Ok(cfg) = DatasetConfig::for_file(&path, fields, "label") else {
        return;
    };
    let Ok(mut r) = reader::open(&path, &cfg) else {
        return;
    };
    let Ok((fmap, _)) = FeatureMap::fit(&cfg, r.as_mut(), on_bad) else {
        return;
    };
    let Ok(mut r) = reader::open(&path, &cfg) else {
        return;
    };
    let Ok(idx) = recforge_data::features::field_indices(&cfg.fields, r.as_ref()) else {
        return;
    };
    let mut rec = Vec::new();
    let mut out = vec![0u32; fmap.width];
    let mut skipped = 0;
    while let Ok(Some(_)) = reader::next_record(r.as_mut(), &mut rec, on_bad, &mut skipped) {
        let values: Vec<&str> = idx.iter().map(|&i| rec[i].as_str()).collect();
        if fmap.encode_fields(&values, &mut out).is_ok() {
            for (f, info) in fmap.fields.iter().enumerate() {
                let slots = &out[info.offset..info.offset + info.width];
                match info.spec.kind {
                    recforge_data::FieldKind::Numeric => {
                        assert!(f32::from_bits(slots[0]).is_finite(), "non-finite numeric")
                    }
                    _ => assert!(slots
                        .iter()
                        .all(|&v| (v as usize) < fmap.vocab_of(f).size())),
                }
            }
        }
    }
});
