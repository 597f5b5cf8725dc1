//! `git push` over SSH end to end (root): Debian's sshd on a loopback port with the world's
//! authorized_keys, a throw-away user as the git user, a throw-away key added with
//! `slipway keys add`, the real daemon and router. A push deploys; shells, other commands and
//! unknown apps are refused; a removed key no longer gets in.
mod platform_support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use platform_support::running::Platform;
use platform_support::*;

/// A system user made for one test, removed (with its group) when dropped.
struct TestUser {
    name: String,
}

impl TestUser {
    fn create(home: &Path) -> TestUser {
        let name = format!("slwgit{}", std::process::id());
        let out = Command::new("useradd")
            .args([
                "--system",
                "--user-group",
                "--no-create-home",
                "--shell",
                "/bin/sh",
            ])
            .arg("--home-dir")
            .arg(home)
            .arg(&name)
            .output()
            .expect("useradd (package passwd) runs");
        assert!(
            out.status.success(),
            "useradd {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let user = TestUser { name };
        // `!` (what useradd leaves) reads as a locked account to sshd without PAM; `*` is an
        // account with no password that keys may still log in to.
        let status = Command::new("usermod")
            .args(["-p", "*", &user.name])
            .status()
            .unwrap();
        assert!(status.success());
        user
    }
}

impl Drop for TestUser {
    fn drop(&mut self) {
        // Whatever the user still runs (a git-shell of a failed test) goes first.
        let _ = Command::new("pkill")
            .args(["-KILL", "-u", &self.name])
            .status();
        let _ = Command::new("userdel").arg(&self.name).status();
        let _ = Command::new("groupdel")
            .arg(&self.name)
            .stderr(Stdio::null())
            .status();
    }
}

/// Debian's sshd on a free loopback port, with its own host key and config; killed when
/// dropped.
struct Sshd {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Sshd {
    fn start(dir: &Path, user: &str, authorized_keys: &Path) -> Sshd {
        assert!(
            Path::new("/usr/sbin/sshd").exists(),
            "/usr/sbin/sshd is missing: install openssh-server (scripts/install-deps)"
        );
        // sshd insists on its privilege separation directory.
        std::fs::create_dir_all("/run/sshd").unwrap();
        let host_key = dir.join("ssh_host_ed25519_key");
        keygen(&host_key);
        let port = free_port();
        let config = dir.join("sshd_config");
        std::fs::write(
            &config,
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {}\nPidFile {}\nStrictModes no\nUsePAM no\n\
                 PasswordAuthentication no\nKbdInteractiveAuthentication no\nPubkeyAuthentication yes\n\
                 PermitRootLogin no\nAllowUsers {user}\nAuthorizedKeysFile {}\nLogLevel VERBOSE\n",
                host_key.display(),
                dir.join("sshd.pid").display(),
                authorized_keys.display(),
            ),
        )
        .unwrap();
        let check = Command::new("/usr/sbin/sshd")
            .arg("-t")
            .arg("-f")
            .arg(&config)
            .output()
            .unwrap();
        assert!(
            check.status.success(),
            "sshd -t: {}",
            String::from_utf8_lossy(&check.stderr)
        );
        let log = dir.join("sshd.log");
        let child = Command::new("/usr/sbin/sshd")
            .args(["-D", "-e", "-f"])
            .arg(&config)
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(std::fs::File::options().append(true).open(&log).unwrap())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "sshd never listened");
            std::thread::sleep(Duration::from_millis(50));
        }
        Sshd { child, port, log }
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn keygen(path: &Path) {
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "test@slipway", "-f"])
        .arg(path)
        .status()
        .unwrap();
    assert!(status.success(), "ssh-keygen");
}

/// The ssh command line git uses for this server and key.
fn ssh_command(key: &Path, port: u16) -> String {
    format!(
        "ssh -i {} -p {port} -o IdentitiesOnly=yes -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR",
        key.display()
    )
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The test's setup: a world whose daemon may be reached by the test user over sshd.
struct Setup {
    // Dropped in this order: sshd before the user it runs sessions of, the platform last.
    sshd: Sshd,
    user: TestUser,
    key: PathBuf,
    platform: Platform,
}

impl Setup {
    fn start() -> Setup {
        assert!(
            nix::unistd::Uid::effective().is_root(),
            "this test makes a user and runs sshd: run it as root"
        );
        let mut world = World::new();
        // The git user walks to the socket and sshd (as that user) to authorized_keys.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(world.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        // The git user runs the binary the daemon names in authorized_keys: a copy in the
        // world, since the build tree may sit where other users cannot walk (/root/…).
        let bin = world.dir.path().join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::copy(SLIPWAY, bin.join("slipway")).unwrap();
        world.slipway = bin.join("slipway");
        let home = world.data().join("git-home");
        let user = TestUser::create(&home);
        world.write_config(&format!("git_user = \"{}\"\n", user.name));
        let platform = Platform::start_in(world, &[]);
        let w = &platform.world;
        let authorized_keys = w.data().join("git-home/.ssh/authorized_keys");
        assert!(
            authorized_keys.is_file(),
            "the daemon wrote no {}",
            authorized_keys.display()
        );
        let key = w.dir.path().join("id_ed25519");
        keygen(&key);
        let sshd = Sshd::start(w.dir.path(), &user.name, &authorized_keys);
        Setup {
            sshd,
            user,
            key,
            platform,
        }
    }

    fn world(&self) -> &World {
        &self.platform.world
    }

    /// `ssh USER@127.0.0.1 [COMMAND]` with the test key.
    fn ssh(&self, command: Option<&str>) -> Output {
        let mut cmd = Command::new("sh");
        cmd.arg("-c").arg(format!(
            "{} {}@127.0.0.1 {}",
            ssh_command(&self.key, self.sshd.port),
            self.user.name,
            command.unwrap_or("")
        ));
        cmd.stdin(Stdio::null()).output().unwrap()
    }

    /// `git ARGS` in `repo`, over ssh with the test key.
    fn git(&self, repo: &Path, args: &[&str]) -> Output {
        Command::new("git")
            .arg("-C")
            .arg(repo)
            .args(args)
            .env("GIT_SSH_COMMAND", ssh_command(&self.key, self.sshd.port))
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_AUTHOR_NAME", "t")
            .env("GIT_AUTHOR_EMAIL", "t@example.com")
            .env("GIT_COMMITTER_NAME", "t")
            .env("GIT_COMMITTER_EMAIL", "t@example.com")
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    fn logs(&self) -> String {
        format!(
            "daemon:\n{}\nsshd:\n{}",
            self.platform.daemon_log(),
            std::fs::read_to_string(&self.sshd.log).unwrap_or_default()
        )
    }

    fn remote(&self, app: &str) -> String {
        format!(
            "ssh://{}@127.0.0.1:{}/{app}.git",
            self.user.name, self.sshd.port
        )
    }
}

/// A repository with examples/hello-go committed on `main`.
fn hello_go_repo(s: &Setup) -> PathBuf {
    let repo = s.world().dir.path().join("hello-go");
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/hello-go");
    std::fs::create_dir_all(&repo).unwrap();
    for entry in std::fs::read_dir(&example).unwrap().flatten() {
        std::fs::copy(entry.path(), repo.join(entry.file_name())).unwrap();
    }
    for args in [
        &["init", "-q", "-b", "main"][..],
        &["add", "."],
        &["commit", "-q", "-m", "hello"],
    ] {
        let out = s.git(&repo, args);
        assert!(out.status.success(), "git {args:?}: {}", text(&out));
    }
    repo
}

#[test]
fn a_push_over_ssh_deploys_and_nothing_else_gets_through() {
    let s = Setup::start();
    let w = s.world();
    w.ok(&["create", "hello"]);
    let public = std::fs::read_to_string(s.key.with_extension("pub")).unwrap();
    assert!(w
        .fails(&[
            "keys",
            "add",
            "Bad Name",
            s.key.with_extension("pub").to_str().unwrap()
        ])
        .contains("not allowed"));
    let added = w.ok(&[
        "keys",
        "add",
        "ci@test",
        s.key.with_extension("pub").to_str().unwrap(),
    ]);
    assert!(added.contains("SHA256:"), "{added}");
    // The same key under another name is one key twice.
    let again = w.fails(&[
        "keys",
        "add",
        "other",
        s.key.with_extension("pub").to_str().unwrap(),
    ]);
    assert!(again.contains("added already, as ci@test"), "{again}");
    let listed: serde_json::Value = serde_json::from_str(&w.ok(&["keys", "--json"])).unwrap();
    assert_eq!(listed[0]["name"], "ci@test");
    let authorized =
        std::fs::read_to_string(w.data().join("git-home/.ssh/authorized_keys")).unwrap();
    let material: Vec<&str> = public.split_whitespace().take(2).collect();
    assert!(
        authorized.contains(&format!(
            "--key ci@test\",restrict {} ci@test",
            material.join(" ")
        )),
        "{authorized}"
    );
    let socket = w.run_dir().join("git.sock");
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let meta = std::fs::metadata(&socket).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);
    let gid = nix::unistd::User::from_name(&s.user.name)
        .unwrap()
        .unwrap()
        .gid;
    assert_eq!(meta.gid(), gid.as_raw());

    // A push deploys, and the pusher sees the build.
    let repo = hello_go_repo(&s);
    let out = s.git(&repo, &["remote", "add", "slipway", &s.remote("hello")]);
    assert!(out.status.success(), "{}", text(&out));
    let out = s.git(&repo, &["push", "slipway", "main"]);
    let pushed = text(&out);
    assert!(out.status.success(), "push failed:\n{pushed}\n{}", s.logs());
    assert!(pushed.contains("-----> Go app detected"), "{pushed}");
    assert!(pushed.contains("Released v1"), "{pushed}");
    s.platform
        .answers("hello", "hello from slipway on port 5000");
    let deployments = w.ok(&["deployments", "-a", "hello", "--json"]);
    assert!(deployments.contains("\"success\""), "{deployments}");
    // Fetching works through the same door.
    let clone = w.dir.path().join("clone");
    let out = s.git(
        w.dir.path(),
        &["clone", "-q", &s.remote("hello"), clone.to_str().unwrap()],
    );
    assert!(out.status.success(), "clone: {}", text(&out));
    assert!(clone.join("main.go").is_file());

    // A shell, another command, a path out, an unknown app: refused, with the reason.
    for command in [None, Some("bash"), Some("'cat /etc/passwd'")] {
        let out = s.ssh(command);
        assert!(!out.status.success(), "{command:?} got in: {}", text(&out));
        assert!(
            text(&out).contains("only serves `git push` and `git fetch`"),
            "{command:?}: {}",
            text(&out)
        );
    }
    let out = s.ssh(Some("\"git-receive-pack '../../etc.git'\""));
    assert!(!out.status.success());
    assert!(text(&out).contains("names no app"), "{}", text(&out));
    let out = s.git(&repo, &["push", &s.remote("nosuchapp"), "main"]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("no app nosuchapp"), "{}", text(&out));
    assert!(w.files_mentioning("nosuchapp").is_empty());

    // A git-shell that dies mid-session (its SSH session gone) takes git with it.
    let mut waiting = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "exec {} {}@127.0.0.1 \"git-upload-pack 'hello.git'\"",
            ssh_command(&s.key, s.sshd.port),
            s.user.name
        ))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let repo_dir = w.data().join("git/hello.git").display().to_string();
    let processes_with = |needle: &str| -> Vec<i32> {
        let ps = Command::new("ps")
            .args(["-eo", "pid,args"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&ps.stdout)
            .lines()
            .filter(|l| l.contains(needle) && !l.contains("<defunct>"))
            .filter_map(|l| l.split_whitespace().next()?.parse().ok())
            .collect()
    };
    let git_shell_marker = format!("--git-socket {}", socket.display());
    w.eventually("git upload-pack runs", Duration::from_secs(20), || {
        !processes_with(&format!("upload-pack {repo_dir}")).is_empty()
            && !processes_with(&git_shell_marker).is_empty()
    });
    for pid in processes_with(&git_shell_marker) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    w.eventually("git upload-pack is gone", Duration::from_secs(20), || {
        processes_with(&format!("upload-pack {repo_dir}")).is_empty()
    });
    let _ = waiting.kill();
    let _ = waiting.wait();

    // A removed key gets nowhere.
    w.ok(&["keys", "remove", "ci@test"]);
    assert!(w.ok(&["keys"]).contains("No SSH keys"));
    let out = s.git(&repo, &["push", "--force", "slipway", "main"]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("Permission denied"), "{}", text(&out));
    // Nothing of the sessions lives on: no git-shell, no git of the daemon's.
    let ps = Command::new("ps")
        .args(["-eo", "pid,args"])
        .output()
        .unwrap();
    let repos = w.data().join("git").display().to_string();
    let socket = socket.display().to_string();
    let left: Vec<String> = String::from_utf8_lossy(&ps.stdout)
        .lines()
        .filter(|l| l.contains(&repos) || l.contains(&socket))
        .map(String::from)
        .collect();
    assert!(left.is_empty(), "left running: {left:#?}");
}
