//! Stack recipes: `rootfs/<name>.stack` files parsed, their `extends`
//! chains resolved, and the setup script every stack runs.

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{Result, StackError};
use crate::sys::io::at;

const EMBEDDED_RECIPES: &[(&str, &str)] = &[
    ("run", include_str!("../../rootfs/run.stack")),
    ("build", include_str!("../../rootfs/build.stack")),
    ("run-13", include_str!("../../rootfs/run-13.stack")),
    ("build-13", include_str!("../../rootfs/build-13.stack")),
    ("busybox", include_str!("../../rootfs/busybox.stack")),
];
const EMBEDDED_SETUP: &str = include_str!("../../rootfs/setup.sh");

/// How a stack's tree is made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum StackKind {
    /// Debian packages installed by mmdebstrap.
    Debian { suite: String, variant: String },
    /// The host's static busybox with applet links.
    Busybox,
}

/// A parsed recipe, with the packages of the recipes it extends folded in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipe {
    pub name: String,
    pub kind: StackKind,
    /// Debian packages, in recipe order, without duplicates.
    pub packages: Vec<String>,
    /// Names of the recipes this one extends, nearest first.
    pub extends: Vec<String>,
}

/// One recipe file before the chain of `extends` is resolved.
#[derive(Debug, Default)]
struct RawRecipe {
    kind: Option<String>,
    suite: Option<String>,
    variant: Option<String>,
    extends: Option<String>,
    packages: Vec<String>,
}

/// Parses `key: value` lines; `#` starts a comment; an indented line
/// continues the previous key. Only `packages` may hold several words.
fn parse_raw(name: &str, text: &str) -> Result<RawRecipe> {
    let mut raw = RawRecipe::default();
    let mut current: Option<String> = None;
    let err = |line: usize, problem: String| StackError::Recipe {
        name: name.to_string(),
        line,
        problem,
    };
    for (index, full_line) in text.lines().enumerate() {
        let line_no = index + 1;
        let line = full_line.split('#').next().unwrap_or("");
        if line.trim().is_empty() {
            continue;
        }
        let (key, value) = if line.starts_with(char::is_whitespace) {
            match &current {
                Some(key) => (key.clone(), line.trim()),
                None => return Err(err(line_no, "indented line with no key before it".into())),
            }
        } else {
            let Some((key, value)) = line.split_once(':') else {
                return Err(err(
                    line_no,
                    format!("expected `key: value`, found {:?}", line.trim()),
                ));
            };
            (key.trim().to_string(), value.trim())
        };
        let words: Vec<&str> = value.split_whitespace().collect();
        let single = |slot: &mut Option<String>| -> Result<()> {
            match words.as_slice() {
                [] => Ok(()),
                [word] if slot.is_none() => {
                    *slot = Some(word.to_string());
                    Ok(())
                }
                [_] => Err(err(line_no, format!("`{key}` given twice"))),
                _ => Err(err(
                    line_no,
                    format!("`{key}` takes one word, found {value:?}"),
                )),
            }
        };
        match key.as_str() {
            "kind" => single(&mut raw.kind)?,
            "suite" => single(&mut raw.suite)?,
            "variant" => single(&mut raw.variant)?,
            "extends" => single(&mut raw.extends)?,
            "packages" => {
                for word in words {
                    if !is_package_name(word) {
                        return Err(err(
                            line_no,
                            format!("{word:?} is not a Debian package name"),
                        ));
                    }
                    raw.packages.push(word.to_string());
                }
            }
            other => {
                return Err(err(
                    line_no,
                    format!(
                        "unknown key `{other}` (known: kind, suite, variant, extends, packages)"
                    ),
                ))
            }
        }
        current = Some(key);
    }
    Ok(raw)
}

/// Debian policy: lower case letters, digits, `+ - .`, at least two chars,
/// starting with a letter or digit. Anything else could smuggle options into
/// mmdebstrap's `--include`.
fn is_package_name(word: &str) -> bool {
    word.len() >= 2
        && word.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && word
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "+-.".contains(c))
}

pub(super) fn is_stack_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 32
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
}

/// The recipes a store builds from, and the setup script every stack runs.
#[derive(Debug, Clone)]
pub struct RecipeSet {
    texts: BTreeMap<String, String>,
    pub(super) setup_script: String,
}

impl RecipeSet {
    /// The recipes compiled into this binary (the repository's `rootfs/`).
    pub fn embedded() -> Self {
        RecipeSet {
            texts: EMBEDDED_RECIPES
                .iter()
                .map(|(name, text)| (name.to_string(), text.to_string()))
                .collect(),
            setup_script: EMBEDDED_SETUP.to_string(),
        }
    }

    /// Recipes read from `dir/*.stack`, with `dir/setup.sh` if present (else
    /// the embedded one).
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let mut texts = BTreeMap::new();
        for entry in fs::read_dir(dir).map_err(at("reading recipe directory", dir))? {
            let path = entry.map_err(at("reading recipe directory", dir))?.path();
            let (Some(stem), Some("stack")) = (
                path.file_stem().and_then(|s| s.to_str()),
                path.extension().and_then(|s| s.to_str()),
            ) else {
                continue;
            };
            if !is_stack_name(stem) {
                return Err(StackError::RecipeShape {
                    name: stem.to_string(),
                    problem:
                        "stack names are 1-32 lower case letters and digits, starting with a letter"
                            .into(),
                });
            }
            let text = fs::read_to_string(&path).map_err(at("reading recipe", &path))?;
            texts.insert(stem.to_string(), text);
        }
        let setup_path = dir.join("setup.sh");
        let setup_script = if setup_path.exists() {
            fs::read_to_string(&setup_path).map_err(at("reading setup script", &setup_path))?
        } else {
            EMBEDDED_SETUP.to_string()
        };
        Ok(RecipeSet {
            texts,
            setup_script,
        })
    }

    /// Names of all recipes, sorted.
    pub fn names(&self) -> Vec<String> {
        self.texts.keys().cloned().collect()
    }

    pub(super) fn text(&self, name: &str) -> Result<&str> {
        self.texts
            .get(name)
            .map(String::as_str)
            .ok_or_else(|| StackError::UnknownStack {
                name: name.to_string(),
                known: self.names().join(", "),
            })
    }

    /// The recipe `name` with its `extends` chain resolved.
    pub fn recipe(&self, name: &str) -> Result<Recipe> {
        let mut chain: Vec<(String, RawRecipe)> = Vec::new();
        let mut next = Some(name.to_string());
        while let Some(current) = next {
            if chain.iter().any(|(seen, _)| *seen == current) {
                return Err(StackError::RecipeShape {
                    name: name.to_string(),
                    problem: format!("`extends` loops back to {current:?}"),
                });
            }
            let raw = parse_raw(&current, self.text(&current)?)?;
            next = raw.extends.clone();
            chain.push((current, raw));
        }
        let (_, top) = &chain[0];
        let shape = |problem: String| StackError::RecipeShape {
            name: name.to_string(),
            problem,
        };
        let kind = match top.kind.as_deref() {
            Some("debian") => StackKind::Debian {
                suite: top
                    .suite
                    .clone()
                    .ok_or_else(|| shape("a debian stack needs `suite`".into()))?,
                variant: top.variant.clone().unwrap_or_else(|| "minbase".into()),
            },
            Some("busybox") => {
                if !top.packages.is_empty() || top.extends.is_some() {
                    return Err(shape(
                        "a busybox stack takes no packages and extends nothing".into(),
                    ));
                }
                StackKind::Busybox
            }
            Some(other) => {
                return Err(shape(format!(
                    "unknown kind {other:?} (known: debian, busybox)"
                )))
            }
            None => return Err(shape("missing `kind`".into())),
        };
        for (parent_name, parent) in &chain[1..] {
            let same_base = parent.kind == top.kind
                && parent.suite == top.suite
                && parent.variant.as_deref().unwrap_or("minbase")
                    == top.variant.as_deref().unwrap_or("minbase");
            if !same_base {
                return Err(shape(format!(
                    "extends {parent_name:?}, whose kind, suite or variant differ"
                )));
            }
        }
        // Packages of the most distant ancestor first, so the list reads
        // like the stack is layered.
        let mut seen = HashSet::new();
        let packages = chain
            .iter()
            .rev()
            .flat_map(|(_, raw)| raw.packages.iter())
            .filter(|p| seen.insert(p.as_str()))
            .cloned()
            .collect();
        Ok(Recipe {
            name: name.to_string(),
            kind,
            packages,
            extends: chain[1..].iter().map(|(n, _)| n.clone()).collect(),
        })
    }
}

/// A recipe set from in-memory texts with the embedded setup script (tests).
#[cfg(test)]
pub(super) fn recipe_set(recipes: &[(&str, &str)]) -> RecipeSet {
    RecipeSet {
        texts: recipes
            .iter()
            .map(|(n, t)| (n.to_string(), t.to_string()))
            .collect(),
        setup_script: EMBEDDED_SETUP.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_recipes_parse() {
        let recipes = RecipeSet::embedded();
        let build = recipes.recipe("build").unwrap();
        assert_eq!(build.extends, vec!["run".to_string()]);
        assert!(build.packages.contains(&"python3".to_string()));
        assert!(build.packages.contains(&"golang".to_string()));
        let run = recipes.recipe("run").unwrap();
        assert!(!run.packages.contains(&"golang".to_string()));
        assert_eq!(recipes.recipe("busybox").unwrap().kind, StackKind::Busybox);
    }

    #[test]
    fn continuation_lines_and_comments() {
        let r = recipe_set(&[(
            "a",
            "kind: debian # the base\nsuite: bookworm\npackages: bash\n  curl  git\n# all\n\n",
        )]);
        let recipe = r.recipe("a").unwrap();
        assert_eq!(recipe.packages, vec!["bash", "curl", "git"]);
        assert_eq!(
            recipe.kind,
            StackKind::Debian {
                suite: "bookworm".into(),
                variant: "minbase".into()
            }
        );
    }

    #[test]
    fn bad_recipes_are_reported_with_their_line() {
        let cases = [
            ("kind: debian\nsuite: bookworm\npackages: --foo\n", "line 3"),
            ("kind: debian\nsuite bookworm\n", "line 2"),
            ("kind: debian\nsuite: a b\n", "line 2"),
            ("  bash\n", "line 1"),
            ("kind: debian\nmirror: x\n", "unknown key"),
            ("kind: debian\n", "needs `suite`"),
            ("kind: rpm\n", "unknown kind"),
            ("suite: bookworm\n", "missing `kind`"),
            ("kind: busybox\npackages: bash\n", "takes no packages"),
        ];
        for (text, expected) in cases {
            let err = recipe_set(&[("a", text)])
                .recipe("a")
                .unwrap_err()
                .to_string();
            assert!(err.contains(expected), "{text:?}: {err}");
        }
    }

    #[test]
    fn extends_loops_and_mismatches_are_refused() {
        let loops = recipe_set(&[
            ("a", "kind: debian\nsuite: s\nextends: b\n"),
            ("b", "kind: debian\nsuite: s\nextends: a\n"),
        ]);
        assert!(loops.recipe("a").unwrap_err().to_string().contains("loops"));
        let mismatch = recipe_set(&[
            ("a", "kind: debian\nsuite: s\nextends: b\n"),
            ("b", "kind: debian\nsuite: t\n"),
        ]);
        assert!(mismatch
            .recipe("a")
            .unwrap_err()
            .to_string()
            .contains("differ"));
        let unknown = recipe_set(&[("a", "kind: debian\nsuite: s\nextends: zz\n")]);
        assert!(matches!(
            unknown.recipe("a"),
            Err(StackError::UnknownStack { .. })
        ));
    }

    #[test]
    fn extended_packages_come_first_without_duplicates() {
        let r = recipe_set(&[
            (
                "a",
                "kind: debian\nsuite: s\nextends: b\npackages: gcc bash\n",
            ),
            ("b", "kind: debian\nsuite: s\npackages: bash curl\n"),
        ]);
        assert_eq!(r.recipe("a").unwrap().packages, vec!["bash", "curl", "gcc"]);
    }
}
