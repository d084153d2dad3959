//! The checkpoint loader: any bytes as `model.safetensors` load as a verified model or fail
//! with an error, never a panic (and nothing is built from metadata that fails its checksum).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = recforge_fuzz::file_with("model.safetensors", data);
    let _ = recforge_train::score::load_model(&path);
});
