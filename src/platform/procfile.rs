pub struct Procfile {
    pub entries: Vec<(String, String)>,
}
#[derive(Debug, thiserror::Error)]
pub enum ProcfileError {
    #[error("Procfile line {0}: {1}")]
    Line(usize, String),
}
impl Procfile {
    pub fn parse(text: &str) -> Result<Procfile, ProcfileError> {
        let mut entries = Vec::new();
        for (i, l) in text.lines().enumerate() {
            let l = l.trim();
            if l.is_empty() || l.starts_with('#') {
                continue;
            }
            let (k, v) = l
                .split_once(':')
                .ok_or(ProcfileError::Line(i + 1, l.to_string()))?;
            entries.push((k.trim().to_string(), v.trim().to_string()));
        }
        Ok(Procfile { entries })
    }
    pub fn get(&self, kind: &str) -> Option<&str> {
        self.entries
            .iter()
            .find(|(k, _)| k == kind)
            .map(|(_, v)| v.as_str())
    }
}
