//! iptables rules that fence a container bridge off from the host and from other networks,
//! and the sweep that removes every rule a network left behind.
//!
//! What a container on bridge `B` (subnet `S`, gateway `G`) can reach once these rules exist:
//!
//! * other containers on `B`: everything (they share one L2 segment);
//! * the host itself (any of its addresses: `G`, its LAN address, other bridges' gateways):
//!   only the `(protocol, port)` pairs listed as host services, on `G`; everything else is
//!   rejected with ICMP admin-prohibited, so a connect fails at once with "no route to host".
//!   Replies to connections the host opened (the router talking to a web container) pass;
//! * the host's loopback services: never. The container has its own network namespace whose
//!   `lo` is its own, so `127.0.0.1` inside is the container itself; a packet that does reach
//!   the host with a 127/8 destination is a martian the kernel drops (slipway never sets
//!   `route_localnet`), and the INPUT rule below rejects it earlier anyway;
//! * anything beyond the host (LAN, registries, internet) through NAT when egress is enabled,
//!   nothing when it is not;
//! * IPv6: nothing; the bridge has IPv6 disabled (see `bridge.rs`), so there is no link-local
//!   path to host services listening on `::`.
//!
//! Nobody outside the bridge can open a connection to its containers through the host's
//! forwarding path (a `mangle` FORWARD drop of new connections, which no later ACCEPT in the
//! `filter` table of another network can override); the host's own processes (the router)
//! reach containers directly because their packets are not forwarded.

use std::io;
use std::net::Ipv4Addr;
use std::process::Command;

use super::addr::Ipv4Net;

/// Errors from managing the host's firewall rules.
#[derive(Debug, thiserror::Error)]
pub enum GuardError {
    #[error("cannot run {tool}: {source}; install Debian's iptables package")]
    Spawn {
        tool: &'static str,
        source: io::Error,
    },
    #[error("{tool} {args} failed: {stderr}; check the host's firewall (iptables-nft) and retry")]
    Failed {
        tool: &'static str,
        args: String,
        stderr: String,
    },
}

/// A TCP or UDP port on the bridge gateway that containers may open connections to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HostService {
    Tcp(u16),
    Udp(u16),
}

/// The rules for one bridge.
#[derive(Debug, Clone)]
pub struct GuardRules<'a> {
    pub bridge: &'a str,
    pub subnet: Ipv4Net,
    pub gateway: Ipv4Addr,
    pub egress: bool,
    pub host_services: &'a [HostService],
    /// Marks the rules in builtin chains so humans can tell whose they are.
    pub comment: String,
}

fn input_chain(bridge: &str) -> String {
    format!("SLIPWAY-IN-{bridge}")
}

fn forward_chain(bridge: &str) -> String {
    format!("SLIPWAY-FWD-{bridge}")
}

/// Where iptables lives, whatever the caller's PATH (sbin is often missing from it).
const SYSTEM_PATH: &str = "/usr/local/sbin:/usr/sbin:/sbin:/usr/local/bin:/usr/bin:/bin";

/// Runs `iptables -w ARGS` and returns stdout.
fn iptables(args: &[&str]) -> Result<String, GuardError> {
    let mut all = vec!["-w"];
    all.extend_from_slice(args);
    run("iptables", &all, None, args.join(" "))
}

/// Feeds `iptables-restore --noflush`: the chains declared in `script` are replaced as one
/// transaction, so there is never a moment where a chain is half-written.
fn iptables_restore(script: &str) -> Result<(), GuardError> {
    let shown = script.replace('\n', "; ");
    run(
        "iptables-restore",
        &["-w", "--noflush"],
        Some(script),
        shown,
    )
    .map(drop)
}

/// Runs `tool ARGS` with `input` on its stdin (or none) and returns its stdout; a failure
/// quotes its stderr, with the arguments as `shown`.
fn run(
    tool: &'static str,
    args: &[&str],
    input: Option<&str>,
    shown: String,
) -> Result<String, GuardError> {
    use std::io::Write;
    use std::process::Stdio;
    let spawn_err = |source| GuardError::Spawn { tool, source };
    let mut child = Command::new(tool)
        .args(args)
        .env("PATH", SYSTEM_PATH)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(spawn_err)?;
    if let (Some(mut stdin), Some(input)) = (child.stdin.take(), input) {
        stdin.write_all(input.as_bytes()).map_err(spawn_err)?;
    }
    let output = child.wait_with_output().map_err(spawn_err)?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(GuardError::Failed {
            tool,
            args: shown,
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        })
    }
}

/// Inserts `rule` at the top of `table`/`chain` unless an identical rule is already there.
fn ensure_rule_first(table: &str, chain: &str, rule: &[&str]) -> Result<(), GuardError> {
    let mut check = vec!["-t", table, "-C", chain];
    check.extend_from_slice(rule);
    if iptables(&check).is_ok() {
        return Ok(());
    }
    let mut insert = vec!["-t", table, "-I", chain, "1"];
    insert.extend_from_slice(rule);
    iptables(&insert).map(|_| ())
}

/// Deletes every copy of `rule` from `table`/`chain`; absent rules are fine.
fn delete_rule_everywhere(table: &str, chain: &str, rule: &[&str]) {
    let mut delete = vec!["-t", table, "-D", chain];
    delete.extend_from_slice(rule);
    // Bounded: a duplicate per concurrent installer at most, never an endless loop.
    for _ in 0..64 {
        if iptables(&delete).is_err() {
            break;
        }
    }
}

fn delete_chain(table: &str, chain: &str) {
    let _ = iptables(&["-t", table, "-F", chain]);
    let _ = iptables(&["-t", table, "-X", chain]);
}

impl GuardRules<'_> {
    fn input_jump(&self) -> Vec<String> {
        let chain = input_chain(self.bridge);
        vec![
            "-i".into(),
            self.bridge.into(),
            "-m".into(),
            "comment".into(),
            "--comment".into(),
            self.comment.clone(),
            "-j".into(),
            chain,
        ]
    }

    fn forward_jumps(&self) -> [Vec<String>; 2] {
        let chain = forward_chain(self.bridge);
        ["-i", "-o"].map(|direction| {
            vec![
                direction.into(),
                self.bridge.into(),
                "-m".into(),
                "comment".into(),
                "--comment".into(),
                self.comment.clone(),
                "-j".into(),
                chain.clone(),
            ]
        })
    }

    fn isolation_drop(&self) -> Vec<String> {
        vec![
            "!".into(),
            "-i".into(),
            self.bridge.into(),
            "-o".into(),
            self.bridge.into(),
            "-m".into(),
            "conntrack".into(),
            "--ctstate".into(),
            "NEW".into(),
            "-m".into(),
            "comment".into(),
            "--comment".into(),
            self.comment.clone(),
            "-j".into(),
            "DROP".into(),
        ]
    }

    /// The `filter` table content of the two per-bridge chains, in iptables-restore syntax.
    fn filter_script(&self) -> String {
        let bridge = self.bridge;
        let input = input_chain(bridge);
        let forward = forward_chain(bridge);
        let mut script = String::from("*filter\n");
        script.push_str(&format!(":{input} - [0:0]\n:{forward} - [0:0]\n"));
        // Replies to connections the host opened (router -> web container).
        script.push_str(&format!(
            "-A {input} -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT\n"
        ));
        for service in self.host_services {
            let (proto, port) = match service {
                HostService::Tcp(port) => ("tcp", port),
                HostService::Udp(port) => ("udp", port),
            };
            script.push_str(&format!(
                "-A {input} -d {}/32 -p {proto} -m {proto} --dport {port} -j ACCEPT\n",
                self.gateway
            ));
        }
        // Everything else addressed to the host, whichever of its addresses, is refused: the
        // host's own services are not the containers' business.
        script.push_str(&format!(
            "-A {input} -j REJECT --reject-with icmp-admin-prohibited\n"
        ));
        script.push_str(&format!("-A {forward} -i {bridge} -o {bridge} -j ACCEPT\n"));
        script.push_str(&format!(
            "-A {forward} -o {bridge} -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT\n"
        ));
        if self.egress {
            // Explicit ACCEPT so egress also works on hosts whose FORWARD policy is DROP.
            script.push_str(&format!(
                "-A {forward} -i {bridge} -s {} -j ACCEPT\n",
                self.subnet
            ));
        }
        script.push_str(&format!(
            "-A {forward} -i {bridge} -j REJECT --reject-with icmp-admin-prohibited\n"
        ));
        script.push_str("COMMIT\n");
        script
    }

    /// Installs (or refreshes) the rules; idempotent. Chain contents first, jumps last, so a
    /// jump never points at an empty or missing chain.
    pub fn install(&self) -> Result<(), GuardError> {
        iptables_restore(&self.filter_script())?;
        let jump = self.input_jump();
        ensure_rule_first("filter", "INPUT", &as_strs(&jump))?;
        for jump in self.forward_jumps() {
            ensure_rule_first("filter", "FORWARD", &as_strs(&jump))?;
        }
        ensure_rule_first("mangle", "FORWARD", &as_strs(&self.isolation_drop()))?;
        Ok(())
    }

    /// Removes everything `install` created; idempotent.
    pub fn remove(&self) {
        delete_rule_everywhere("mangle", "FORWARD", &as_strs(&self.isolation_drop()));
        for jump in self.forward_jumps() {
            delete_rule_everywhere("filter", "FORWARD", &as_strs(&jump));
        }
        delete_rule_everywhere("filter", "INPUT", &as_strs(&self.input_jump()));
        delete_chain("filter", &input_chain(self.bridge));
        delete_chain("filter", &forward_chain(self.bridge));
    }
}

fn as_strs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

/// Removes the NAT rules and chains the CNI bridge plugin's `ipMasq` created for network
/// `network_name` (all containers, or only `container_id`).
///
/// The bridge plugin tags them with the comment `name: "<network>" id: "<container>"`; its own
/// DEL cannot remove them when the container's namespace is already gone (it learns the
/// address from the interface), so detach and teardown sweep by comment.
pub fn remove_masquerade_rules(
    network_name: &str,
    container_id: Option<&str>,
) -> Result<(), GuardError> {
    let listing = iptables(&["-t", "nat", "-S"])?;
    let wanted_prefix = match container_id {
        Some(id) => format!("name: \"{network_name}\" id: \"{id}\""),
        None => format!("name: \"{network_name}\" id: "),
    };
    let mut chains: Vec<String> = Vec::new();
    let mut deletions: Vec<Vec<String>> = Vec::new();
    for line in listing.lines() {
        let words = split_rule_line(line);
        let Some(comment_at) = words.iter().position(|w| w == "--comment") else {
            continue;
        };
        let matches = words
            .get(comment_at + 1)
            .is_some_and(|comment| match container_id {
                Some(_) => *comment == wanted_prefix,
                None => comment.starts_with(&wanted_prefix),
            });
        if !matches || words.first().map(String::as_str) != Some("-A") {
            continue;
        }
        let Some(chain) = words.get(1) else { continue };
        if chain.starts_with("CNI-") {
            chains.push(chain.clone());
        } else {
            if let Some(target) = words
                .iter()
                .position(|w| w == "-j")
                .and_then(|at| words.get(at + 1))
                .filter(|t| t.starts_with("CNI-"))
            {
                chains.push(target.clone());
            }
            let mut delete = vec!["-t".to_string(), "nat".to_string(), "-D".to_string()];
            delete.extend(words[1..].iter().cloned());
            deletions.push(delete);
        }
    }
    for delete in deletions {
        let _ = iptables(&as_strs(&delete));
    }
    chains.sort();
    chains.dedup();
    for chain in chains {
        delete_chain("nat", &chain);
    }
    Ok(())
}

/// Splits one `iptables -S` line into words, honouring double quotes and backslash escapes
/// (comments come out as `"name: \"net\" id: \"c1\""`).
pub fn split_rule_line(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut current = String::new();
    let mut in_word = false;
    let mut quoted = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(next) = chars.next() {
                    current.push(next);
                }
                in_word = true;
            }
            '"' => {
                quoted = !quoted;
                in_word = true;
            }
            c if c.is_whitespace() && !quoted => {
                if in_word {
                    words.push(std::mem::take(&mut current));
                    in_word = false;
                }
            }
            c => {
                current.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        words.push(current);
    }
    words
}

/// Every line of `iptables-save` (filter, nat and mangle) that contains `needle`; for tests
/// and diagnostics.
pub fn rules_mentioning(needle: &str) -> Result<Vec<String>, GuardError> {
    let mut found = Vec::new();
    for table in ["filter", "nat", "mangle", "raw"] {
        for line in iptables(&["-t", table, "-S"])?.lines() {
            if line.contains(needle) {
                found.push(format!("{table}: {line}"));
            }
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_lines_split_like_a_shell() {
        let line = r#"-A POSTROUTING -s 10.213.5.2/32 -m comment --comment "name: \"slipway-swt1\" id: \"c1\"" -j CNI-0123"#;
        let words = split_rule_line(line);
        assert_eq!(words[0], "-A");
        assert_eq!(words[6], "--comment");
        assert_eq!(words[7], r#"name: "slipway-swt1" id: "c1""#);
        assert_eq!(words[9], "CNI-0123");
        assert!(split_rule_line("   ").is_empty());
        assert_eq!(split_rule_line(r#"a "" b"#), vec!["a", "", "b"]);
    }

    #[test]
    fn filter_script_allows_only_listed_services() {
        let services = [HostService::Tcp(8080), HostService::Udp(53)];
        let rules = GuardRules {
            bridge: "swt1",
            subnet: "10.213.7.0/24".parse().unwrap(),
            gateway: "10.213.7.1".parse().unwrap(),
            egress: false,
            host_services: &services,
            comment: "slipway network n".into(),
        };
        let script = rules.filter_script();
        assert!(script.contains("-d 10.213.7.1/32 -p tcp -m tcp --dport 8080 -j ACCEPT"));
        assert!(script.contains("-d 10.213.7.1/32 -p udp -m udp --dport 53 -j ACCEPT"));
        assert!(!script.contains("-s 10.213.7.0/24 -j ACCEPT"));
        let reject = script.find("-A SLIPWAY-IN-swt1 -j REJECT").unwrap();
        let accept = script.find("--dport 8080").unwrap();
        assert!(
            accept < reject,
            "allowed services must come before the reject"
        );
        assert!(script.ends_with("COMMIT\n"));
    }
}
