//! The YAML config loader and the model-config checks: the first byte picks which file the
//! input replaces (dataset_config.yaml or model_config.yaml); loading and checking must give
//! a config or an error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let dir = recforge_fuzz::scratch().join("config");
    std::fs::create_dir_all(&dir).expect("dir");
    let (dataset, model): (&[u8], &[u8]) = if selector % 2 == 0 {
        (
            body,
            b"E: {model: DeepFM, dataset_id: d, hidden_units: [4]}\n",
        )
    } else {
        (recforge_fuzz::dataset_yaml(&dir).into_bytes().leak(), body)
    };
    std::fs::write(dir.join("dataset_config.yaml"), dataset).expect("write");
    std::fs::write(dir.join("model_config.yaml"), model).expect("write");
    if let Ok(exp) = recforge_data::config::load_experiment(&dir, "E") {
        let _ = recforge_train::check_model_config(&exp.model);
    }
});
