//! `slipway create`, `apps`, `info`, `destroy`.
use anyhow::bail;
use clap::Args;
use http::Method;

use slipway::api::client::Client;
use slipway::api::wire::{AppInfo, AppSummary, CreateApp};

use super::api::{encode, print_json, runtime, show_list, AppArg, Style};

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// The app's name: a lower-case DNS label of at most 40 characters (a-z, 0-9, '-'),
    /// starting with a letter. It answers at http://NAME.<base domain>.
    pub name: String,
}

#[derive(Debug, Args)]
pub struct AppsArgs {
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct InfoArgs {
    #[command(flatten)]
    pub app: AppArg,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct DestroyArgs {
    /// The app to destroy: its containers, releases, slugs, build cache and logs go.
    pub name: String,
    /// The app's name again, to confirm.
    #[arg(long)]
    pub confirm: Option<String>,
}

pub fn create(client: &Client, a: CreateArgs) -> anyhow::Result<u8> {
    let app: AppSummary = runtime()?.block_on(client.json(
        Method::POST,
        "/v1/apps",
        Some(&CreateApp { name: a.name }),
    ))?;
    let s = Style::stdout();
    println!("Created {} — {}", s.bold(&app.name), app.url);
    println!(
        "Deploy it with `slipway deploy -a {} DIR` (a directory, a .tar.gz or a URL).",
        app.name
    );
    Ok(0)
}

pub fn list(client: &Client, a: AppsArgs) -> anyhow::Result<u8> {
    show_list(
        client,
        "/v1/apps",
        a.json,
        "No apps yet: `slipway create NAME` makes one.",
        &["NAME", "RELEASE", "URL", "CREATED"],
        |a: &AppSummary| {
            vec![
                a.name.clone(),
                a.release.map(|v| format!("v{v}")).unwrap_or("-".into()),
                a.url.clone(),
                a.created_at.clone(),
            ]
        },
    )
}

pub fn info(client: &Client, a: InfoArgs) -> anyhow::Result<u8> {
    let name = a.app.resolve(None)?;
    let info: AppInfo = runtime()?.block_on(client.json(
        Method::GET,
        &format!("/v1/apps/{}", encode(&name)),
        None::<&()>,
    ))?;
    if a.json {
        print_json(&info)?;
        return Ok(0);
    }
    let s = Style::stdout();
    println!("{}", s.bold(&format!("=== {}", info.name)));
    println!("URL:          {}", info.url);
    if !info.domains.is_empty() {
        println!("Domains:      {}", info.domains.join(", "));
    }
    match &info.release {
        Some(r) => println!(
            "Release:      v{} ({}, {}), slug {}",
            r.version,
            r.cause,
            r.created_at,
            &r.slug[..12.min(r.slug.len())]
        ),
        None => println!("Release:      none yet (`slipway deploy -a {}`)", info.name),
    }
    if !info.formation.is_empty() {
        let f: Vec<String> = info
            .formation
            .iter()
            .map(|e| format!("{}={}:{}", e.kind, e.count, e.size))
            .collect();
        println!("Formation:    {}", f.join(" "));
    }
    println!("Config vars:  {}", info.config_vars);
    println!(
        "Deploys on:   git push to {}{}",
        info.deploy_branch.as_deref().unwrap_or("main or master"),
        info.github
            .as_ref()
            .map(|l| format!(
                "; pushes to {} of {}",
                l.branch,
                slipway::platform::git::without_credentials(&l.repo)
            ))
            .unwrap_or_default()
    );
    if let Some(d) = &info.last_deployment {
        println!(
            "Deployment:   {} {} ({}), from {}",
            d.id,
            d.status,
            d.finished_at.as_deref().unwrap_or(&d.created_at),
            d.source
        );
    }
    println!("Created:      {}", info.created_at);
    Ok(0)
}

pub fn destroy(client: &Client, a: DestroyArgs) -> anyhow::Result<u8> {
    if a.confirm.as_deref() != Some(a.name.as_str()) {
        bail!(
            "destroying {0} removes its containers, releases, slugs, build cache and logs for good; confirm with `slipway destroy {0} --confirm {0}`",
            a.name
        );
    }
    let _: serde_json::Value = runtime()?.block_on(client.json(
        Method::DELETE,
        &format!("/v1/apps/{0}?confirm={0}", encode(&a.name)),
        None::<&()>,
    ))?;
    println!("Destroyed {}", a.name);
    Ok(0)
}
