//! `slipway deploy` and `slipway deployments`.
use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use bytes::Bytes;
use clap::{Args, Subcommand};
use http::Method;

use slipway::api::client::{channel_body, Client};
use slipway::api::wire::{
    DeployRequest, DeploymentCreated, DeploymentDetail, DeploymentEnd, StreamEvent,
};
use slipway::platform::model::{Deployment, DeploymentStatus};

use super::api::{encode, print_json, runtime, show_list, AppArg, Style};

#[derive(Debug, Args)]
pub struct DeployArgs {
    #[command(flatten)]
    pub app: AppArg,
    /// A directory (packed without .git), a .tar, .tar.gz or .tgz archive, or an http(s)
    /// URL of one that the daemon downloads.
    #[arg(required_unless_present = "branch")]
    pub source: Option<String>,
    /// Deploy this branch of the app's linked GitHub repository at its head.
    #[arg(long, conflicts_with = "source")]
    pub branch: Option<String>,
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct DeploymentsArgs {
    #[command(flatten)]
    pub app: AppArg,
    #[arg(long)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Option<DeploymentsCommand>,
}

#[derive(Debug, Subcommand)]
pub enum DeploymentsCommand {
    /// A deployment's status and whole log.
    Show {
        id: i64,
        /// Follow it until it ends.
        #[arg(long, short = 'f')]
        follow: bool,
        #[arg(long)]
        json: bool,
    },
}

/// Packs `dir` as a gzip-compressed tar in a temporary file, leaving `.git` out.
pub fn pack_dir(dir: &Path) -> anyhow::Result<tempfile::NamedTempFile> {
    let tmp = tempfile::Builder::new()
        .prefix("slipway-deploy-")
        .suffix(".tar.gz")
        .tempfile()
        .context("creating a temporary file for the archive")?;
    let gz = flate2::write::GzEncoder::new(
        std::io::BufWriter::new(tmp.as_file()),
        flate2::Compression::fast(),
    );
    let mut tar = tar::Builder::new(gz);
    tar.follow_symlinks(false);
    for entry in walkdir::WalkDir::new(dir)
        .follow_links(false)
        .min_depth(1)
        .into_iter()
        .filter_entry(|e| e.file_name() != ".git")
    {
        let entry = entry.with_context(|| format!("reading {}", dir.display()))?;
        let kind = entry.file_type();
        if !(kind.is_dir() || kind.is_file() || kind.is_symlink()) {
            continue; // sockets, FIFOs, devices: nothing an app ships
        }
        let rel = entry.path().strip_prefix(dir).expect("below the root");
        tar.append_path_with_name(entry.path(), rel)
            .with_context(|| format!("packing {}", entry.path().display()))?;
    }
    tar.into_inner()
        .and_then(|gz| gz.finish())
        .and_then(|mut w| w.flush())
        .context("writing the archive")?;
    Ok(tmp)
}

/// Uploads the archive at `path` as a new deployment of `app` (a progress bar on a terminal);
/// `query` describes it (`commit=…&branch=…` for a pushed commit).
pub async fn upload(
    client: &Client,
    app: &str,
    path: &Path,
    query: &str,
) -> anyhow::Result<DeploymentCreated> {
    let size = std::fs::metadata(path)
        .with_context(|| format!("reading {}", path.display()))?
        .len();
    let bar = if std::io::stderr().is_terminal() {
        let bar = indicatif::ProgressBar::new(size);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "Uploading {bar:30} {bytes}/{total_bytes} {bytes_per_sec}",
            )
            .expect("a valid template"),
        );
        bar
    } else {
        indicatif::ProgressBar::hidden()
    };
    let (tx, body) = channel_body();
    let mut file =
        std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let feeder_bar = bar.clone();
    let feeder = tokio::task::spawn_blocking(move || {
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            match file.read(&mut buf) {
                Ok(0) => return,
                Ok(n) => {
                    feeder_bar.inc(n as u64);
                    if tx
                        .blocking_send(Ok(Bytes::copy_from_slice(&buf[..n])))
                        .is_err()
                    {
                        return;
                    }
                }
                Err(e) => {
                    let _ = tx.blocking_send(Err(e));
                    return;
                }
            }
        }
    });
    let created = client
        .upload(
            &format!("/v1/apps/{}/deployments{query}", encode(app)),
            body,
            "application/octet-stream",
        )
        .await;
    let _ = feeder.await;
    bar.finish_and_clear();
    Ok(created?)
}

/// Prints a deployment's stream until it ends; how it ended.
pub async fn follow(client: &Client, id: i64) -> anyhow::Result<Option<DeploymentEnd>> {
    let mut lines = client
        .stream(
            Method::GET,
            &format!("/v1/deployments/{id}/stream"),
            slipway::api::client::full(Bytes::new()),
            None,
        )
        .await?;
    let mut out = std::io::stdout();
    while let Some(line) = lines.next_line().await? {
        match serde_json::from_str::<StreamEvent>(&line) {
            Ok(StreamEvent::Line { line }) => {
                let _ = writeln!(out, "{line}");
                let _ = out.flush();
            }
            Ok(StreamEvent::End(end)) => return Ok(Some(end)),
            Err(_) => {
                let _ = writeln!(out, "{line}");
            }
        }
    }
    Ok(None)
}

/// Says how a deployment ended; the exit code.
pub fn report_end(id: i64, app: &str, end: Option<DeploymentEnd>) -> u8 {
    let s = Style::stdout();
    match end {
        Some(DeploymentEnd {
            status: DeploymentStatus::Success,
            url,
            release,
            ..
        }) => {
            println!(
                "{} {} v{} is live at {}",
                s.green("----->"),
                app,
                release.unwrap_or(0),
                s.bold(url.as_deref().unwrap_or("?"))
            );
            0
        }
        Some(end) => {
            eprintln!(
                "{} deployment {id} of {app} failed: {}{}",
                Style::stderr().red(" !    "),
                end.status,
                end.reason.map(|r| format!(": {r}")).unwrap_or_default()
            );
            eprintln!(
                "       the whole log: `slipway deployments show {id}`; the app's logs: `slipway logs -a {app}`"
            );
            1
        }
        None => {
            eprintln!(
                "the connection to the daemon ended before deployment {id} did; follow it with `slipway deployments show {id} --follow`"
            );
            1
        }
    }
}

pub fn deploy(client: &Client, a: DeployArgs) -> anyhow::Result<u8> {
    let app = a.app.resolve(None)?;
    let rt = runtime()?;
    let created: DeploymentCreated = match (&a.source, &a.branch) {
        (_, Some(branch)) => rt.block_on(client.json(
            Method::POST,
            &format!("/v1/apps/{}/deployments", encode(&app)),
            Some(&DeployRequest {
                branch: Some(branch.clone()),
                ..Default::default()
            }),
        ))?,
        (Some(source), None)
            if source.to_ascii_lowercase().starts_with("http://")
                || source.to_ascii_lowercase().starts_with("https://") =>
        {
            rt.block_on(client.json(
                Method::POST,
                &format!("/v1/apps/{}/deployments", encode(&app)),
                Some(&DeployRequest {
                    source_url: Some(source.clone()),
                    ..Default::default()
                }),
            ))?
        }
        (Some(source), None) => {
            let path = PathBuf::from(source);
            let meta = std::fs::metadata(&path).with_context(|| {
                format!("{source}: give a directory, a .tar.gz/.tgz/.tar archive or an http(s) URL")
            })?;
            if meta.is_dir() {
                let packed = pack_dir(&path)?;
                rt.block_on(upload(client, &app, packed.path(), ""))?
            } else if meta.is_file() {
                rt.block_on(upload(client, &app, &path, ""))?
            } else {
                bail!("{source} is neither a directory nor a file");
            }
        }
        (None, None) => bail!("give a source to deploy, or --branch BRANCH"),
    };
    let id = created.deployment.id;
    if let Some(ahead) = created.queued_behind {
        println!("-----> Deployment {id} is queued: deployment {ahead} of {app} runs first");
    }
    let end = rt.block_on(follow(client, id))?;
    Ok(report_end(id, &app, end))
}

pub fn deployments(client: &Client, a: DeploymentsArgs) -> anyhow::Result<u8> {
    let rt = runtime()?;
    match a.command {
        None => {
            let app = a.app.resolve(None)?;
            show_list(
                client,
                &format!("/v1/apps/{}/deployments", encode(&app)),
                a.json,
                &format!("No deployments of {app} yet: `slipway deploy -a {app} DIR`."),
                &["ID", "STATUS", "RELEASE", "CREATED", "SOURCE"],
                |d: &Deployment| {
                    vec![
                        d.id.to_string(),
                        d.status.to_string(),
                        d.release.map(|v| format!("v{v}")).unwrap_or("-".into()),
                        d.created_at.clone(),
                        d.source.clone(),
                    ]
                },
            )
        }
        Some(DeploymentsCommand::Show {
            id, follow: true, ..
        }) => {
            let detail: DeploymentDetail = rt.block_on(client.json(
                Method::GET,
                &format!("/v1/deployments/{id}"),
                None::<&()>,
            ))?;
            let end = rt.block_on(follow(client, id))?;
            Ok(report_end(id, &detail.deployment.app, end))
        }
        Some(DeploymentsCommand::Show { id, json, .. }) => {
            let detail: DeploymentDetail = rt.block_on(client.json(
                Method::GET,
                &format!("/v1/deployments/{id}"),
                None::<&()>,
            ))?;
            if json {
                print_json(&detail)?;
                return Ok(0);
            }
            let d = &detail.deployment;
            let s = Style::stdout();
            println!(
                "{}",
                s.bold(&format!("=== deployment {} of {}", d.id, d.app))
            );
            println!("Status:   {}", d.status);
            if let Some(r) = d.release {
                println!("Release:  v{r}");
            }
            if let Some(reason) = &d.reason {
                println!("Reason:   {reason}");
            }
            println!("Source:   {}", d.source);
            println!("Created:  {}", d.created_at);
            if let Some(f) = &d.finished_at {
                println!("Finished: {f}");
            }
            if let Some(url) = &detail.url {
                println!("URL:      {url}");
            }
            println!();
            print!("{}", detail.log);
            Ok(0)
        }
    }
}
