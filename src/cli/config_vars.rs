//! `slipway env`: an app's config vars; setting or unsetting some makes a new release and
//! restarts the app's containers.
use std::collections::BTreeMap;

use anyhow::bail;
use clap::{Args, Subcommand};
use http::Method;

use slipway::api::client::Client;
use slipway::api::wire::{ConfigChange, ConfigChanged};

use super::api::{encode, print_json, runtime, AppArg, Style};

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct EnvArgs {
    #[command(flatten)]
    pub app: AppArg,
    #[arg(long)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Option<EnvCommand>,
}

#[derive(Debug, Subcommand)]
pub enum EnvCommand {
    /// Set config vars (KEY=VALUE …): a new release, containers restarted.
    Set {
        #[command(flatten)]
        app: AppArg,
        /// KEY=VALUE pairs; names of [A-Za-z0-9_], at most 64 characters, not starting
        /// with '_'; values at most 32 KiB.
        #[arg(required = true)]
        pairs: Vec<String>,
    },
    /// Remove config vars (KEY …): a new release, containers restarted.
    Unset {
        #[command(flatten)]
        app: AppArg,
        #[arg(required = true)]
        keys: Vec<String>,
    },
}

pub fn env(client: &Client, a: EnvArgs) -> anyhow::Result<u8> {
    let rt = runtime()?;
    let (app, change) = match a.command {
        None => {
            let app = a.app.resolve(None)?;
            let vars: BTreeMap<String, String> = rt.block_on(client.json(
                Method::GET,
                &format!("/v1/apps/{}/config", encode(&app)),
                None::<&()>,
            ))?;
            if a.json {
                print_json(&vars)?;
            } else if vars.is_empty() {
                println!("{app} has no config vars: `slipway env set -a {app} KEY=VALUE`.");
            } else {
                let s = Style::stdout();
                let width = vars.keys().map(|k| k.len()).max().unwrap_or(0);
                for (k, v) in &vars {
                    let pad = width - k.len() + 1;
                    println!("{}{:pad$} {v}", s.green(k), ":");
                }
            }
            return Ok(0);
        }
        Some(EnvCommand::Set { app, pairs }) => {
            let app = app.resolve(Some(&a.app))?;
            let mut set = BTreeMap::new();
            for p in pairs {
                let Some((k, v)) = p.split_once('=') else {
                    bail!("{p:?}: write KEY=VALUE");
                };
                set.insert(k.to_string(), v.to_string());
            }
            (app, ConfigChange { set, unset: vec![] })
        }
        Some(EnvCommand::Unset { app, keys }) => {
            let app = app.resolve(Some(&a.app))?;
            (
                app,
                ConfigChange {
                    set: BTreeMap::new(),
                    unset: keys,
                },
            )
        }
    };
    let names: Vec<String> = change
        .set
        .keys()
        .cloned()
        .chain(change.unset.iter().cloned())
        .collect();
    print!("Setting {} on {app} and restarting... ", names.join(", "));
    use std::io::Write;
    let _ = std::io::stdout().flush();
    let result: Result<ConfigChanged, _> = rt.block_on(client.json(
        Method::PATCH,
        &format!("/v1/apps/{}/config", encode(&app)),
        Some(&change),
    ));
    match result {
        Ok(changed) => {
            match changed.release {
                Some(v) => println!("done, v{v}"),
                None => println!("saved (the app runs nothing yet: the next deployment gets them)"),
            }
            Ok(0)
        }
        Err(e) => {
            println!("failed");
            Err(e.into())
        }
    }
}
