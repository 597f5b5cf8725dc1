//! `slipway domains`: custom domains an app answers to besides NAME.<base domain>.
use clap::{Args, Subcommand};
use http::Method;

use slipway::api::client::Client;
use slipway::api::wire::DomainRequest;

use super::api::{encode, print_json, runtime, AppArg};

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct DomainsArgs {
    #[command(flatten)]
    pub app: AppArg,
    #[arg(long)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Option<DomainsCommand>,
}

#[derive(Debug, Subcommand)]
pub enum DomainsCommand {
    /// The app's custom domains.
    List {
        #[command(flatten)]
        app: AppArg,
        #[arg(long)]
        json: bool,
    },
    /// Route DOMAIN (its DNS pointing at this host) to the app.
    Add {
        #[command(flatten)]
        app: AppArg,
        domain: String,
    },
    /// Stop routing DOMAIN to the app.
    Remove {
        #[command(flatten)]
        app: AppArg,
        domain: String,
    },
}

pub fn domains(client: &Client, a: DomainsArgs) -> anyhow::Result<u8> {
    let rt = runtime()?;
    let (app, json, list): (String, bool, Vec<String>) = match a.command {
        None => {
            let app = a.app.resolve(None)?;
            let list = rt.block_on(client.json(
                Method::GET,
                &format!("/v1/apps/{}/domains", encode(&app)),
                None::<&()>,
            ))?;
            (app, a.json, list)
        }
        Some(DomainsCommand::List { app, json }) => {
            let app = app.resolve(Some(&a.app))?;
            let list = rt.block_on(client.json(
                Method::GET,
                &format!("/v1/apps/{}/domains", encode(&app)),
                None::<&()>,
            ))?;
            (app, json || a.json, list)
        }
        Some(DomainsCommand::Add { app, domain }) => {
            let app = app.resolve(Some(&a.app))?;
            let list = rt.block_on(client.json(
                Method::POST,
                &format!("/v1/apps/{}/domains", encode(&app)),
                Some(&DomainRequest {
                    domain: domain.clone(),
                }),
            ))?;
            println!("Added {domain} to {app}");
            (app, false, list)
        }
        Some(DomainsCommand::Remove { app, domain }) => {
            let app = app.resolve(Some(&a.app))?;
            let list = rt.block_on(client.json(
                Method::DELETE,
                &format!("/v1/apps/{}/domains/{}", encode(&app), encode(&domain)),
                None::<&()>,
            ))?;
            println!("Removed {domain} from {app}");
            (app, false, list)
        }
    };
    if json {
        print_json(&list)?;
    } else if list.is_empty() {
        println!("{app} has no custom domains: `slipway domains add -a {app} www.example.com`.");
    } else {
        for d in list {
            println!("{d}");
        }
    }
    Ok(0)
}
