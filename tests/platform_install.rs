//! scripts/install into a scratch prefix (root): binaries, buildpacks beside them (where the
//! Config finds them), man pages, completion, and the two systemd units, which
//! `systemd-analyze verify` accepts.
use std::path::Path;
use std::process::Command;

#[test]
fn install_puts_everything_in_place_and_systemd_accepts_the_units() {
    assert!(
        nix::unistd::Uid::effective().is_root(),
        "scripts/install writes as root: run this test as root"
    );
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_slipway")).parent().unwrap();
    let d = tempfile::tempdir().unwrap();
    let prefix = d.path().join("usr");
    let units = d.path().join("units");
    let out = Command::new(root.join("scripts/install"))
        .arg("--prefix")
        .arg(&prefix)
        .arg("--unit-dir")
        .arg(&units)
        .arg("--from")
        .arg(bin_dir)
        // The host's users and sshd are not the test's to change.
        .arg("--no-git-ssh")
        .output()
        .unwrap();
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{log}");
    for f in [
        "bin/slipway",
        "bin/slipway-runtime",
        "share/slipway/buildpacks/python/bin/compile",
        "share/man/man1/slipway.1",
        "share/man/man1/slipway-deploy.1",
        "share/bash-completion/completions/slipway",
    ] {
        assert!(prefix.join(f).exists(), "{f} missing:\n{log}");
    }
    // The installed binary finds the installed buildpacks beside it.
    std::fs::write(d.path().join("empty.toml"), "").unwrap();
    let config = slipway::config::Config::resolve(
        slipway::config::Overrides {
            config_file: Some(d.path().join("empty.toml")),
            ..Default::default()
        },
        Some(&prefix.join("bin")),
    )
    .unwrap();
    assert_eq!(
        config.buildpacks_dir.canonicalize().unwrap(),
        prefix
            .join("share/slipway/buildpacks")
            .canonicalize()
            .unwrap()
    );
    for unit in ["slipway.service", "slipway-router.service"] {
        let text = std::fs::read_to_string(units.join(unit)).unwrap();
        assert!(
            text.contains(&format!("ExecStart={}/bin/slipway", prefix.display())),
            "{text}"
        );
    }
    let daemon = std::fs::read_to_string(units.join("slipway.service")).unwrap();
    for line in ["Type=notify", "Delegate=yes", "KillMode=process"] {
        assert!(
            daemon.lines().any(|l| l == line),
            "{line} missing:\n{daemon}"
        );
    }
    // The script verified them; verify again here so that a failure names the unit.
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(units.join("slipway.service"))
        .arg(units.join("slipway-router.service"))
        .env("MANPATH", prefix.join("share/man"))
        .output()
        .unwrap();
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "systemd-analyze verify: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
