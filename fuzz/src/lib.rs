//! What the fuzz targets share: a scratch directory (one per process, files rewritten per input)
//! and a small dataset whose feature map has every field kind.

use recforge_data::config::load_experiment;
use recforge_data::features::OnBadRow;
use recforge_data::{EncodedDataset, FeatureMap};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// A directory that lives as long as the fuzzing process (in memory where `/dev/shm` exists).
pub fn scratch() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let shm = Path::new("/dev/shm");
        if shm.is_dir() {
            tempfile::tempdir_in(shm).expect("scratch dir")
        } else {
            tempfile::tempdir().expect("scratch dir")
        }
    })
    .path()
}

/// Writes `bytes` to `name` in the scratch directory.
pub fn file_with(name: &str, bytes: &[u8]) -> PathBuf {
    let p = scratch().join(name);
    std::fs::write(&p, bytes).expect("write scratch file");
    p
}

pub const DATASET_YAML: &str = "d:\n  data_root: PROCESSED\n  data_format: csv\n  \
    train_data: TRAIN\n  valid_data: TRAIN\n  feature_cols:\n    \
    - {name: item, active: true, dtype: str, type: categorical}\n    \
    - {name: price, active: true, dtype: float, type: numeric}\n    \
    - {name: tags, active: true, dtype: str, type: sequence, splitter: ^, max_len: 3}\n  \
    label_col: {name: label, dtype: float}\n";

/// The dataset config with its paths filled in.
pub fn dataset_yaml(dir: &Path) -> String {
    DATASET_YAML
        .replace("PROCESSED", &dir.join("processed").display().to_string())
        .replace("TRAIN", &dir.join("train.csv").display().to_string())
}

/// A fitted feature map with a categorical, a numeric and a sequence field.
pub fn feature_map() -> &'static FeatureMap {
    static MAP: OnceLock<FeatureMap> = OnceLock::new();
    MAP.get_or_init(|| {
        let dir = scratch().join("fmap");
        std::fs::create_dir_all(&dir).expect("dir");
        std::fs::write(
            dir.join("train.csv"),
            "label,item,price,tags\n1,a,0.5,x^y\n0,b,2,y\n1,a,1,\n",
        )
        .expect("train");
        std::fs::write(dir.join("dataset_config.yaml"), dataset_yaml(&dir)).expect("config");
        std::fs::write(
            dir.join("model_config.yaml"),
            "m: {model: LR, dataset_id: d}\n",
        )
        .expect("config");
        let exp = load_experiment(&dir, "m").expect("fixture config");
        EncodedDataset::prepare(&exp.dataset, OnBadRow::Error, false, &|_| {})
            .expect("fixture dataset")
            .feature_map
    })
}
