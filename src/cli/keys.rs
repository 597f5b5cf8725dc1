//! `slipway keys`: the public keys that may push over SSH (`git push` to
//! `ssh://git@HOST/APP.git`).
use std::io::Read;
use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use http::Method;

use slipway::api::client::Client;
use slipway::api::wire::KeyRequest;
use slipway::platform::model::SshKey;
use slipway::platform::ssh_keys::MAX_KEY_FILE;

use super::api::{encode, runtime, show_list, Style};

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct KeysArgs {
    #[arg(long)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Option<KeysCommand>,
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Allow the key in PUBKEY_FILE (a .pub file, `-` for stdin) to push, as NAME.
    Add {
        /// 1 to 64 of a-z, 0-9, `.`, `_`, `@`, `-` (e.g. alice@laptop).
        name: String,
        pubkey_file: PathBuf,
    },
    /// Stop key NAME from pushing.
    Remove { name: String },
}

/// The key file's text, read with a bound (a private key or a huge file is not sent).
fn read_key_file(path: &PathBuf) -> anyhow::Result<String> {
    let mut text = String::new();
    let reader: Box<dyn Read> = if path.as_os_str() == "-" {
        Box::new(std::io::stdin())
    } else {
        Box::new(std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?)
    };
    reader
        .take(MAX_KEY_FILE as u64 + 1)
        .read_to_string(&mut text)
        .with_context(|| format!("reading {} (a public key is text)", path.display()))?;
    if text.len() > MAX_KEY_FILE {
        bail!(
            "{} is larger than a public key ({MAX_KEY_FILE} bytes at most): give the .pub file, e.g. ~/.ssh/id_ed25519.pub",
            path.display()
        );
    }
    Ok(text)
}

pub fn keys(client: &Client, a: KeysArgs) -> anyhow::Result<u8> {
    match a.command {
        None => show_list(
            client,
            "/v1/keys",
            a.json,
            "No SSH keys may push: `slipway keys add NAME ~/.ssh/id_ed25519.pub` adds one.",
            &["NAME", "FINGERPRINT", "ADDED"],
            |k: &SshKey| vec![k.name.clone(), k.fingerprint.clone(), k.created_at.clone()],
        ),
        Some(KeysCommand::Add { name, pubkey_file }) => {
            let public_key = read_key_file(&pubkey_file)?;
            let key: SshKey = runtime()?.block_on(client.json(
                Method::POST,
                "/v1/keys",
                Some(&KeyRequest { name, public_key }),
            ))?;
            println!(
                "{} Key {} ({}) may push now: `slipway git-remote -a APP --ssh git@HOST`, then `git push slipway main`.",
                Style::stdout().green("----->"),
                key.name,
                key.fingerprint
            );
            Ok(0)
        }
        Some(KeysCommand::Remove { name }) => {
            let _: serde_json::Value = runtime()?.block_on(client.json(
                Method::DELETE,
                &format!("/v1/keys/{}", encode(&name)),
                None::<&()>,
            ))?;
            println!("Key {name} may no longer push.");
            Ok(0)
        }
    }
}
