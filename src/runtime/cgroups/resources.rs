//! Conversions from OCI resource values to the strings cgroup files take, shared by v1 and v2.
//! Pure functions: no file access, so they are unit-tested directly.
use super::CgroupError;
use oci_spec::runtime::{LinuxDeviceCgroup, LinuxDeviceType};

/// Below one page the kernel rounds a memory limit down to zero pages, and every process in
/// the cgroup is OOM-killed on its first allocation.
pub(crate) const MIN_MEMORY_LIMIT: i64 = 4096;

/// A memory limit in bytes as the kernel takes it: `-1` (or any negative) means no limit.
pub(crate) fn memory_limit(
    what: &str,
    value: i64,
    unlimited: &'static str,
) -> Result<String, CgroupError> {
    if value < 0 {
        if value != -1 {
            return Err(CgroupError::InvalidResource(format!(
                "{what} {value} is negative: use -1 for no limit or a byte count"
            )));
        }
        return Ok(unlimited.to_string());
    }
    if value < MIN_MEMORY_LIMIT {
        return Err(CgroupError::InvalidResource(format!(
            "{what} {value} is below the kernel's minimum of one page ({MIN_MEMORY_LIMIT} \
             bytes): processes could not allocate at all; give a limit in bytes, e.g. 268435456 \
             for 256 MiB"
        )));
    }
    Ok(value.to_string())
}

/// cgroup v2 `memory.swap.max` from OCI's `swap`, which (as on v1's `memory.memsw`) counts
/// memory plus swap: v2 limits swap alone, so the value is `swap - limit`.
pub(crate) fn swap_v2(swap: i64, limit: Option<i64>) -> Result<String, CgroupError> {
    if swap == -1 {
        return Ok("max".to_string());
    }
    if swap < 0 {
        return Err(CgroupError::InvalidResource(format!(
            "memory swap {swap} is negative: use -1 for unlimited swap"
        )));
    }
    match limit {
        Some(limit) if limit > 0 => {
            if swap < limit {
                Err(CgroupError::InvalidResource(format!(
                    "memory swap {swap} is below the memory limit {limit}: swap counts memory \
                     plus swap, so it must be at least the memory limit (equal means no swap)"
                )))
            } else {
                Ok((swap - limit).to_string())
            }
        }
        _ => Err(CgroupError::InvalidResource(format!(
            "memory swap {swap} needs a memory limit in the same request on cgroup v2 (swap \
             counts memory plus swap): set linux.resources.memory.limit too"
        ))),
    }
}

/// CPU shares (v1, 2..=262144, default 1024) to cgroup v2 `cpu.weight` (1..=10000, default
/// 100), the linear mapping runc and crun use so both ends of the ranges line up.
pub(crate) fn cpu_weight_from_shares(shares: u64) -> u64 {
    let shares = shares.clamp(2, 262_144);
    1 + ((shares - 2) * 9999) / 262_142
}

/// blkio weight (v1, 10..=1000) to cgroup v2 `io.weight` (1..=10000), linear as in runc.
pub(crate) fn io_weight_from_blkio(weight: u16) -> u64 {
    let weight = u64::from(weight.clamp(10, 1000));
    1 + ((weight - 10) * 9999) / 990
}

/// cgroup v2 `cpu.max`: `$QUOTA $PERIOD`, quota `max` when unlimited.
pub(crate) fn cpu_max(quota: Option<i64>, period: Option<u64>) -> Option<String> {
    let quota = quota.filter(|q| *q != 0);
    let period = period.filter(|p| *p != 0);
    if quota.is_none() && period.is_none() {
        return None;
    }
    let mut value = match quota {
        Some(q) if q > 0 => q.to_string(),
        _ => "max".to_string(),
    };
    if let Some(p) = period {
        value.push(' ');
        value.push_str(&p.to_string());
    }
    Some(value)
}

/// `pids.max`: OCI's 0 means unset, negative means unlimited.
pub(crate) fn pids_max(limit: i64) -> Option<String> {
    match limit {
        0 => None,
        l if l < 0 => Some("max".to_string()),
        l => Some(l.to_string()),
    }
}

/// The kernel's name of a huge page size given in kB (as /sys/kernel/mm/hugepages lists
/// them): `2MB`, `1GB`, `64KB`, the names the hugetlb controller's files carry.
pub(crate) fn hugepage_size_name(kb: u64) -> String {
    match kb {
        kb if kb >= 1 << 20 => format!("{}GB", kb >> 20),
        kb if kb >= 1 << 10 => format!("{}MB", kb >> 10),
        kb => format!("{kb}KB"),
    }
}

/// Validate an OCI hugepage size such as `2MB` or `1GB` against the sizes the kernel offers
/// (`offered`, as [`hugepage_size_name`] spells them). The size becomes part of a file name
/// (`hugetlb.2MB.max`), so anything else could name an unrelated file.
pub(crate) fn hugepage_size<'a>(size: &'a str, offered: &[String]) -> Result<&'a str, CgroupError> {
    let digits = size.trim_end_matches(['K', 'M', 'G', 'B']);
    let unit = &size[digits.len()..];
    let valid = !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && matches!(unit, "KB" | "MB" | "GB");
    if !valid {
        return Err(CgroupError::InvalidResource(format!(
            "hugepage size {size:?} is not a kernel page size name: use e.g. \"2MB\" or \"1GB\""
        )));
    }
    if offered.iter().any(|o| o == size) {
        return Ok(size);
    }
    Err(CgroupError::InvalidResource(if offered.is_empty() {
        format!(
            "hugepage size {size} is not offered: this kernel lists no huge page sizes in \
             /sys/kernel/mm/hugepages (no hugetlbfs support); drop linux.resources.hugepageLimits"
        )
    } else {
        format!(
            "hugepage size {size} is not offered by this kernel (/sys/kernel/mm/hugepages has \
             {}): use one of those",
            offered.join(", ")
        )
    }))
}

/// Device kinds the device controller distinguishes; `u` (unbuffered char) is a char device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DeviceKind {
    All,
    Char,
    Block,
}

pub(crate) const ACCESS_MKNOD: u8 = 1;
pub(crate) const ACCESS_READ: u8 = 2;
pub(crate) const ACCESS_WRITE: u8 = 4;
pub(crate) const ACCESS_ALL: u8 = ACCESS_MKNOD | ACCESS_READ | ACCESS_WRITE;

/// One OCI device rule, checked and normalised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DeviceRule {
    pub allow: bool,
    pub kind: DeviceKind,
    /// None: any major.
    pub major: Option<u32>,
    /// None: any minor.
    pub minor: Option<u32>,
    /// Bits of ACCESS_*.
    pub access: u8,
}

impl DeviceRule {
    /// Matches every device for every access: resets the whole rule set.
    pub fn is_total(&self) -> bool {
        self.kind == DeviceKind::All
            && self.major.is_none()
            && self.minor.is_none()
            && self.access == ACCESS_ALL
    }

    /// Matches every device (of any kind) for the given access bit.
    pub fn covers_everything_for(&self, bit: u8) -> bool {
        self.kind == DeviceKind::All
            && self.major.is_none()
            && self.minor.is_none()
            && self.access & bit != 0
    }
}

fn device_number(what: &str, value: Option<i64>) -> Result<Option<u32>, CgroupError> {
    match value {
        None | Some(-1) => Ok(None),
        // Device numbers are at most 32 bits; the BPF program compares them as signed
        // 32-bit immediates, so keep them below 2^31 (real majors are < 4096).
        Some(v) if (0..=i64::from(i32::MAX)).contains(&v) => Ok(Some(v as u32)),
        Some(v) => Err(CgroupError::InvalidResource(format!(
            "device rule {what} number {v} is out of range: use 0..=2147483647, or leave it \
             out for any"
        ))),
    }
}

/// Normalise OCI device rules. FIFO (`p`) rules are dropped: the device controller does not
/// govern FIFOs, and the v1 kernel interface rejects them.
pub(crate) fn device_rules(rules: &[LinuxDeviceCgroup]) -> Result<Vec<DeviceRule>, CgroupError> {
    let mut out = Vec::with_capacity(rules.len());
    for rule in rules {
        let kind = match rule.typ().unwrap_or(LinuxDeviceType::A) {
            LinuxDeviceType::A => DeviceKind::All,
            LinuxDeviceType::C | LinuxDeviceType::U => DeviceKind::Char,
            LinuxDeviceType::B => DeviceKind::Block,
            LinuxDeviceType::P => continue,
        };
        let access = match rule.access().as_deref() {
            None | Some("") => ACCESS_ALL,
            Some(text) => {
                let mut bits = 0;
                for c in text.chars() {
                    bits |= match c {
                        'r' => ACCESS_READ,
                        'w' => ACCESS_WRITE,
                        'm' => ACCESS_MKNOD,
                        _ => {
                            return Err(CgroupError::InvalidResource(format!(
                                "device rule access {text:?} has {c:?}: use letters of \"rwm\""
                            )))
                        }
                    };
                }
                bits
            }
        };
        out.push(DeviceRule {
            allow: rule.allow(),
            kind,
            major: device_number("major", rule.major())?,
            minor: device_number("minor", rule.minor())?,
            access,
        });
    }
    Ok(out)
}

fn access_letters(access: u8) -> String {
    let mut s = String::with_capacity(3);
    if access & ACCESS_READ != 0 {
        s.push('r');
    }
    if access & ACCESS_WRITE != 0 {
        s.push('w');
    }
    if access & ACCESS_MKNOD != 0 {
        s.push('m');
    }
    s
}

/// cgroup v1 lines for one rule (written to `devices.allow` or `devices.deny`). The v1
/// interface only takes `a` as a whole (reset to allow-all or deny-all); a partial "all
/// kinds" rule becomes one char and one block line.
pub(crate) fn v1_device_lines(rule: &DeviceRule) -> Vec<String> {
    if rule.is_total() {
        return vec!["a".to_string()];
    }
    let number = |n: Option<u32>| n.map_or_else(|| "*".to_string(), |n| n.to_string());
    let rest = format!(
        "{}:{} {}",
        number(rule.major),
        number(rule.minor),
        access_letters(rule.access)
    );
    match rule.kind {
        DeviceKind::Char => vec![format!("c {rest}")],
        DeviceKind::Block => vec![format!("b {rest}")],
        DeviceKind::All => vec![format!("c {rest}"), format!("b {rest}")],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::LinuxDeviceCgroupBuilder;

    fn rule(
        allow: bool,
        typ: LinuxDeviceType,
        major: i64,
        minor: i64,
        access: &str,
    ) -> LinuxDeviceCgroup {
        let mut b = LinuxDeviceCgroupBuilder::default()
            .allow(allow)
            .typ(typ)
            .access(access);
        if major >= 0 {
            b = b.major(major);
        }
        if minor >= 0 {
            b = b.minor(minor);
        }
        b.build().unwrap()
    }

    #[test]
    fn shares_map_onto_weight_range_ends_and_default() {
        assert_eq!(cpu_weight_from_shares(2), 1);
        assert_eq!(cpu_weight_from_shares(262_144), 10_000);
        assert_eq!(cpu_weight_from_shares(1024), 39);
        // Out-of-range shares are clamped instead of overflowing.
        assert_eq!(cpu_weight_from_shares(0), 1);
        assert_eq!(cpu_weight_from_shares(u64::MAX), 10_000);
    }

    #[test]
    fn blkio_weight_maps_onto_io_weight() {
        assert_eq!(io_weight_from_blkio(10), 1);
        assert_eq!(io_weight_from_blkio(1000), 10_000);
        assert_eq!(io_weight_from_blkio(500), 4950);
    }

    #[test]
    fn swap_is_converted_to_swap_only_on_v2() {
        assert_eq!(swap_v2(-1, Some(100 << 20)).unwrap(), "max");
        assert_eq!(
            swap_v2(300 << 20, Some(100 << 20)).unwrap(),
            (200 << 20).to_string()
        );
        assert_eq!(swap_v2(100 << 20, Some(100 << 20)).unwrap(), "0");
        let below = swap_v2(50 << 20, Some(100 << 20)).unwrap_err().to_string();
        assert!(below.contains("at least the memory limit"), "{below}");
        let alone = swap_v2(50 << 20, None).unwrap_err().to_string();
        assert!(alone.contains("memory.limit"), "{alone}");
        assert!(swap_v2(-5, Some(1 << 20)).is_err());
    }

    #[test]
    fn memory_limit_checks_minimum_and_unlimited() {
        assert_eq!(memory_limit("memory limit", -1, "max").unwrap(), "max");
        assert_eq!(memory_limit("memory limit", -1, "-1").unwrap(), "-1");
        assert_eq!(
            memory_limit("memory limit", 1 << 20, "max").unwrap(),
            "1048576"
        );
        let err = memory_limit("memory limit", 1000, "max")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("memory limit 1000 is below the kernel's minimum"),
            "{err}"
        );
        assert!(memory_limit("memory limit", -7, "max").is_err());
    }

    #[test]
    fn cpu_max_combinations() {
        assert_eq!(cpu_max(None, None), None);
        assert_eq!(cpu_max(Some(0), Some(0)), None);
        assert_eq!(
            cpu_max(Some(50_000), Some(100_000)).unwrap(),
            "50000 100000"
        );
        assert_eq!(cpu_max(Some(50_000), None).unwrap(), "50000");
        assert_eq!(cpu_max(Some(-1), Some(100_000)).unwrap(), "max 100000");
        assert_eq!(cpu_max(None, Some(20_000)).unwrap(), "max 20000");
    }

    #[test]
    fn pids_limit_semantics() {
        assert_eq!(pids_max(0), None);
        assert_eq!(pids_max(-1).unwrap(), "max");
        assert_eq!(pids_max(128).unwrap(), "128");
    }

    #[test]
    fn hugepage_sizes_cannot_name_other_files() {
        let offered = ["2MB".to_string(), "1GB".to_string()];
        assert_eq!(hugepage_size("2MB", &offered).unwrap(), "2MB");
        assert_eq!(hugepage_size("1GB", &offered).unwrap(), "1GB");
        for bad in ["2MB/../../x", "MB", "2mb", ""] {
            let e = hugepage_size(bad, &offered).unwrap_err().to_string();
            assert!(e.contains("not a kernel page size name"), "{bad:?}: {e}");
        }
    }

    #[test]
    fn hugepage_sizes_the_kernel_lacks_are_refused_with_those_it_has() {
        let offered = ["2MB".to_string(), "1GB".to_string()];
        let e = hugepage_size("4MB", &offered).unwrap_err().to_string();
        assert!(
            e.contains("4MB is not offered by this kernel") && e.contains("2MB, 1GB"),
            "{e}"
        );
        let e = hugepage_size("2MB", &[]).unwrap_err().to_string();
        assert!(e.contains("lists no huge page sizes"), "{e}");
    }

    #[test]
    fn hugepage_size_names_follow_the_kernel() {
        assert_eq!(hugepage_size_name(2048), "2MB");
        assert_eq!(hugepage_size_name(1_048_576), "1GB");
        assert_eq!(hugepage_size_name(64), "64KB");
        assert_eq!(hugepage_size_name(32_768), "32MB");
        assert_eq!(hugepage_size_name(16_777_216), "16GB");
    }

    #[test]
    fn device_rules_normalise_and_render_v1_lines() {
        let rules = device_rules(&[
            rule(false, LinuxDeviceType::A, -1, -1, "rwm"),
            rule(true, LinuxDeviceType::C, 1, 3, "rwm"),
            rule(true, LinuxDeviceType::U, 5, -1, "rw"),
            rule(true, LinuxDeviceType::P, 1, 1, "rwm"),
            rule(false, LinuxDeviceType::A, 7, -1, "m"),
        ])
        .unwrap();
        assert_eq!(rules.len(), 4, "FIFO rule dropped");
        assert!(rules[0].is_total() && !rules[0].allow);
        let lines: Vec<String> = rules.iter().flat_map(v1_device_lines).collect();
        assert_eq!(lines, ["a", "c 1:3 rwm", "c 5:* rw", "c 7:* m", "b 7:* m"]);
    }

    #[test]
    fn device_rules_reject_bad_input() {
        assert!(device_rules(&[rule(true, LinuxDeviceType::C, 1, 3, "rx")]).is_err());
        assert!(device_rules(&[rule(true, LinuxDeviceType::C, 1 << 40, 3, "r")]).is_err());
        // -1 is the conventional wildcard.
        let r = device_rules(&[LinuxDeviceCgroupBuilder::default()
            .allow(true)
            .major(-1)
            .build()
            .unwrap()])
        .unwrap();
        assert!(r[0].is_total());
    }
}
