use crate::platform::procfile::Procfile;
pub struct ReleaseInfo {
    pub default_process_types: Vec<(String, String)>,
    pub config_vars: Vec<(String, String)>,
}
#[derive(Debug, thiserror::Error)]
#[error("release: {0}")]
pub struct ReleaseError(String);
pub fn parse_release(yaml: &str) -> Result<ReleaseInfo, ReleaseError> {
    let v: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(yaml).map_err(|e| ReleaseError(e.to_string()))?;
    let mut d = Vec::new();
    if let Some(m) = v.get("default_process_types").and_then(|m| m.as_mapping()) {
        for (k, val) in m {
            d.push((
                k.as_str().unwrap_or("").to_string(),
                val.as_str().unwrap_or("").to_string(),
            ));
        }
    }
    Ok(ReleaseInfo {
        default_process_types: d,
        config_vars: vec![],
    })
}
pub fn merge_process_types(
    procfile: Option<&Procfile>,
    defaults: &[(String, String)],
) -> Vec<(String, String, &'static str)> {
    let mut out: Vec<(String, String, &'static str)> = procfile
        .map(|p| {
            p.entries
                .iter()
                .map(|(k, v)| (k.clone(), v.clone(), "Procfile"))
                .collect()
        })
        .unwrap_or_default();
    for (k, v) in defaults {
        if !out.iter().any(|(n, _, _)| n == k) {
            out.push((k.clone(), v.clone(), "buildpack"));
        }
    }
    out
}
