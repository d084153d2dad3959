//! The HTTP request bodies: `/v1/predict`, `/v1/rank` and `/v1/admin/reload` decode any bytes
//! to a request or a 4xx error; decoded instances encode through a feature map with every
//! field kind, finite numbers only.
#![no_main]

use libfuzzer_sys::fuzz_target;
use recforge_serve::engine::encode_instance;
use recforge_serve::http::{parse_json, PredictRequest, RankRequest, ReloadRequest};

fuzz_target!(|data: &[u8]| {
    let fmap = recforge_fuzz::feature_map();
    let mut out = vec![0u32; fmap.width];
    if let Ok(req) = parse_json::<PredictRequest>(data) {
        for inst in &req.instances {
            if encode_instance(fmap, inst, &mut out).is_ok() {
                let price = &fmap.fields[1];
                assert!(f32::from_bits(out[price.offset]).is_finite());
            }
        }
    }
    if let Ok(req) = parse_json::<RankRequest>(data) {
        for inst in std::iter::once(&req.context).chain(&req.candidates) {
            let _ = encode_instance(fmap, inst, &mut out);
        }
    }
    if let Err(e) = parse_json::<ReloadRequest>(data) {
        assert!(e.status().is_client_error(), "{e}");
    }
});
