//! The public keys allowed to push over SSH, and the `authorized_keys` file sshd reads them
//! from.
//!
//! A key comes from whoever runs `slipway keys add`, and its line ends up in a file sshd
//! trusts, so everything in it is checked before it is stored:
//! * exactly one key line, of a bounded size, of a known type;
//! * its base64 decodes to a blob whose first (length-prefixed) string is that type, as
//!   sshd would read it: garbage never reaches the file;
//! * `authorized_keys` options (`command=`, `from=`, `permitopen=`…) are refused: the
//!   platform writes its own, which pin the key to `slipway git-shell`;
//! * the comment is kept only as printable ASCII (it is shown, never written to the file:
//!   a line ends with the key's checked name instead).
use std::path::Path;

use base64::Engine;
use sha2::{Digest, Sha256};

use super::model::SshKey;

/// The key types sshd accepts that a key may be of.
pub const KEY_TYPES: [&str; 7] = [
    "ssh-ed25519",
    "ssh-rsa",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
];

/// Largest key file taken (an RSA key of 16384 bits is under 3 KiB).
pub const MAX_KEY_FILE: usize = 16 << 10;

/// Longest comment kept.
const MAX_COMMENT: usize = 100;

/// Longest key name.
const MAX_NAME: usize = 64;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    #[error("key name {0:?} is not allowed: use 1 to 64 of a-z, 0-9, `.`, `_`, `@` and `-`")]
    Name(String),
    #[error("{0}")]
    Refused(String),
}

/// A key name: `[a-z0-9._@-]{1,64}` (it ends up in sshd's forced command, unquoted).
pub fn check_key_name(name: &str) -> Result<(), KeyError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME
        && name.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'@' | b'-')
        });
    if ok {
        Ok(())
    } else {
        Err(KeyError::Name(name.chars().take(80).collect()))
    }
}

/// A checked public key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    pub kind: String,
    /// The blob, base64 as sshd reads it.
    pub base64: String,
    pub comment: String,
    /// `SHA256:…` (unpadded base64 of the blob's SHA-256), as `ssh-keygen -l` prints it.
    pub fingerprint: String,
}

impl PublicKey {
    /// `TYPE BASE64`: what makes two keys the same key.
    pub fn material(&self) -> String {
        format!("{} {}", self.kind, self.base64)
    }

    /// `TYPE BASE64 [COMMENT]`, as stored.
    pub fn line(&self) -> String {
        if self.comment.is_empty() {
            self.material()
        } else {
            format!("{} {}", self.material(), self.comment)
        }
    }
}

/// The key part (`TYPE BASE64`) of a stored key's line.
pub fn material_of(public_key: &str) -> String {
    public_key
        .split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ")
}

fn refused(message: impl Into<String>) -> KeyError {
    KeyError::Refused(message.into())
}

/// Reads the one public key of `text` (a `.pub` file's content): blank lines and `#` lines
/// aside, exactly one line `TYPE BASE64 [COMMENT]`.
pub fn parse_public_key(text: &str) -> Result<PublicKey, KeyError> {
    if text.len() > MAX_KEY_FILE {
        return Err(refused(format!(
            "the key file holds {} bytes, more than a public key ({} at most): give the .pub file (e.g. ~/.ssh/id_ed25519.pub), not a private key or a list",
            text.len(),
            MAX_KEY_FILE
        )));
    }
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    let line = match lines.as_slice() {
        [line] => *line,
        [] => return Err(refused("the key file holds no public key: give the .pub file (e.g. ~/.ssh/id_ed25519.pub)")),
        more => {
            return Err(refused(format!(
                "the key file holds {} lines: give one public key (add several keys one by one, each with its own name)",
                more.len()
            )))
        }
    };
    if line.contains("PRIVATE KEY") {
        return Err(refused(
            "that is a private key: give the public one (the .pub file beside it), and keep the private key to yourself",
        ));
    }
    let mut parts = line.splitn(3, [' ', '\t']);
    let kind = parts.next().unwrap_or_default();
    let blob = parts.next().unwrap_or_default().trim();
    let comment = parts.next().unwrap_or_default();
    if !KEY_TYPES.contains(&kind) {
        // `OPTIONS TYPE …`: options are the platform's to set.
        if line
            .split_whitespace()
            .skip(1)
            .any(|w| KEY_TYPES.contains(&w))
            || kind.contains('=')
        {
            return Err(refused(
                "the key line starts with authorized_keys options: give the bare key (`TYPE BASE64 [COMMENT]`); the platform sets its own options",
            ));
        }
        return Err(refused(format!(
            "key type {:?} is not allowed: use one of {}",
            kind.chars().take(40).collect::<String>(),
            KEY_TYPES.join(", ")
        )));
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(blob)
        .map_err(|e| {
            refused(format!(
                "the key's base64 does not decode ({e}): copy the whole line of the .pub file"
            ))
        })?;
    if blob_type(&bytes) != Some(kind.as_bytes()) {
        return Err(refused(format!(
            "the key's data is not an {kind} key (its blob names another type, or none): copy the whole line of the .pub file"
        )));
    }
    let fingerprint = format!(
        "SHA256:{}",
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(Sha256::digest(&bytes))
    );
    Ok(PublicKey {
        kind: kind.to_string(),
        base64: base64::engine::general_purpose::STANDARD.encode(&bytes),
        comment: sanitize_comment(comment),
        fingerprint,
    })
}

/// The first string of an SSH key blob: a big-endian u32 length, then that many bytes.
fn blob_type(blob: &[u8]) -> Option<&[u8]> {
    let len = u32::from_be_bytes(blob.get(..4)?.try_into().ok()?) as usize;
    blob.get(4..4usize.checked_add(len)?)
}

/// The comment as printable ASCII without quotes or backslashes, bounded.
fn sanitize_comment(comment: &str) -> String {
    comment
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() && !matches!(c, '"' | '\'' | '\\' | '`') || c == ' ' {
                c
            } else {
                '_'
            }
        })
        .take(MAX_COMMENT)
        .collect::<String>()
        .trim()
        .to_string()
}

/// `path` as a word of `sh -c` inside an `authorized_keys` `command="…"` option: single
/// quotes for the shell, `\"` for sshd. A path with a control character cannot be written.
fn forced_command_word(path: &Path) -> Result<String, KeyError> {
    let text = path.to_str().filter(|t| !t.chars().any(|c| c.is_control()));
    let text = text.ok_or_else(|| {
        refused(format!(
            "{} cannot be named in authorized_keys: install slipway and its run directory at paths of printable UTF-8",
            path.display()
        ))
    })?;
    Ok(format!(
        "'{}'",
        text.replace('\'', r"'\''").replace('"', r#"\""#)
    ))
}

/// The `authorized_keys` text for `keys`: each key may only run `slipway_exe git-shell`
/// (talking to the daemon on `git_socket`), with `restrict` (no pty, no forwarding of ports,
/// agents or X11, no ~/.ssh/rc).
pub fn authorized_keys(
    slipway_exe: &Path,
    git_socket: &Path,
    keys: &[SshKey],
) -> Result<String, KeyError> {
    let exe = forced_command_word(slipway_exe)?;
    let socket = forced_command_word(git_socket)?;
    let mut text = String::from(
        "# Written by the slipway daemon from `slipway keys`: edits here are overwritten.\n",
    );
    for key in keys {
        // Stored keys were checked when added; a row changed behind the daemon's back is
        // checked again rather than trusted.
        check_key_name(&key.name)?;
        let parsed = parse_public_key(&key.public_key)?;
        text.push_str(&format!(
            "command=\"{exe} git-shell --git-socket {socket} --key {name}\",restrict {material} {name}\n",
            name = key.name,
            material = parsed.material(),
        ));
    }
    Ok(text)
}

/// Writes `text` to `path` atomically, mode 0644 (sshd reads it as the git user; with
/// StrictModes it must be writable by root alone, and so must its directories, which are
/// made 0755 when missing).
pub fn write_authorized_keys(path: &Path, text: &str) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    if let Some(dir) = path.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(dir)?;
    }
    crate::sys::atomic::write(path, text.as_bytes())?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A real ed25519 public key (ssh-keygen), and its `ssh-keygen -l` fingerprint.
    const ED25519: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIE1GB5lQibYgNVhvoJhihgmpG3l125NYNmDU9u6A6gTx alice@laptop";
    const ED25519_FP: &str = "SHA256:VNV/YVdILsFUMoxPFlV5fmQL6RSRC0J7DFBvcvaLzxA";

    #[test]
    fn a_pub_file_is_read_and_fingerprinted_as_ssh_keygen_does() {
        let k = parse_public_key(&format!("# mine\n\n{ED25519}\n")).unwrap();
        assert_eq!(k.kind, "ssh-ed25519");
        assert_eq!(k.comment, "alice@laptop");
        assert_eq!(k.fingerprint, ED25519_FP);
        assert_eq!(k.line(), ED25519);
    }

    #[test]
    fn options_other_types_bad_blobs_and_several_lines_are_refused() {
        let blob = ED25519.split_whitespace().nth(1).unwrap();
        let cases = [
            (format!("command=\"sh\" {ED25519}"), "options"),
            (format!("restrict,pty {ED25519}"), "options"),
            (format!("no-pty {ED25519}"), "options"),
            (format!("ssh-dss {blob}"), "not allowed"),
            (format!("ssh-rsa {blob}"), "not an ssh-rsa key"),
            ("ssh-ed25519 !!!notbase64".to_string(), "does not decode"),
            ("ssh-ed25519 AAAA".to_string(), "not an ssh-ed25519 key"),
            ("ssh-ed25519".to_string(), "not an ssh-ed25519 key"),
            (format!("{ED25519}\n{ED25519}"), "2 lines"),
            ("".to_string(), "no public key"),
            (
                "-----BEGIN OPENSSH PRIVATE KEY-----".to_string(),
                "private key",
            ),
            ("x".repeat(MAX_KEY_FILE + 1), "more than a public key"),
        ];
        for (text, want) in cases {
            let e = parse_public_key(&text).unwrap_err().to_string();
            assert!(e.contains(want), "{text:.60}: {e}");
        }
    }

    #[test]
    fn a_blob_length_that_overruns_is_no_type() {
        assert_eq!(blob_type(&[0, 0, 0, 2, b'a', b'b']), Some(&b"ab"[..]));
        assert_eq!(blob_type(&[0, 0, 0, 9, b'a']), None);
        assert_eq!(blob_type(&[0xff, 0xff, 0xff, 0xff]), None);
        assert_eq!(blob_type(&[0, 0]), None);
    }

    #[test]
    fn comments_keep_printable_ascii_only() {
        let k = parse_public_key(&format!("{ED25519}\"; rm -rf / `x` \u{1b}[31m")).unwrap();
        assert!(
            k.comment.chars().all(|c| c.is_ascii_graphic() || c == ' ')
                && !k.comment.contains(['"', '`', '\\', '\'']),
            "{}",
            k.comment
        );
    }

    #[test]
    fn names_are_a_narrow_alphabet() {
        for ok in [
            "alice",
            "alice@laptop",
            "ci-deploy_2",
            "a.b",
            &"a".repeat(64),
        ] {
            check_key_name(ok).unwrap();
        }
        for no in [
            "",
            "Alice",
            "a b",
            "a\"b",
            "a,command=x",
            "a/b",
            &"a".repeat(65),
            "ä",
        ] {
            assert!(check_key_name(no).is_err(), "{no}");
        }
    }

    #[test]
    fn every_line_forces_git_shell_with_restrict() {
        let keys = [SshKey {
            name: "alice".into(),
            public_key: ED25519.into(),
            fingerprint: ED25519_FP.into(),
            created_at: String::new(),
        }];
        let text = authorized_keys(
            Path::new("/opt/it's \"here\"/slipway"),
            Path::new("/run/slipway/git.sock"),
            &keys,
        )
        .unwrap();
        let line = text.lines().nth(1).unwrap();
        assert_eq!(
            line,
            format!(
                "command=\"'/opt/it'\\''s \\\"here\\\"/slipway' git-shell --git-socket '/run/slipway/git.sock' --key alice\",restrict {} alice",
                material_of(ED25519)
            )
        );
        assert!(authorized_keys(Path::new("/a\nb"), Path::new("/s"), &keys).is_err());
    }
}
