//! The `slipway` command line.

mod build;
mod router;
mod slug;
mod stacks;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use slipway::build::stack::DEFAULT_DATA_DIR;

#[derive(Debug, Parser)]
#[command(
    name = "slipway",
    version,
    about = "A self-hosted application platform for bare Linux hosts"
)]
pub struct Cli {
    /// Where slipway keeps stacks, slugs and its database.
    #[arg(long, global = true, env = "SLIPWAY_DATA_DIR", default_value = DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Build, list and prune the build and run stacks.
    #[command(subcommand)]
    Stacks(stacks::StacksCommand),
    /// Build a source directory into a slug with buildpacks.
    Build(build::BuildArgs),
    /// Manage per-app build caches.
    #[command(subcommand)]
    Cache(build::CacheCommand),
    /// Run slugs.
    #[command(subcommand)]
    Slug(SlugCommand),
    /// Run the HTTP router (the data plane) in the foreground.
    Router(router::RouterArgs),
}

#[derive(Debug, Subcommand)]
pub enum SlugCommand {
    /// Run one process of a slug in a container, in the foreground (Ctrl-C stops it).
    Run(slug::SlugRunArgs),
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Stacks(command) => stacks::run(&cli.data_dir, command),
        Command::Build(args) => build::build(&cli.data_dir, args),
        Command::Cache(command) => build::cache(&cli.data_dir, command),
        Command::Slug(SlugCommand::Run(args)) => slug::run(&cli.data_dir, args),
        Command::Router(args) => router::run(&cli.data_dir, args),
    }
}
