//! OCI mount options -> mount(2) flags, propagation and filesystem data.
use nix::mount::MsFlags;

#[derive(Debug, Clone, PartialEq)]
pub struct MountOptions {
    /// Flags set by the options (`ro`, `nosuid`, ...).
    pub flags: MsFlags,
    /// Propagation changes applied after the mount (`rprivate`, `shared`, ...).
    pub propagation: Vec<MsFlags>,
    /// Comma-joined options the filesystem itself interprets (`mode=755`, `size=64k`).
    pub data: String,
    pub bind: bool,
    pub recursive: bool,
}

impl Default for MountOptions {
    fn default() -> Self {
        MountOptions {
            flags: MsFlags::empty(),
            propagation: Vec::new(),
            data: String::new(),
            bind: false,
            recursive: false,
        }
    }
}

/// Parse OCI mount options. Unknown words go to the filesystem as data, as runc does, so
/// filesystem-specific options keep working; the kernel rejects those it does not know.
pub fn parse(options: &[String]) -> MountOptions {
    let mut o = MountOptions::default();
    let mut data = Vec::new();
    for opt in options {
        let set = |o: &mut MountOptions, f: MsFlags| o.flags.insert(f);
        let clear = |o: &mut MountOptions, f: MsFlags| o.flags.remove(f);
        match opt.as_str() {
            "defaults" | "tmpcopyup" | "x-mount.mkdir" => {}
            "ro" => set(&mut o, MsFlags::MS_RDONLY),
            "rw" => clear(&mut o, MsFlags::MS_RDONLY),
            "nosuid" => set(&mut o, MsFlags::MS_NOSUID),
            "suid" => clear(&mut o, MsFlags::MS_NOSUID),
            "nodev" => set(&mut o, MsFlags::MS_NODEV),
            "dev" => clear(&mut o, MsFlags::MS_NODEV),
            "noexec" => set(&mut o, MsFlags::MS_NOEXEC),
            "exec" => clear(&mut o, MsFlags::MS_NOEXEC),
            "sync" => set(&mut o, MsFlags::MS_SYNCHRONOUS),
            "async" => clear(&mut o, MsFlags::MS_SYNCHRONOUS),
            "dirsync" => set(&mut o, MsFlags::MS_DIRSYNC),
            "remount" => set(&mut o, MsFlags::MS_REMOUNT),
            "mand" => set(&mut o, MsFlags::MS_MANDLOCK),
            "nomand" => clear(&mut o, MsFlags::MS_MANDLOCK),
            "atime" => clear(&mut o, MsFlags::MS_NOATIME),
            "noatime" => set(&mut o, MsFlags::MS_NOATIME),
            "diratime" => clear(&mut o, MsFlags::MS_NODIRATIME),
            "nodiratime" => set(&mut o, MsFlags::MS_NODIRATIME),
            "relatime" => set(&mut o, MsFlags::MS_RELATIME),
            "norelatime" => clear(&mut o, MsFlags::MS_RELATIME),
            "strictatime" => set(&mut o, MsFlags::MS_STRICTATIME),
            "nostrictatime" => clear(&mut o, MsFlags::MS_STRICTATIME),
            "bind" => o.bind = true,
            "rbind" => {
                o.bind = true;
                o.recursive = true;
            }
            "private" => o.propagation.push(MsFlags::MS_PRIVATE),
            "rprivate" => o.propagation.push(MsFlags::MS_PRIVATE | MsFlags::MS_REC),
            "shared" => o.propagation.push(MsFlags::MS_SHARED),
            "rshared" => o.propagation.push(MsFlags::MS_SHARED | MsFlags::MS_REC),
            "slave" => o.propagation.push(MsFlags::MS_SLAVE),
            "rslave" => o.propagation.push(MsFlags::MS_SLAVE | MsFlags::MS_REC),
            "unbindable" => o.propagation.push(MsFlags::MS_UNBINDABLE),
            "runbindable" => o.propagation.push(MsFlags::MS_UNBINDABLE | MsFlags::MS_REC),
            other => data.push(other.to_string()),
        }
    }
    o.data = data.join(",");
    o
}

/// Parse a rootfsPropagation value.
pub fn propagation(value: &str) -> Option<MsFlags> {
    parse(&[value.to_string()]).propagation.first().copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn flags_propagation_and_data() {
        let o = parse(&s(&[
            "rbind",
            "ro",
            "nosuid",
            "rprivate",
            "mode=755",
            "size=65536k",
        ]));
        assert!(o.bind && o.recursive);
        assert_eq!(o.flags, MsFlags::MS_RDONLY | MsFlags::MS_NOSUID);
        assert_eq!(o.propagation, vec![MsFlags::MS_PRIVATE | MsFlags::MS_REC]);
        assert_eq!(o.data, "mode=755,size=65536k");
        let o = parse(&s(&["ro", "rw"]));
        assert!(o.flags.is_empty());
    }
}
