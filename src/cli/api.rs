//! What the user commands share: the daemon they talk to, the app they act on, output as
//! tables or JSON, colour only on a terminal.
use std::io::IsTerminal;
use std::path::Path;

use anyhow::{bail, Context};
use clap::Args;
use serde::Serialize;

use slipway::api::client::{Client, Endpoint};
use slipway::config::Config;

/// Which daemon: its unix socket (`--socket`, SLIPWAY_SOCKET; the default), or its TCP API.
#[derive(Debug, Args)]
pub struct ApiArgs {
    /// The daemon's TCP API, e.g. http://10.0.0.2:7480 (the token comes from
    /// SLIPWAY_API_TOKEN); by default the CLI uses the daemon's unix socket.
    #[arg(long, global = true, env = "SLIPWAY_API_URL")]
    pub api_url: Option<String>,
}

impl ApiArgs {
    pub fn client(&self, config: &Config) -> anyhow::Result<Client> {
        let Some(url) = &self.api_url else {
            return Ok(Client::new(Endpoint::Unix(config.socket.clone())));
        };
        let (tls, rest) = match (url.strip_prefix("https://"), url.strip_prefix("http://")) {
            (Some(rest), _) => (true, rest),
            (None, Some(rest)) => (false, rest),
            _ => bail!(
                "--api-url {url:?}: use http://HOST:PORT or https://HOST:PORT (the daemon's --listen address)"
            ),
        };
        let addr = rest.trim_end_matches('/').to_string();
        let token = std::env::var("SLIPWAY_API_TOKEN")
            .ok()
            .filter(|t| !t.trim().is_empty())
            .or_else(|| std::fs::read_to_string(&config.token_file).ok())
            .map(|t| t.trim().to_string())
            .with_context(|| {
                "the TCP API needs its token: set SLIPWAY_API_TOKEN to what `slipway token` prints on the daemon's host"
            })?;
        Ok(Client::new(Endpoint::Tcp { addr, token, tls }))
    }
}

/// `-a/--app`: the app a command acts on.
#[derive(Debug, Args, Clone, Default)]
pub struct AppArg {
    /// The app (default: the one the `slipway` git remote of this repository names).
    #[arg(short = 'a', long = "app", value_name = "APP")]
    pub app: Option<String>,
}

impl AppArg {
    /// This app, the parent command's, or the one the git remote names.
    pub fn resolve(&self, parent: Option<&AppArg>) -> anyhow::Result<String> {
        if let Some(app) = self
            .app
            .clone()
            .or_else(|| parent.and_then(|p| p.app.clone()))
        {
            return Ok(app);
        }
        app_from_git_remote(Path::new("."))
            .context("no app given: pass -a APP (or add a git remote named `slipway` whose URL ends with /APP.git)")
    }
}

/// The app named by the `slipway` remote of the repository at `dir`: the last path part of
/// its URL, without `.git` (`ssh://host/shop.git`, `host:shop`, `http://host/git/shop`).
pub fn app_from_git_remote(dir: &Path) -> anyhow::Result<String> {
    let out = std::process::Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["remote", "get-url", "slipway"])
        .stderr(std::process::Stdio::null())
        .output()
        .context("running git")?;
    if !out.status.success() {
        bail!("this directory has no git remote named `slipway`");
    }
    let url = String::from_utf8_lossy(&out.stdout).trim().to_string();
    app_of_remote_url(&url)
        .with_context(|| format!("the `slipway` git remote {url:?} names no app"))
}

fn app_of_remote_url(url: &str) -> Option<String> {
    let url = url.trim_end_matches('/');
    let last = url.rsplit(['/', ':']).next()?;
    let name = last.strip_suffix(".git").unwrap_or(last);
    (!name.is_empty()).then(|| name.to_string())
}

/// A runtime for one command's calls.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the I/O runtime")
}

/// Colours and styles, only on a terminal and never with NO_COLOR.
pub struct Style {
    on: bool,
}

impl Style {
    pub fn stdout() -> Style {
        Style::new(std::io::stdout().is_terminal())
    }

    pub fn stderr() -> Style {
        Style::new(std::io::stderr().is_terminal())
    }

    fn new(terminal: bool) -> Style {
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        Style {
            on: terminal && !no_color,
        }
    }

    fn paint(&self, code: &str, text: &str) -> String {
        if self.on {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    }

    pub fn bold(&self, text: &str) -> String {
        self.paint("1", text)
    }

    pub fn green(&self, text: &str) -> String {
        self.paint("32", text)
    }

    pub fn red(&self, text: &str) -> String {
        self.paint("31", text)
    }
}

/// Prints `value` as indented JSON.
pub fn print_json(value: &impl Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// Prints rows as columns padded to their widest cell; the header in bold.
pub fn print_table(header: &[&str], rows: &[Vec<String>]) {
    let style = Style::stdout();
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
    }
    let line = |cells: Vec<String>| {
        let last = cells.len().saturating_sub(1);
        cells
            .iter()
            .enumerate()
            .map(|(i, c)| {
                if i == last {
                    c.clone()
                } else {
                    format!("{c:<w$}", w = widths[i])
                }
            })
            .collect::<Vec<_>>()
            .join("  ")
    };
    println!(
        "{}",
        style.bold(&line(header.iter().map(|h| h.to_string()).collect()))
    );
    for row in rows {
        println!("{}", line(row.clone()));
    }
}

/// A listing command: GET `path`, then JSON (`--json`), a message when empty, or a table.
pub fn show_list<T: serde::de::DeserializeOwned + Serialize>(
    client: &Client,
    path: &str,
    json: bool,
    empty: &str,
    header: &[&str],
    row: impl Fn(&T) -> Vec<String>,
) -> anyhow::Result<u8> {
    let list: Vec<T> = runtime()?.block_on(client.json(http::Method::GET, path, None::<&()>))?;
    if json {
        print_json(&list)?;
    } else if list.is_empty() {
        println!("{empty}");
    } else {
        print_table(header, &list.iter().map(row).collect::<Vec<_>>());
    }
    Ok(0)
}

/// Percent-encodes a path segment or query value.
pub fn encode(text: &str) -> String {
    let mut out = String::new();
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_urls_name_their_app() {
        for (url, app) in [
            ("ssh://git@host:2222/shop.git", "shop"),
            ("git@host:shop", "shop"),
            ("http://host:7480/git/shop/", "shop"),
            ("/srv/repos/blog.git", "blog"),
        ] {
            assert_eq!(app_of_remote_url(url).as_deref(), Some(app), "{url}");
        }
        assert_eq!(app_of_remote_url("host:"), None);
    }

    #[test]
    fn encoding_keeps_names_and_escapes_the_rest() {
        assert_eq!(encode("web-1"), "web-1");
        assert_eq!(encode("a b/c"), "a%20b%2Fc");
    }
}
