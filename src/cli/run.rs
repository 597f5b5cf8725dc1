//! `slipway run`: a one-off container of the app's current release. Attached (the default),
//! the terminal is its terminal and its exit code becomes ours; `--detached`, its output goes
//! to the app's logs.
use std::io::{IsTerminal, Read, Write};

use anyhow::{bail, Context};
use clap::Args;
use tokio::io::AsyncWriteExt;

use slipway::api::client::Client;
use slipway::api::wire::{frame, RunRequest, RunStarted};

use super::api::{encode, runtime, AppArg};

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub app: AppArg,
    /// Container size: S, M, L, XL, 2XL, 3XL.
    #[arg(long, short = 's')]
    pub size: Option<String>,
    /// Extra environment (KEY=VALUE) for this run only.
    #[arg(long = "env", short = 'e')]
    pub env: Vec<String>,
    /// Start it in the background; its output goes to `slipway logs`.
    #[arg(long, short = 'd')]
    pub detached: bool,
    /// The command (after `--`), run by bash in the app's environment.
    #[arg(required = true, last = true)]
    pub command: Vec<String>,
}

/// One argument as bash reads it back: quoted when it holds anything but plain characters.
fn shell_quote(arg: &str) -> String {
    let plain = !arg.is_empty()
        && arg
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,@%+".contains(&b));
    if plain {
        arg.to_string()
    } else {
        format!("'{}'", arg.replace('\'', "'\\''"))
    }
}

/// The command line: one argument as it is (it may be a whole shell command), several each
/// quoted.
fn command_line(args: &[String]) -> String {
    match args {
        [one] => one.clone(),
        many => many
            .iter()
            .map(|a| shell_quote(a))
            .collect::<Vec<_>>()
            .join(" "),
    }
}

/// The terminal in raw mode while this lives.
struct RawMode {
    saved: nix::sys::termios::Termios,
}

impl RawMode {
    fn enter() -> Option<RawMode> {
        use nix::sys::termios;
        let stdin = std::io::stdin();
        let saved = termios::tcgetattr(&stdin).ok()?;
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        termios::tcsetattr(&stdin, termios::SetArg::TCSANOW, &raw).ok()?;
        Some(RawMode { saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = nix::sys::termios::tcsetattr(
            std::io::stdin(),
            nix::sys::termios::SetArg::TCSANOW,
            &self.saved,
        );
    }
}

/// A RESIZE frame with our terminal's size, if stdout is a terminal.
fn resize_frame() -> Option<Vec<u8>> {
    let (rows, cols) = window_size()?;
    let mut payload = rows.to_be_bytes().to_vec();
    payload.extend_from_slice(&cols.to_be_bytes());
    Some(frame::encode(frame::RESIZE, &payload))
}

/// Our terminal's size (rows, columns), if stdout is a terminal.
fn window_size() -> Option<(u16, u16)> {
    let mut ws = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ fills a winsize we own.
    if unsafe { libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut ws) } != 0 {
        return None;
    }
    Some((ws.ws_row, ws.ws_col))
}

pub fn run(client: &Client, a: RunArgs) -> anyhow::Result<u8> {
    let app = a.app.resolve(None)?;
    let mut env = Vec::new();
    for kv in &a.env {
        let Some((k, v)) = kv.split_once('=') else {
            bail!("--env {kv:?}: write KEY=VALUE");
        };
        env.push((k.to_string(), v.to_string()));
    }
    let tty = std::io::stdin().is_terminal() && std::io::stdout().is_terminal();
    let size = tty.then(window_size).flatten();
    let request = RunRequest {
        command: command_line(&a.command),
        size: a.size.clone(),
        env,
        detached: a.detached,
        tty: tty && !a.detached,
        rows: size.map(|(rows, _)| rows),
        cols: size.map(|(_, cols)| cols),
    };
    let path = format!("/v1/apps/{}/run", encode(&app));
    let rt = runtime()?;
    if a.detached {
        let started: RunStarted =
            rt.block_on(client.json(http::Method::POST, &path, Some(&request)))?;
        println!(
            "Running `{}` on {app} as {}: `slipway logs -a {app} --ps {}` shows its output",
            request.command, started.container, started.container
        );
        return Ok(0);
    }
    rt.block_on(async {
        let stream = client.attach(&path, &request).await?;
        let (mut from_daemon, mut to_daemon) = tokio::io::split(stream);
        let _raw = if tty { RawMode::enter() } else { None };
        // Input: a thread reads our stdin (blocking) and hands it over.
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Option<Vec<u8>>>(16);
        std::thread::spawn(move || {
            let mut stdin = std::io::stdin();
            let mut buf = vec![0u8; 8192];
            loop {
                match stdin.read(&mut buf) {
                    Ok(0) | Err(_) => {
                        let _ = tx.blocking_send(None);
                        return;
                    }
                    Ok(n) => {
                        if tx.blocking_send(Some(buf[..n].to_vec())).is_err() {
                            return;
                        }
                    }
                }
            }
        });
        tokio::spawn(async move {
            // The terminal's size whenever it changes (the pty starts with the size the
            // request gave, and this covers a change since).
            let mut winch = if tty {
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change()).ok()
            } else {
                None
            };
            if let Some(size) = tty.then(resize_frame).flatten() {
                if to_daemon.write_all(&size).await.is_err() {
                    return;
                }
            }
            loop {
                let f = tokio::select! {
                    chunk = rx.recv() => match chunk {
                        Some(Some(data)) => frame::encode(frame::STDIN, &data),
                        Some(None) => frame::encode(frame::STDIN_EOF, &[]),
                        None => return,
                    },
                    Some(()) = async { match winch.as_mut() { Some(w) => w.recv().await, None => std::future::pending().await } } => {
                        match resize_frame() {
                            Some(f) => f,
                            None => continue,
                        }
                    }
                };
                if to_daemon.write_all(&f).await.is_err() {
                    return;
                }
            }
        });
        let mut out = std::io::stdout();
        loop {
            match frame::read(&mut from_daemon)
                .await
                .context("reading from the daemon")?
            {
                Some((frame::OUTPUT, data)) => {
                    let _ = out.write_all(&data);
                    let _ = out.flush();
                }
                Some((frame::ERRORS, data)) => {
                    let mut err = std::io::stderr();
                    let _ = err.write_all(&data);
                    let _ = err.flush();
                }
                Some((frame::EXIT, code)) => {
                    let code = <[u8; 4]>::try_from(&code[..])
                        .map(i32::from_be_bytes)
                        .unwrap_or(255);
                    return Ok(code.clamp(0, 255) as u8);
                }
                Some((frame::ERROR, message)) => {
                    bail!("{}", String::from_utf8_lossy(&message))
                }
                Some(_) => {}
                None => bail!(
                    "the connection to the daemon ended before the command did; its output may be in `slipway logs -a {app}`"
                ),
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_argument_is_a_command_line_several_are_quoted() {
        assert_eq!(command_line(&["ls | wc -l".into()]), "ls | wc -l");
        assert_eq!(
            command_line(&["echo".into(), "a b".into(), "it's".into()]),
            "echo 'a b' 'it'\\''s'"
        );
        assert_eq!(command_line(&["python".into(), "-V".into()]), "python -V");
    }
}
