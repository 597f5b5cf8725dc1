//! The stack build: a recipe turned into a root filesystem with mmdebstrap
//! (or the host's busybox), then measured for the stack's metadata.

use std::collections::{BTreeMap, HashSet};
use std::fs::{self, File};
use std::io::{BufRead, BufReader};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::recipe::{Recipe, StackKind};
use super::store::{StackStore, ROOTFS_DIR};
use super::{write_synced, Result, StackError};
use crate::sys::io::{at, walking, PathError};

/// Bumped when the way a recipe turns into a tree changes in this file.
pub(super) const BUILD_FORMAT: &str = "slipway-stack-v1";
const DEB_CACHE_DIR: &str = ".debs";

/// Packages whose versions are recorded in a stack's metadata.
const VERSIONED_PACKAGES: &[&str] = &["python3", "nodejs", "golang-go", "nginx-light", "busybox"];

impl StackStore {
    pub(super) fn build_in(
        &self,
        recipe: &Recipe,
        tmp: &Path,
        progress: &mut dyn FnMut(&str),
    ) -> Result<()> {
        let setup = tmp.join("setup.sh");
        write_synced(&setup, self.recipes.setup_script.as_bytes())?;
        let rootfs = tmp.join(ROOTFS_DIR);
        match &recipe.kind {
            StackKind::Debian { suite, variant } => {
                let cache = self.stacks_dir.join(DEB_CACHE_DIR);
                fs::create_dir_all(&cache).map_err(at("creating", &cache))?;
                let mut cmd = Command::new("mmdebstrap");
                cmd.arg("--mode=root")
                    .arg("--format=directory")
                    .arg(format!("--variant={variant}"));
                if !recipe.packages.is_empty() {
                    cmd.arg(format!("--include={}", recipe.packages.join(",")));
                }
                // dpkg's per-file fsync makes a build several times slower;
                // the whole tree is synced once before it is committed.
                cmd.arg("--dpkgopt=force-unsafe-io");
                // Documentation is not needed in a stack; copyright files stay.
                for opt in [
                    "path-exclude=/usr/share/man/*",
                    "path-exclude=/usr/share/info/*",
                    "path-exclude=/usr/share/doc/*",
                    "path-include=/usr/share/doc/*/copyright",
                ] {
                    cmd.arg(format!("--dpkgopt={opt}"));
                }
                // Keep downloaded .debs in the store so a changed recipe
                // rebuilds without downloading everything again.
                cmd.arg("--skip=download/empty")
                    .arg("--skip=essential/unlink")
                    .arg("--setup-hook=mkdir -p \"$1\"/var/cache/apt/archives")
                    .arg(format!(
                        "--setup-hook=sync-in {} /var/cache/apt/archives/",
                        cache.display()
                    ))
                    .arg(format!(
                        "--customize-hook=sync-out /var/cache/apt/archives {}",
                        cache.display()
                    ))
                    .arg(format!(
                        "--customize-hook=sh {} \"$1\" {}",
                        shell_quote(&setup),
                        shell_quote(&self.ca_dir)
                    ))
                    .arg(suite)
                    .arg(&rootfs)
                    .args(self.apt_sources_for(suite, tmp)?);
                run_streaming(&recipe.name, cmd, progress)
            }
            StackKind::Busybox => {
                lay_out_busybox(&rootfs)?;
                let mut cmd = Command::new("sh");
                cmd.arg(&setup).arg(&rootfs).arg(&self.ca_dir);
                run_streaming(&recipe.name, cmd, progress)
            }
        }
    }
}

fn shell_quote(path: &Path) -> String {
    format!("'{}'", path.display().to_string().replace('\'', "'\\''"))
}

/// Runs `cmd`, handing each line of its stdout and stderr to `progress`.
fn run_streaming(name: &str, mut cmd: Command, progress: &mut dyn FnMut(&str)) -> Result<()> {
    let program = cmd.get_program().to_string_lossy().into_owned();
    let (reader, writer) = nix::unistd::pipe()
        .map_err(|e| PathError::new("creating a pipe for", &program, e.into()))?;
    let writer_err = writer
        .try_clone()
        .map_err(at("duplicating a pipe for", Path::new(&program)))?;
    cmd.stdin(Stdio::null()).stdout(writer).stderr(writer_err);
    let mut child = cmd.spawn().map_err(|source| StackError::ToolMissing {
        tool: program.clone(),
        source,
    })?;
    // The Command still holds the write ends; drop it so that EOF arrives
    // when the child (and its children) exit.
    drop(cmd);
    for line in BufReader::new(File::from(reader)).lines() {
        match line {
            Ok(line) => progress(&line),
            Err(_) => break,
        }
    }
    let status = child
        .wait()
        .map_err(at("waiting for", Path::new(&program)))?;
    if status.success() {
        Ok(())
    } else {
        Err(StackError::BuildFailed {
            name: name.to_string(),
            detail: format!("{program} exited with {status}"),
        })
    }
}

pub(super) fn find_busybox() -> Result<PathBuf> {
    ["/bin/busybox", "/usr/bin/busybox"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .ok_or_else(|| StackError::ToolMissing {
            tool: "busybox".into(),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        })
}

/// A static busybox, a link for each applet, and the few /etc files that
/// programs expect.
fn lay_out_busybox(root: &Path) -> Result<()> {
    let busybox = find_busybox()?;
    for dir in [
        "bin", "sbin", "usr/bin", "usr/sbin", "etc", "proc", "sys", "dev", "tmp", "root", "run",
        "var/tmp", "app",
    ] {
        let path = root.join(dir);
        fs::create_dir_all(&path).map_err(at("creating", &path))?;
    }
    let target = root.join("bin/busybox");
    fs::copy(&busybox, &target).map_err(at("copying busybox to", &target))?;
    fs::set_permissions(&target, fs::Permissions::from_mode(0o755))
        .map_err(at("chmod", &target))?;
    let output = Command::new(&target)
        .arg("--list-full")
        .output()
        .map_err(|source| StackError::ToolMissing {
            tool: target.display().to_string(),
            source,
        })?;
    if !output.status.success() {
        return Err(StackError::BuildFailed {
            name: "busybox".into(),
            detail: format!(
                "`busybox --list-full` exited with {}; is it busybox-static?",
                output.status
            ),
        });
    }
    for applet in String::from_utf8_lossy(&output.stdout).lines() {
        let applet = applet.trim().trim_start_matches('/');
        if applet.is_empty() || applet.contains("..") || applet == "bin/busybox" {
            continue;
        }
        let link = root.join(applet);
        if let Some(parent) = link.parent() {
            fs::create_dir_all(parent).map_err(at("creating", parent))?;
        }
        if link.symlink_metadata().is_err() {
            std::os::unix::fs::symlink("/bin/busybox", &link).map_err(at("linking", &link))?;
        }
    }
    let etc_files: &[(&str, &str)] = &[
        (
            "etc/passwd",
            "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
        ),
        ("etc/group", "root:x:0:\nnogroup:x:65534:\n"),
        (
            "etc/nsswitch.conf",
            "passwd: files\ngroup: files\nhosts: files dns\n",
        ),
        ("etc/os-release", "NAME=\"slipway busybox\"\nID=busybox\n"),
    ];
    for (path, content) in etc_files {
        let path = root.join(path);
        fs::write(&path, content).map_err(at("writing", &path))?;
    }
    let tmp = root.join("tmp");
    fs::set_permissions(&tmp, fs::Permissions::from_mode(0o1777)).map_err(at("chmod", &tmp))?;
    Ok(())
}

/// Bytes of regular files and symlinks under `root`, each inode once.
pub(super) fn tree_size(root: &Path) -> Result<u64> {
    let mut seen = HashSet::new();
    let mut total = 0;
    for entry in walkdir::WalkDir::new(root).follow_links(false) {
        let entry = entry.map_err(walking("measuring", root))?;
        let meta = entry
            .metadata()
            .map_err(walking("measuring", entry.path()))?;
        if !meta.is_dir() && seen.insert((meta.dev(), meta.ino())) {
            total += meta.len();
        }
    }
    Ok(total)
}

/// Versions of [`VERSIONED_PACKAGES`] from the tree's dpkg status, or the
/// busybox banner for a busybox tree.
pub(super) fn package_versions(root: &Path) -> Result<BTreeMap<String, String>> {
    let mut versions = BTreeMap::new();
    let status_path = root.join("var/lib/dpkg/status");
    match fs::read_to_string(&status_path) {
        Ok(status) => {
            for paragraph in status.split("\n\n") {
                let field = |key: &str| {
                    paragraph
                        .lines()
                        .find_map(|l| l.strip_prefix(key).map(|v| v.trim().to_string()))
                };
                if let (Some(package), Some(version)) = (field("Package:"), field("Version:")) {
                    let installed = field("Status:").is_some_and(|s| s.ends_with(" installed"));
                    if installed && VERSIONED_PACKAGES.contains(&package.as_str()) {
                        versions.insert(package, version);
                    }
                }
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if let Ok(output) = Command::new(root.join("bin/busybox")).output() {
                let banner = String::from_utf8_lossy(&output.stdout);
                if let Some(version) = banner
                    .lines()
                    .next()
                    .and_then(|l| l.split_whitespace().nth(1))
                {
                    versions.insert("busybox".into(), version.to_string());
                }
            }
        }
        Err(e) => return Err(PathError::new("reading", &status_path, e).into()),
    }
    Ok(versions)
}
