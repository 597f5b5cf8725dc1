//! `spec`: a config.json with slipway's secure defaults.
use std::path::Path;

use slipway::runtime::{spec, RuntimeError};

use crate::R;

pub fn spec(bundle: &Path, rootless: bool) -> R<u8> {
    let path = bundle.join("config.json");
    if path.exists() {
        return Err(RuntimeError::Invalid(format!(
            "{} exists already: remove it first",
            path.display()
        )));
    }
    let text =
        serde_json::to_string_pretty(&spec::default_spec(rootless)).expect("spec serializes");
    std::fs::write(&path, text + "\n")
        .map_err(|e| RuntimeError::Invalid(format!("write {}: {e}", path.display())))?;
    Ok(0)
}
