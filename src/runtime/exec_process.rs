//! The process of an `exec`: the container's own process, changed by what the caller asks
//! (command, terminal, environment, working directory, user, capabilities). `slipway-runtime
//! exec` maps its flags onto an `ExecRequest`; one-off app processes will build one directly.
use std::path::PathBuf;

use oci_spec::runtime::{Box as ConsoleSize, BoxBuilder, Capability, Process};

use super::error::{Result, RuntimeError};

/// What an exec changes in the container's process.
#[derive(Debug, Default, Clone)]
pub struct ExecRequest {
    pub args: Vec<String>,
    pub terminal: bool,
    /// The pty's size at birth (rows, columns), so the program's first look is right.
    pub console_size: Option<(u64, u64)>,
    /// KEY=VALUE entries replacing or adding to the container's environment.
    pub env: Vec<String>,
    pub cwd: Option<PathBuf>,
    /// `UID[:GID]`, numeric.
    pub user: Option<String>,
    pub additional_gids: Vec<u32>,
    pub no_new_privs: bool,
    /// Capabilities (`CAP_NET_ADMIN`) added to the bounding, effective and permitted sets.
    pub add_caps: Vec<String>,
}

/// `base` (the container's process) with `req` applied.
pub fn process_for(base: &Process, req: &ExecRequest) -> Result<Process> {
    if req.args.is_empty() {
        return Err(RuntimeError::Invalid(
            "exec needs a command (or --process FILE)".into(),
        ));
    }
    let mut p = base.clone();
    p.set_args(Some(req.args.clone()));
    p.set_terminal(Some(req.terminal));
    p.set_console_size(req.console_size.map(console_size));
    let mut env = p.env().clone().unwrap_or_default();
    for kv in &req.env {
        let key = kv.split('=').next().unwrap_or("");
        env.retain(|e| e.split('=').next() != Some(key));
        env.push(kv.clone());
    }
    p.set_env(Some(env));
    if let Some(cwd) = &req.cwd {
        p.set_cwd(cwd.clone());
    }
    if let Some(u) = &req.user {
        let (uid, gid) = u.split_once(':').unwrap_or((u, "0"));
        let parse = |s: &str| {
            s.parse::<u32>()
                .map_err(|_| RuntimeError::Invalid(format!("--user {u}: use numeric UID[:GID]")))
        };
        p.user_mut().set_uid(parse(uid)?);
        p.user_mut().set_gid(parse(gid)?);
    }
    if !req.additional_gids.is_empty() {
        p.user_mut()
            .set_additional_gids(Some(req.additional_gids.clone()));
    }
    if req.no_new_privs {
        p.set_no_new_privileges(Some(true));
    }
    if !req.add_caps.is_empty() {
        let mut caps = p.capabilities().clone().unwrap_or_default();
        for name in &req.add_caps {
            let c: Capability = serde_json::from_value(name.as_str().into())
                .map_err(|_| RuntimeError::Invalid(format!("unknown capability {name}")))?;
            let with = |s: &Option<oci_spec::runtime::Capabilities>| {
                let mut s = s.clone().unwrap_or_default();
                s.insert(c);
                Some(s)
            };
            let (b, e, pm) = (
                with(caps.bounding()),
                with(caps.effective()),
                with(caps.permitted()),
            );
            caps.set_bounding(b);
            caps.set_effective(e);
            caps.set_permitted(pm);
        }
        p.set_capabilities(Some(caps));
    }
    Ok(p)
}

fn console_size((rows, cols): (u64, u64)) -> ConsoleSize {
    BoxBuilder::default()
        .height(rows)
        .width(cols)
        .build()
        .expect("a console size has no required field left unset")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_change_only_what_they_name() {
        let mut base = Process::default();
        base.set_env(Some(vec!["PATH=/bin".into(), "A=1".into()]));
        let req = ExecRequest {
            args: vec!["sh".into()],
            env: vec!["A=2".into(), "B=3".into()],
            user: Some("1000:1001".into()),
            add_caps: vec!["CAP_NET_ADMIN".into()],
            console_size: Some((24, 80)),
            terminal: true,
            ..Default::default()
        };
        let p = process_for(&base, &req).unwrap();
        assert_eq!(p.args().as_deref(), Some(&["sh".to_string()][..]));
        assert_eq!(
            p.env().as_deref(),
            Some(&["PATH=/bin".to_string(), "A=2".into(), "B=3".into()][..])
        );
        assert_eq!((p.user().uid(), p.user().gid()), (1000, 1001));
        let caps = p.capabilities().clone().unwrap();
        assert!(caps
            .effective()
            .as_ref()
            .unwrap()
            .contains(&Capability::NetAdmin));
        assert_eq!(p.console_size().unwrap().height(), 24);
        assert!(p.cwd() == base.cwd());
    }

    #[test]
    fn bad_flags_are_refused() {
        let base = Process::default();
        let bad = |f: fn(&mut ExecRequest)| {
            let mut r = ExecRequest {
                args: vec!["x".into()],
                ..Default::default()
            };
            f(&mut r);
            process_for(&base, &r).is_err()
        };
        assert!(bad(|r| r.args.clear()));
        assert!(bad(|r| r.user = Some("root".into())));
        assert!(bad(|r| r.add_caps = vec!["CAP_NOPE".into()]));
    }
}
