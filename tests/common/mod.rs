//! Shared test helpers: the real embedded model, loaded once per test binary.

#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::OnceLock;

use hindsight::model::{self, ComputeMode, LoadedModel};

/// Path of a file under `tests/fixtures/`.
pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// The embedded SmolLM2 model (f32). Tests need it provisioned: `scripts/fetch-model.sh`.
pub fn model() -> &'static LoadedModel {
    static MODEL: OnceLock<LoadedModel> = OnceLock::new();
    MODEL.get_or_init(|| {
        let path = model::resolve_model_path(None)
            .unwrap_or_else(|e| panic!("{e}\nrun scripts/fetch-model.sh before the tests"));
        model::load(&path, ComputeMode::F32, &candle_core::Device::Cpu)
            .unwrap_or_else(|e| panic!("loading {}: {e}", path.display()))
    })
}

/// Reads a JSONL fixture into JSON values.
pub fn read_jsonl(name: &str) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(fixture(name)).expect("fixture readable");
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("fixture line is JSON"))
        .collect()
}
