//! `slipway stacks ...`: build, list and prune stacks.

use slipway::config::Config;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use clap::Subcommand;

use slipway::stacks::{RecipeSet, StackStore};

#[derive(Debug, Subcommand)]
pub enum StacksCommand {
    /// Build stacks whose recipe changed (all when none is named).
    Build {
        /// Stack names (run, build, busybox, ...).
        names: Vec<String>,
        /// Read recipes from this directory instead of the built-in ones.
        #[arg(long, env = "SLIPWAY_RECIPES_DIR")]
        recipes: Option<PathBuf>,
        /// Print only the result lines, not the build output.
        #[arg(long, short)]
        quiet: bool,
    },
    /// List stored stacks: current ones and stale ones left by older recipes.
    List {
        #[arg(long, env = "SLIPWAY_RECIPES_DIR")]
        recipes: Option<PathBuf>,
    },
    /// Print the root filesystem path of a stack, building it if needed
    /// (for scripts; build output goes to stderr).
    Path {
        name: String,
        #[arg(long, env = "SLIPWAY_RECIPES_DIR")]
        recipes: Option<PathBuf>,
    },
    /// Remove stale stacks (of the named stacks, or of all).
    Prune {
        names: Vec<String>,
        #[arg(long, env = "SLIPWAY_RECIPES_DIR")]
        recipes: Option<PathBuf>,
    },
}

fn store(data_dir: &Path, recipes: Option<&Path>) -> anyhow::Result<StackStore> {
    let store = StackStore::new(data_dir);
    Ok(match recipes {
        Some(dir) => store.with_recipes(
            RecipeSet::from_dir(dir)
                .with_context(|| format!("loading recipes from {}", dir.display()))?,
        ),
        None => store,
    })
}

pub fn run(config: &Config, command: StacksCommand) -> anyhow::Result<()> {
    let data_dir = config.stacks_dir.as_path();
    match command {
        StacksCommand::Build {
            names,
            recipes,
            quiet,
        } => build(&store(data_dir, recipes.as_deref())?, names, quiet),
        StacksCommand::List { recipes } => list(&store(data_dir, recipes.as_deref())?),
        StacksCommand::Path { name, recipes } => {
            let stack = store(data_dir, recipes.as_deref())?
                .ensure_with_progress(&name, &mut |line| eprintln!("       {line}"))
                .with_context(|| format!("stack {name}"))?;
            println!("{}", stack.path.display());
            Ok(())
        }
        StacksCommand::Prune { names, recipes } => {
            prune(&store(data_dir, recipes.as_deref())?, names)
        }
    }
}

fn build(store: &StackStore, names: Vec<String>, quiet: bool) -> anyhow::Result<()> {
    let names = if names.is_empty() {
        store.recipes().names()
    } else {
        names
    };
    for name in names {
        let started = Instant::now();
        let stored = store.find(&name).with_context(|| format!("stack {name}"))?;
        let built = stored.is_none();
        let stack = match stored {
            Some(stack) => stack,
            None => {
                eprintln!("-----> building stack {name}");
                store
                    .ensure_with_progress(&name, &mut |line| {
                        if !quiet {
                            eprintln!("       {line}");
                        }
                    })
                    .with_context(|| format!("stack {name}"))?
            }
        };
        let meta = &stack.metadata;
        let how = if built {
            format!("built in {:.1}s", meta.build_seconds)
        } else {
            format!("up to date ({} ms)", started.elapsed().as_millis())
        };
        let versions: Vec<String> = meta
            .versions
            .iter()
            .map(|(p, v)| format!("{p} {v}"))
            .collect();
        println!(
            "{name}\t{}\t{}\t{how}\t{}",
            stack.id,
            human_size(meta.size_bytes),
            versions.join(", ")
        );
        println!("\t{}", stack.path.display());
        std::io::stdout().flush().ok();
    }
    Ok(())
}

fn list(store: &StackStore) -> anyhow::Result<()> {
    let stacks = store.list()?;
    if stacks.is_empty() {
        println!(
            "no stacks in {}; run `slipway stacks build`",
            store.stacks_dir().display()
        );
        return Ok(());
    }
    println!(
        "{:<10} {:<13} {:>9} {:<20} STATE",
        "NAME", "ID", "SIZE", "CREATED"
    );
    for stored in stacks {
        let meta = &stored.stack.metadata;
        println!(
            "{:<10} {:<13} {:>9} {:<20} {}",
            stored.stack.name,
            stored.stack.id,
            human_size(meta.size_bytes),
            utc_time(meta.created),
            if stored.current { "current" } else { "stale" }
        );
    }
    Ok(())
}

fn prune(store: &StackStore, names: Vec<String>) -> anyhow::Result<()> {
    let removed = if names.is_empty() {
        store.prune(None)?
    } else {
        let mut removed = Vec::new();
        for name in &names {
            removed.extend(store.prune(Some(name))?);
        }
        removed
    };
    for stack in &removed {
        println!(
            "removed {}-{} ({})",
            stack.name,
            stack.id,
            human_size(stack.metadata.size_bytes)
        );
    }
    if removed.is_empty() {
        println!("no stale stacks");
    }
    Ok(())
}

fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// `YYYY-MM-DD HH:MM:SS` in UTC, from seconds since the epoch.
fn utc_time(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_time_formats_known_instants() {
        assert_eq!(utc_time(0), "1970-01-01 00:00:00");
        assert_eq!(utc_time(951_782_400), "2000-02-29 00:00:00");
        assert_eq!(utc_time(1_798_761_599), "2026-12-31 23:59:59");
    }

    #[test]
    fn human_size_picks_a_unit() {
        assert_eq!(human_size(512), "512 B");
        assert_eq!(human_size(2048), "2.0 KiB");
        assert_eq!(human_size(3 * 1024 * 1024 * 1024), "3.0 GiB");
    }
}
