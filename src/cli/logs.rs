//! `slipway logs`: an app's containers, platform events and router lines, in time order.
use std::io::Write;

use clap::Args;
use http::Method;

use slipway::api::client::{full, Client};

use super::api::{encode, runtime, AppArg};

#[derive(Debug, Args)]
pub struct LogsArgs {
    #[command(flatten)]
    pub app: AppArg,
    /// How many of the last lines.
    #[arg(short = 'n', long = "lines", default_value_t = 100)]
    pub lines: usize,
    /// Keep printing new lines as they come (Ctrl-C stops).
    #[arg(short = 'f', long)]
    pub follow: bool,
    /// Only a process type (web), one container (web-2), `router` or `platform`.
    #[arg(long = "ps")]
    pub ps: Option<String>,
}

pub fn logs(client: &Client, a: LogsArgs) -> anyhow::Result<u8> {
    let app = a.app.resolve(None)?;
    let mut path = format!(
        "/v1/apps/{}/logs?lines={}&follow={}",
        encode(&app),
        a.lines,
        a.follow
    );
    if let Some(ps) = &a.ps {
        path.push_str(&format!("&ps={}", encode(ps)));
    }
    runtime()?.block_on(async {
        let mut body = client
            .stream(Method::GET, &path, full(bytes::Bytes::new()), None)
            .await?;
        let mut out = std::io::stdout();
        while let Some(chunk) = body.next_chunk().await? {
            if out.write_all(&chunk).and_then(|()| out.flush()).is_err() {
                break; // the reader went away (`| head`)
            }
        }
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(0)
}
