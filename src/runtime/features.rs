//! What this runtime supports, as OCI features (`slipway-runtime features`), for engines that
//! ask before they use a runtime.
use std::collections::HashMap;

use oci_spec::runtime::{
    Arch, Features, FeaturesBuilder, LinuxFeatureBuilder, LinuxNamespaceType, LinuxSeccompAction,
};

use super::state::OCI_VERSION;

const HOOKS: &[&str] = &[
    "prestart",
    "createRuntime",
    "createContainer",
    "startContainer",
    "poststart",
    "poststop",
];

const MOUNT_OPTIONS: &[&str] = &[
    "async",
    "atime",
    "bind",
    "defaults",
    "dev",
    "diratime",
    "dirsync",
    "exec",
    "mand",
    "noatime",
    "nodev",
    "nodiratime",
    "noexec",
    "nomand",
    "norelatime",
    "nostrictatime",
    "nosuid",
    "private",
    "rbind",
    "relatime",
    "remount",
    "ro",
    "rprivate",
    "rshared",
    "rslave",
    "runbindable",
    "rw",
    "shared",
    "slave",
    "strictatime",
    "suid",
    "sync",
    "tmpcopyup",
    "unbindable",
];

pub fn features() -> Features {
    let strings = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    use LinuxNamespaceType::*;
    let seccomp = serde_json::from_value::<oci_spec::runtime::Seccomp>(serde_json::json!({
        "enabled": true,
        "actions": [
            LinuxSeccompAction::ScmpActAllow, LinuxSeccompAction::ScmpActErrno,
            LinuxSeccompAction::ScmpActKill, LinuxSeccompAction::ScmpActKillProcess,
            LinuxSeccompAction::ScmpActKillThread, LinuxSeccompAction::ScmpActLog,
            LinuxSeccompAction::ScmpActTrace, LinuxSeccompAction::ScmpActTrap,
        ],
        "operators": ["SCMP_CMP_EQ", "SCMP_CMP_GE", "SCMP_CMP_GT", "SCMP_CMP_LE", "SCMP_CMP_LT",
            "SCMP_CMP_MASKED_EQ", "SCMP_CMP_NE"],
        "archs": [Arch::ScmpArchX86, Arch::ScmpArchX86_64, Arch::ScmpArchX32,
            Arch::ScmpArchAarch64, Arch::ScmpArchArm],
        "supportedFlags": ["SECCOMP_FILTER_FLAG_TSYNC", "SECCOMP_FILTER_FLAG_LOG",
            "SECCOMP_FILTER_FLAG_SPEC_ALLOW"],
    }))
    .expect("the seccomp feature list is well-formed");
    let cgroup = serde_json::from_value::<oci_spec::runtime::Cgroup>(
        serde_json::json!({"v1": true, "v2": true, "systemd": false, "systemdUser": false}),
    )
    .expect("the cgroup feature list is well-formed");
    let linux = LinuxFeatureBuilder::default()
        .namespaces(vec![Cgroup, Ipc, Mount, Network, Pid, User, Uts])
        .capabilities(
            caps::all()
                .iter()
                .map(|c| c.to_string())
                .collect::<Vec<_>>(),
        )
        .cgroup(cgroup)
        .seccomp(seccomp)
        .build()
        .expect("linux features");
    FeaturesBuilder::default()
        .oci_version_min("1.0.0")
        .oci_version_max(OCI_VERSION)
        .hooks(strings(HOOKS))
        .mount_options(strings(MOUNT_OPTIONS))
        .linux(linux)
        .annotations(HashMap::from([(
            "org.opencontainers.runtime-spec.features.runtime".to_string(),
            "slipway-runtime".to_string(),
        )]))
        .build()
        .expect("features")
}

#[cfg(test)]
mod tests {
    #[test]
    fn features_name_the_version_and_the_hooks() {
        let v = serde_json::to_value(super::features()).unwrap();
        assert_eq!(v["ociVersionMax"], super::OCI_VERSION);
        assert_eq!(v["hooks"].as_array().unwrap().len(), 6);
        assert_eq!(v["linux"]["seccomp"]["enabled"], true);
        assert_eq!(v["linux"]["cgroup"]["v1"], true);
    }
}
