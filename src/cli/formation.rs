//! `slipway scale`, `slipway ps`, `slipway restart`.
use clap::Args;
use http::Method;

use slipway::api::client::Client;
use slipway::api::wire::{PsList, RestartRequest, ScaleChange};
use slipway::platform::formation::parse_all;
use slipway::platform::model::FormationEntry;

use super::api::{encode, print_json, print_table, runtime, AppArg};

#[derive(Debug, Args)]
pub struct ScaleArgs {
    #[command(flatten)]
    pub app: AppArg,
    /// TYPE=COUNT, TYPE=COUNT:SIZE or TYPE:SIZE (sizes S, M, L, XL, 2XL, 3XL), e.g.
    /// `web=3 worker=1:L`; none shows the formation.
    pub changes: Vec<String>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct PsArgs {
    #[command(flatten)]
    pub app: AppArg,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct RestartArgs {
    #[command(flatten)]
    pub app: AppArg,
    /// A process type (web) or one container (web-2); all containers when absent.
    pub target: Option<String>,
}

fn print_formation(f: &[FormationEntry]) {
    let rows: Vec<Vec<String>> = f
        .iter()
        .map(|e| vec![e.kind.clone(), e.count.to_string(), e.size.clone()])
        .collect();
    print_table(&["TYPE", "COUNT", "SIZE"], &rows);
}

pub fn scale(client: &Client, a: ScaleArgs) -> anyhow::Result<u8> {
    let app = a.app.resolve(None)?;
    let rt = runtime()?;
    let path = format!("/v1/apps/{}/formation", encode(&app));
    let formation: Vec<FormationEntry> = if a.changes.is_empty() {
        rt.block_on(client.json(Method::GET, &path, None::<&()>))?
    } else {
        let changes = parse_all(&a.changes)?;
        rt.block_on(client.json(Method::PATCH, &path, Some(&ScaleChange { changes })))?
    };
    if a.json {
        print_json(&formation)?;
    } else {
        print_formation(&formation);
    }
    Ok(0)
}

pub fn ps(client: &Client, a: PsArgs) -> anyhow::Result<u8> {
    let app = a.app.resolve(None)?;
    let list: PsList = runtime()?.block_on(client.json(
        Method::GET,
        &format!("/v1/apps/{}/ps", encode(&app)),
        None::<&()>,
    ))?;
    if a.json {
        print_json(&list.containers)?;
        return Ok(0);
    }
    if list.containers.is_empty() {
        println!("{app} has no containers running (`slipway scale -a {app} web=1`, or deploy it).");
        return Ok(0);
    }
    let rows: Vec<Vec<String>> = list
        .containers
        .iter()
        .map(|c| {
            vec![
                c.name.clone(),
                c.state.clone(),
                format!("v{}", c.release),
                c.size.name().to_string(),
                c.address.map(|a| a.to_string()).unwrap_or("-".into()),
                c.restarts.to_string(),
                c.started_at.clone(),
            ]
        })
        .collect();
    print_table(
        &[
            "NAME", "STATE", "RELEASE", "SIZE", "ADDRESS", "RESTARTS", "STARTED",
        ],
        &rows,
    );
    Ok(0)
}

/// `slipway cron -a APP`: the jobs of the app's cron.json, with their last and next runs.
pub fn cron(client: &Client, a: PsArgs) -> anyhow::Result<u8> {
    let app = a.app.resolve(None)?;
    super::api::show_list(
        client,
        &format!("/v1/apps/{}/cron", encode(&app)),
        a.json,
        &format!("{app} has no scheduled jobs: add a cron.json at the app's root (`{{\"jobs\": [{{\"command\": \"0 3 * * * ./job\"}}]}}`) and deploy."),
        &["SCHEDULE", "COMMAND", "SIZE", "LAST RUN", "NEXT RUN"],
        |j: &slipway::api::runner::CronJobInfo| {
            vec![
                j.schedule.clone(),
                j.command.clone(),
                j.size.name().to_string(),
                j.last_run.clone().unwrap_or("-".into()),
                j.next_run.clone().unwrap_or("-".into()),
            ]
        },
    )
}

pub fn restart(client: &Client, a: RestartArgs) -> anyhow::Result<u8> {
    let app = a.app.resolve(None)?;
    let _: serde_json::Value = runtime()?.block_on(client.json(
        Method::POST,
        &format!("/v1/apps/{}/restart", encode(&app)),
        Some(&RestartRequest {
            target: a.target.clone(),
        }),
    ))?;
    println!(
        "Restarting {} of {app}",
        a.target.as_deref().unwrap_or("every container")
    );
    Ok(0)
}
