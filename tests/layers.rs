//! The layers of ../shared/DESIGN.md, held: each module of the library may use only the
//! modules below it. Reads every `crate::MODULE` mention in src/ and fails on an edge the
//! table does not allow, naming the file and line. No root needed.
use std::collections::BTreeMap;
use std::path::Path;

/// module -> the modules it may use. A module not listed here fails the test: add it, with
/// its place in the layering, when you add the module.
const ALLOWED: &[(&str, &[&str])] = &[
    ("sys", &[]),
    ("config", &[]),
    ("applog", &["sys"]),
    ("runtime", &["sys"]),
    ("network", &["sys"]),
    ("stacks", &["config", "sys"]),
    (
        "sandbox",
        &["runtime", "network", "stacks", "config", "sys"],
    ),
    ("build", &["sandbox", "stacks", "config", "sys"]),
    ("platform", &["build", "applog", "config", "sys"]),
    (
        "supervisor",
        // api only for the route table's types (`api::routes::Backend`).
        &[
            "platform", "sandbox", "stacks", "applog", "config", "sys", "api",
        ],
    ),
    (
        "api",
        &["platform", "build", "supervisor", "applog", "config", "sys"],
    ),
    ("router", &["api", "applog", "config", "sys"]),
];

/// The top-level module a file under src/ belongs to (None for lib.rs and the binaries,
/// which are the edges that assemble the layers).
fn module_of(rel: &Path) -> Option<String> {
    let first = rel.components().next()?.as_os_str().to_str()?;
    if first == "lib.rs" || first == "main.rs" || first == "bin" || first == "cli" {
        return None;
    }
    Some(first.trim_end_matches(".rs").to_string())
}

/// Every `crate::NAME` in `text`, with its line number.
fn uses(text: &str) -> Vec<(usize, String)> {
    let mut found = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(i) = rest.find("crate::") {
            let after = &rest[i + "crate::".len()..];
            let name: String = after
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                found.push((n + 1, name));
            }
            rest = after;
        }
        // `use crate::{a, b}` groups.
        if let Some(i) = code.find("crate::{") {
            let group = &code[i + "crate::{".len()..];
            for part in group.split(['}', ',']) {
                let name: String = part
                    .trim()
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() {
                    found.push((n + 1, name));
                }
            }
        }
    }
    found
}

fn check_tree(src: &Path) -> Vec<String> {
    let table: BTreeMap<&str, &[&str]> = ALLOWED.iter().copied().collect();
    let mut problems = Vec::new();
    for entry in walkdir::WalkDir::new(src) {
        let entry = entry.unwrap();
        let path = entry.path();
        if path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let rel = path.strip_prefix(src).unwrap();
        let Some(module) = module_of(rel) else {
            continue;
        };
        let Some(allowed) = table.get(module.as_str()) else {
            problems.push(format!(
                "{}: module `{module}` has no place in the layer table of tests/layers.rs: add it",
                rel.display()
            ));
            continue;
        };
        let text = std::fs::read_to_string(path).unwrap();
        for (line, used) in uses(&text) {
            if used == module || !table.contains_key(used.as_str()) {
                continue;
            }
            if !allowed.contains(&used.as_str()) {
                problems.push(format!(
                    "src/{}:{line}: `{module}` uses `{used}`, which is not below it (`{module}` may use: {})",
                    rel.display(),
                    if allowed.is_empty() { "nothing".to_string() } else { allowed.join(", ") }
                ));
            }
        }
    }
    problems
}

#[test]
fn every_module_uses_only_the_layers_below_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let problems = check_tree(&src);
    assert!(
        problems.is_empty(),
        "layering broken ({} edges):\n{}",
        problems.len(),
        problems.join("\n")
    );
}

#[test]
fn a_wrong_edge_is_caught() {
    let d = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(d.path().join("runtime")).unwrap();
    std::fs::write(
        d.path().join("runtime/bad.rs"),
        "use crate::sys::procfs;\nuse crate::{build, sys};\nfn f() { crate::platform::x(); }\n",
    )
    .unwrap();
    let problems = check_tree(d.path());
    assert_eq!(problems.len(), 2, "{problems:#?}");
    assert!(problems[0].contains("`runtime` uses `build`"));
    assert!(problems[1].contains("src/runtime/bad.rs:3"));
}
