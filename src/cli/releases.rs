//! `slipway releases` and `slipway rollback`.
use anyhow::Context;
use clap::Args;
use http::Method;

use slipway::api::client::Client;
use slipway::api::wire::Rollback;
use slipway::platform::model::Release;

use super::api::{encode, runtime, show_list, AppArg};

#[derive(Debug, Args)]
pub struct ReleasesArgs {
    #[command(flatten)]
    pub app: AppArg,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct RollbackArgs {
    #[command(flatten)]
    pub app: AppArg,
    /// The release to go back to (`v3` or `3`): its slug, config vars and process types
    /// become a new release, without a build.
    pub version: String,
}

pub fn releases(client: &Client, a: ReleasesArgs) -> anyhow::Result<u8> {
    let app = a.app.resolve(None)?;
    show_list(
        client,
        &format!("/v1/apps/{}/releases", encode(&app)),
        a.json,
        &format!("No releases of {app} yet: `slipway deploy -a {app} DIR` makes v1."),
        &["RELEASE", "STATUS", "CAUSE", "SLUG", "CREATED"],
        |r: &Release| {
            vec![
                r.label(),
                r.status.as_str().to_string(),
                r.cause.clone(),
                r.slug.chars().take(12).collect(),
                r.created_at.clone(),
            ]
        },
    )
}

/// `v3` or `3`.
fn parse_version(text: &str) -> anyhow::Result<u32> {
    text.strip_prefix('v')
        .unwrap_or(text)
        .parse()
        .with_context(|| {
            format!("{text:?} is not a release: write it as v3 (`slipway releases` lists them)")
        })
}

pub fn rollback(client: &Client, a: RollbackArgs) -> anyhow::Result<u8> {
    let app = a.app.resolve(None)?;
    let version = parse_version(&a.version)?;
    println!("Rolling {app} back to v{version}...");
    let r: Release = runtime()?.block_on(client.json(
        Method::POST,
        &format!("/v1/apps/{}/rollback", encode(&app)),
        Some(&Rollback { version }),
    ))?;
    println!("{app} runs {} ({})", r.label(), r.cause);
    Ok(0)
}

#[cfg(test)]
mod tests {
    #[test]
    fn versions_with_or_without_v() {
        assert_eq!(super::parse_version("v3").unwrap(), 3);
        assert_eq!(super::parse_version("12").unwrap(), 12);
        assert!(super::parse_version("vv3").is_err());
    }
}
