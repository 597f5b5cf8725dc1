//! The cgroup v2 device controller: v2 has no `devices.allow` file; access is decided by a
//! BPF_PROG_TYPE_CGROUP_DEVICE program attached to the cgroup. slipway assembles that program
//! itself from the OCI rules (a few dozen instructions, no compiler or libbpf needed) and
//! attaches it with the raw bpf(2) syscall.
//!
//! Semantics (same as runc and crun): rules are read in order and the last rule that matches
//! a request decides it; a request no rule matches is denied. A request may ask for several
//! accesses at once (open for read+write asks for both): it is allowed only if each asked
//! access is allowed on its own, so the program decides every access bit separately.
use super::resources::{
    DeviceKind, DeviceRule, ACCESS_ALL, ACCESS_MKNOD, ACCESS_READ, ACCESS_WRITE,
};
use super::CgroupError;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

/// One eBPF instruction, in the kernel's `struct bpf_insn` layout.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Insn {
    pub code: u8,
    /// dst_reg in the low nibble, src_reg in the high nibble.
    pub regs: u8,
    pub off: i16,
    pub imm: i32,
}

// Opcodes used (classic encodings: class | op | source).
const LDX_MEM_W: u8 = 0x61; // dst = *(u32 *)(src + off)
const ALU32_AND_K: u8 = 0x54; // dst32 &= imm
const ALU32_RSH_K: u8 = 0x74; // dst32 >>= imm
const ALU64_MOV_K: u8 = 0xb7; // dst = imm
const ALU64_MOV_X: u8 = 0xbf; // dst = src
const JMP_JA: u8 = 0x05; // pc += off
const JMP_JEQ_K: u8 = 0x15; // if dst == imm: pc += off
const JMP_JNE_K: u8 = 0x55; // if dst != imm: pc += off
const JMP_EXIT: u8 = 0x95;

// struct bpf_cgroup_dev_ctx { u32 access_type; u32 major; u32 minor; }, with access_type =
// (access << 16) | device type.
const DEV_BLOCK: i32 = 1;
const DEV_CHAR: i32 = 2;

// Register use: r1 = context (then scratch), r2 = device type, r3 = access, r4 = major,
// r5 = minor, r0 = verdict.
const R0: u8 = 0;
const R1: u8 = 1;
const R2: u8 = 2;
const R3: u8 = 3;
const R4: u8 = 4;
const R5: u8 = 5;

fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn {
        code,
        regs: (src << 4) | dst,
        off,
        imm,
    }
}

/// Small assembler with forward jumps patched once their target is known.
struct Assembler {
    insns: Vec<Insn>,
}

impl Assembler {
    fn emit(&mut self, i: Insn) -> usize {
        self.insns.push(i);
        self.insns.len() - 1
    }
    /// Point the jump at `at` to the next instruction to be emitted.
    fn patch_to_here(&mut self, at: usize) {
        let off = self.insns.len() - at - 1;
        self.insns[at].off = off as i16;
    }
    fn verdict(&mut self, allow: bool) {
        self.emit(insn(ALU64_MOV_K, R0, 0, 0, i32::from(allow)));
        self.emit(insn(JMP_EXIT, 0, 0, 0, 0));
    }
}

/// Assemble the device program for `rules` (OCI order).
pub fn build_program(rules: &[DeviceRule]) -> Result<Vec<Insn>, CgroupError> {
    let mut asm = Assembler {
        insns: Vec::with_capacity(16 + rules.len() * 8),
    };
    asm.emit(insn(LDX_MEM_W, R2, R1, 0, 0));
    asm.emit(insn(ALU32_AND_K, R2, 0, 0, 0xffff));
    asm.emit(insn(LDX_MEM_W, R3, R1, 0, 0));
    asm.emit(insn(ALU32_RSH_K, R3, 0, 0, 16));
    asm.emit(insn(LDX_MEM_W, R4, R1, 4, 0));
    asm.emit(insn(LDX_MEM_W, R5, R1, 8, 0));

    // When every rule covers all three accesses, one pass decides the whole request; otherwise
    // one pass per access bit asked for.
    let passes: &[u8] = if rules.iter().all(|r| r.access == ACCESS_ALL) {
        &[ACCESS_ALL]
    } else {
        &[ACCESS_MKNOD, ACCESS_READ, ACCESS_WRITE]
    };
    let mut section_ends = Vec::new();
    // The kernel's verifier refuses unreachable instructions: stop emitting once a pass has
    // decided every request with no jump past its end.
    let mut reachable = true;
    for &bit in passes {
        if !reachable {
            break;
        }
        let skip_pass = if bit == ACCESS_ALL {
            None
        } else {
            asm.emit(insn(ALU64_MOV_X, R1, R3, 0, 0));
            asm.emit(insn(ALU32_AND_K, R1, 0, 0, i32::from(bit)));
            Some(asm.emit(insn(JMP_JEQ_K, R1, 0, 0, 0)))
        };
        let mut allowed_jumps = Vec::new();
        let mut decided = false;
        for rule in rules.iter().rev().filter(|r| r.access & bit != 0) {
            if rule.covers_everything_for(bit) {
                // Matches every remaining request: earlier rules can never decide.
                if rule.allow {
                    allowed_jumps.push(asm.emit(insn(JMP_JA, 0, 0, 0, 0)));
                } else {
                    asm.verdict(false);
                }
                decided = true;
                break;
            }
            let mut mismatch_jumps = Vec::with_capacity(3);
            match rule.kind {
                DeviceKind::All => {}
                DeviceKind::Char => {
                    mismatch_jumps.push(asm.emit(insn(JMP_JNE_K, R2, 0, 0, DEV_CHAR)))
                }
                DeviceKind::Block => {
                    mismatch_jumps.push(asm.emit(insn(JMP_JNE_K, R2, 0, 0, DEV_BLOCK)))
                }
            }
            if let Some(major) = rule.major {
                mismatch_jumps.push(asm.emit(insn(JMP_JNE_K, R4, 0, 0, major as i32)));
            }
            if let Some(minor) = rule.minor {
                mismatch_jumps.push(asm.emit(insn(JMP_JNE_K, R5, 0, 0, minor as i32)));
            }
            if rule.allow {
                allowed_jumps.push(asm.emit(insn(JMP_JA, 0, 0, 0, 0)));
            } else {
                asm.verdict(false);
            }
            for j in mismatch_jumps {
                asm.patch_to_here(j);
            }
        }
        if !decided {
            // No rule matched this access: default deny.
            asm.verdict(false);
        }
        section_ends.extend(allowed_jumps);
        if let Some(j) = skip_pass {
            section_ends.push(j);
        }
        reachable = !section_ends.is_empty();
        // Every jump to "this access is allowed" lands at the start of the next pass.
        for j in section_ends.drain(..) {
            asm.patch_to_here(j);
        }
    }
    if reachable {
        asm.verdict(true);
    }
    if asm.insns.len() > 1_000_000 {
        return Err(CgroupError::InvalidResource(format!(
            "{} device rules make a device program too large for the kernel: merge rules",
            rules.len()
        )));
    }
    if asm.insns.len() > i16::MAX as usize {
        return Err(CgroupError::InvalidResource(format!(
            "{} device rules need jumps longer than BPF allows: use fewer rules",
            rules.len()
        )));
    }
    Ok(asm.insns)
}

// bpf(2) commands, program and attach types, from <linux/bpf.h>.
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_ATTACH: libc::c_long = 8;
const BPF_PROG_DETACH: libc::c_long = 9;
const BPF_PROG_GET_FD_BY_ID: libc::c_long = 13;
const BPF_PROG_QUERY: libc::c_long = 16;
const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
const BPF_CGROUP_DEVICE: u32 = 6;
const BPF_F_ALLOW_MULTI: u32 = 2;

/// `union bpf_attr` is 128+ bytes; each command reads its own prefix, the rest must be zero.
#[repr(C, align(8))]
struct BpfAttr([u8; 128]);

impl BpfAttr {
    fn new() -> Self {
        BpfAttr([0; 128])
    }
    fn put_u32(&mut self, at: usize, v: u32) {
        self.0[at..at + 4].copy_from_slice(&v.to_ne_bytes());
    }
    fn put_u64(&mut self, at: usize, v: u64) {
        self.0[at..at + 8].copy_from_slice(&v.to_ne_bytes());
    }
    fn get_u32(&self, at: usize) -> u32 {
        u32::from_ne_bytes(self.0[at..at + 4].try_into().unwrap_or([0; 4]))
    }
}

fn bpf(cmd: libc::c_long, attr: &mut BpfAttr) -> std::io::Result<libc::c_long> {
    // SAFETY: attr is a properly sized, zero-padded bpf_attr; pointers stored in it (insns,
    // license, log, id array) point to buffers the callers keep alive across this call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr.0.as_mut_ptr(),
            std::mem::size_of::<BpfAttr>() as libc::c_uint,
        )
    };
    if rc < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

fn bpf_fd(cmd: libc::c_long, attr: &mut BpfAttr) -> std::io::Result<OwnedFd> {
    let fd = bpf(cmd, attr)?;
    // SAFETY: on success these commands return a new file descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

fn load(program: &[Insn], dir: &Path) -> Result<OwnedFd, CgroupError> {
    let license = b"Apache-2.0\0";
    let attempt = |log: Option<&mut Vec<u8>>| {
        let mut attr = BpfAttr::new();
        attr.put_u32(0, BPF_PROG_TYPE_CGROUP_DEVICE);
        attr.put_u32(4, program.len() as u32);
        attr.put_u64(8, program.as_ptr() as u64);
        attr.put_u64(16, license.as_ptr() as u64);
        if let Some(log) = log {
            attr.put_u32(24, 1); // log_level
            attr.put_u32(28, log.len() as u32);
            attr.put_u64(32, log.as_mut_ptr() as u64);
        }
        let name = b"slipway_dev";
        attr.0[48..48 + name.len()].copy_from_slice(name); // prog_name
        bpf_fd(BPF_PROG_LOAD, &mut attr)
    };
    attempt(None).map_err(|e| {
        // Load again with the verifier log only on failure: logging costs time.
        let mut log = vec![0u8; 64 * 1024];
        let _ = attempt(Some(&mut log));
        let end = log.iter().position(|&b| b == 0).unwrap_or(0);
        let verifier = String::from_utf8_lossy(&log[..end]);
        let hint = match e.raw_os_error() {
            Some(libc::EPERM) => "; loading BPF programs needs CAP_SYS_ADMIN (or CAP_BPF)",
            _ => "",
        };
        CgroupError::Bpf {
            path: dir.to_path_buf(),
            msg: format!(
                "loading the device program ({} instructions) failed: {e}{hint}; verifier: {}",
                program.len(),
                verifier.trim()
            ),
        }
    })
}

/// IDs of the device programs already attached to the cgroup (from an earlier apply).
fn attached_ids(dir_fd: &OwnedFd) -> std::io::Result<Vec<u32>> {
    let mut ids = vec![0u32; 64];
    let mut attr = BpfAttr::new();
    attr.put_u32(0, dir_fd.as_raw_fd() as u32);
    attr.put_u32(4, BPF_CGROUP_DEVICE);
    attr.put_u64(16, ids.as_mut_ptr() as u64);
    attr.put_u32(24, ids.len() as u32);
    bpf(BPF_PROG_QUERY, &mut attr)?;
    let count = attr.get_u32(24) as usize;
    ids.truncate(count.min(64));
    Ok(ids)
}

/// Load the program for `rules` and make it the cgroup's only device program. The new program
/// is attached before the old ones are detached, so there is no moment without a filter.
pub fn apply(dir: &Path, rules: &[DeviceRule]) -> Result<(), CgroupError> {
    let program = build_program(rules)?;
    let bpf_err = |what: &str, e: std::io::Error| CgroupError::Bpf {
        path: dir.to_path_buf(),
        msg: format!("{what}: {e}"),
    };
    let dir_file =
        std::fs::File::open(dir).map_err(|e| bpf_err("opening the cgroup directory", e))?;
    let dir_fd = OwnedFd::from(dir_file);
    let old = match attached_ids(&dir_fd) {
        Ok(ids) => ids,
        // EINVAL: kernels without query support for this type; nothing to replace then.
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Vec::new(),
        Err(e) => return Err(bpf_err("querying attached device programs", e)),
    };
    let prog = load(&program, dir)?;
    let mut attr = BpfAttr::new();
    attr.put_u32(0, dir_fd.as_raw_fd() as u32);
    attr.put_u32(4, prog.as_raw_fd() as u32);
    attr.put_u32(8, BPF_CGROUP_DEVICE);
    attr.put_u32(12, BPF_F_ALLOW_MULTI);
    bpf(BPF_PROG_ATTACH, &mut attr).map_err(|e| bpf_err("attaching the device program", e))?;
    for id in old {
        let mut attr = BpfAttr::new();
        attr.put_u32(0, id);
        let old_prog = match bpf_fd(BPF_PROG_GET_FD_BY_ID, &mut attr) {
            Ok(fd) => fd,
            // Detached meanwhile by someone else.
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => continue,
            Err(e) => return Err(bpf_err("opening a previous device program", e)),
        };
        let mut attr = BpfAttr::new();
        attr.put_u32(0, dir_fd.as_raw_fd() as u32);
        attr.put_u32(4, old_prog.as_raw_fd() as u32);
        attr.put_u32(8, BPF_CGROUP_DEVICE);
        match bpf(BPF_PROG_DETACH, &mut attr) {
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
            Err(e) => return Err(bpf_err("detaching the previous device program", e)),
        }
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Runs a device program on one request: an interpreter for exactly the opcodes
    /// `build_program` emits, so that tests check what the program decides, not only its shape.
    pub(crate) fn run(program: &[Insn], kind: i32, access: u8, major: u32, minor: u32) -> bool {
        let ctx = [((u32::from(access)) << 16) | kind as u32, major, minor];
        let mut r = [0u64; 11];
        let mut pc = 0usize;
        for _ in 0..100_000 {
            let i = program[pc];
            let (dst, src) = ((i.regs & 0xf) as usize, (i.regs >> 4) as usize);
            let imm = i.imm as i64 as u64;
            pc += 1;
            match i.code {
                LDX_MEM_W => {
                    assert_eq!(src, 1, "loads only from the context");
                    r[dst] = u64::from(ctx[(i.off / 4) as usize]);
                }
                ALU32_AND_K => r[dst] = (r[dst] as u32 & i.imm as u32) as u64,
                ALU32_RSH_K => r[dst] = ((r[dst] as u32) >> i.imm) as u64,
                ALU64_MOV_K => r[dst] = imm,
                ALU64_MOV_X => r[dst] = r[src],
                JMP_JA => pc = (pc as i64 + i64::from(i.off)) as usize,
                JMP_JEQ_K | JMP_JNE_K => {
                    if (r[dst] == imm) == (i.code == JMP_JEQ_K) {
                        pc = (pc as i64 + i64::from(i.off)) as usize;
                    }
                }
                JMP_EXIT => return r[0] == 1,
                other => panic!("unexpected opcode {other:#x}"),
            }
        }
        panic!("program did not terminate");
    }

    fn rule(
        allow: bool,
        kind: DeviceKind,
        major: Option<u32>,
        minor: Option<u32>,
        access: u8,
    ) -> DeviceRule {
        DeviceRule {
            allow,
            kind,
            major,
            minor,
            access,
        }
    }

    /// Reference model: per access bit, last matching rule wins, default deny.
    fn model(rules: &[DeviceRule], kind: i32, access: u8, major: u32, minor: u32) -> bool {
        [ACCESS_MKNOD, ACCESS_READ, ACCESS_WRITE]
            .iter()
            .filter(|b| access & **b != 0)
            .all(|&bit| {
                rules
                    .iter()
                    .rev()
                    .find(|r| {
                        r.access & bit != 0
                            && match r.kind {
                                DeviceKind::All => true,
                                DeviceKind::Char => kind == DEV_CHAR,
                                DeviceKind::Block => kind == DEV_BLOCK,
                            }
                            && r.major.is_none_or(|m| m == major)
                            && r.minor.is_none_or(|m| m == minor)
                    })
                    .is_some_and(|r| r.allow)
            })
    }

    #[test]
    fn exact_instructions_for_deny_all_then_allow_null() {
        let rules = [
            rule(false, DeviceKind::All, None, None, ACCESS_ALL),
            rule(true, DeviceKind::Char, Some(1), Some(3), ACCESS_ALL),
        ];
        let p = build_program(&rules).unwrap();
        let expected = vec![
            insn(LDX_MEM_W, R2, R1, 0, 0),
            insn(ALU32_AND_K, R2, 0, 0, 0xffff),
            insn(LDX_MEM_W, R3, R1, 0, 0),
            insn(ALU32_RSH_K, R3, 0, 0, 16),
            insn(LDX_MEM_W, R4, R1, 4, 0),
            insn(LDX_MEM_W, R5, R1, 8, 0),
            // c 1:3 rwm allow (last rule first)
            insn(JMP_JNE_K, R2, 0, 3, DEV_CHAR),
            insn(JMP_JNE_K, R4, 0, 2, 1),
            insn(JMP_JNE_K, R5, 0, 1, 3),
            insn(JMP_JA, 0, 0, 2, 0),
            // a *:* rwm deny: decides everything else
            insn(ALU64_MOV_K, R0, 0, 0, 0),
            insn(JMP_EXIT, 0, 0, 0, 0),
            insn(ALU64_MOV_K, R0, 0, 0, 1),
            insn(JMP_EXIT, 0, 0, 0, 0),
        ];
        assert_eq!(p, expected);
    }

    #[test]
    fn empty_rules_deny_everything() {
        let p = build_program(&[]).unwrap();
        assert!(!run(&p, DEV_CHAR, ACCESS_READ, 1, 3));
        assert!(!run(&p, DEV_BLOCK, ACCESS_MKNOD, 8, 0));
    }

    #[test]
    fn allow_all_rule_allows_everything() {
        let p = build_program(&[rule(true, DeviceKind::All, None, None, ACCESS_ALL)]).unwrap();
        assert!(run(&p, DEV_CHAR, ACCESS_READ | ACCESS_WRITE, 1, 3));
        assert!(run(&p, DEV_BLOCK, ACCESS_MKNOD, 8, 0));
    }

    #[test]
    fn per_access_rules_decide_each_bit() {
        // Typical OCI default shape, plus partial rules that need per-bit passes.
        let rules = [
            rule(false, DeviceKind::All, None, None, ACCESS_ALL),
            rule(true, DeviceKind::Char, Some(1), Some(3), ACCESS_ALL),
            rule(true, DeviceKind::Char, None, None, ACCESS_MKNOD),
            rule(true, DeviceKind::Block, None, None, ACCESS_MKNOD),
            rule(
                true,
                DeviceKind::Char,
                Some(5),
                None,
                ACCESS_READ | ACCESS_WRITE,
            ),
            rule(false, DeviceKind::Char, Some(5), Some(2), ACCESS_WRITE),
            rule(true, DeviceKind::Char, Some(136), None, ACCESS_READ),
        ];
        let p = build_program(&rules).unwrap();
        // Deny write on 5:2 while read stays allowed; a read+write open is denied.
        assert!(run(&p, DEV_CHAR, ACCESS_READ, 5, 2));
        assert!(!run(&p, DEV_CHAR, ACCESS_WRITE, 5, 2));
        assert!(!run(&p, DEV_CHAR, ACCESS_READ | ACCESS_WRITE, 5, 2));
        assert!(run(&p, DEV_CHAR, ACCESS_READ | ACCESS_WRITE, 5, 0));
        // Read-only pty: read yes, write no.
        assert!(run(&p, DEV_CHAR, ACCESS_READ, 136, 0));
        assert!(!run(&p, DEV_CHAR, ACCESS_READ | ACCESS_WRITE, 136, 0));
        // mknod of any char or block device is allowed, reading a disk is not.
        assert!(run(&p, DEV_BLOCK, ACCESS_MKNOD, 8, 0));
        assert!(!run(&p, DEV_BLOCK, ACCESS_READ, 8, 0));
        // Compare with the model over a grid of requests.
        for kind in [DEV_CHAR, DEV_BLOCK] {
            for access in 1..=7u8 {
                for major in [0, 1, 5, 8, 136, 4095] {
                    for minor in [0, 2, 3, 9] {
                        assert_eq!(
                            run(&p, kind, access, major, minor),
                            model(&rules, kind, access, major, minor),
                            "kind {kind} access {access} {major}:{minor}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn later_deny_overrides_earlier_allow() {
        let rules = [
            rule(true, DeviceKind::All, None, None, ACCESS_ALL),
            rule(false, DeviceKind::Block, Some(8), None, ACCESS_ALL),
        ];
        let p = build_program(&rules).unwrap();
        assert!(!run(&p, DEV_BLOCK, ACCESS_READ, 8, 1));
        assert!(run(&p, DEV_BLOCK, ACCESS_READ, 9, 1));
        assert!(run(&p, DEV_CHAR, ACCESS_READ, 8, 1));
    }

    #[test]
    fn rules_before_a_total_rule_are_not_emitted() {
        let many: Vec<DeviceRule> = (0..50)
            .map(|m| rule(true, DeviceKind::Char, Some(m), None, ACCESS_ALL))
            .chain([rule(false, DeviceKind::All, None, None, ACCESS_ALL)])
            .collect();
        let p = build_program(&many).unwrap();
        // Loads, then the deny verdict; no allow verdict, since nothing could reach it.
        assert_eq!(p.len(), 6 + 2);
        assert!(!run(&p, DEV_CHAR, ACCESS_READ, 3, 0));
    }

    /// The verifier refuses programs with unreachable instructions: walk every path.
    fn assert_all_reachable(p: &[Insn]) {
        let mut seen = vec![false; p.len()];
        let mut todo = vec![0usize];
        while let Some(pc) = todo.pop() {
            if pc >= p.len() || seen[pc] {
                continue;
            }
            seen[pc] = true;
            let i = p[pc];
            let target = (pc as i64 + 1 + i64::from(i.off)) as usize;
            match i.code {
                JMP_EXIT => {}
                JMP_JA => todo.push(target),
                JMP_JEQ_K | JMP_JNE_K => {
                    todo.push(pc + 1);
                    todo.push(target);
                }
                _ => todo.push(pc + 1),
            }
        }
        let unreachable: Vec<usize> = (0..p.len()).filter(|i| !seen[*i]).collect();
        assert!(
            unreachable.is_empty(),
            "unreachable instructions {unreachable:?}"
        );
    }

    #[test]
    fn no_program_has_unreachable_instructions() {
        let cases: Vec<Vec<DeviceRule>> = vec![
            vec![],
            vec![rule(false, DeviceKind::All, None, None, ACCESS_ALL)],
            vec![rule(true, DeviceKind::All, None, None, ACCESS_ALL)],
            vec![
                rule(false, DeviceKind::All, None, None, ACCESS_ALL),
                rule(true, DeviceKind::Char, Some(1), Some(3), ACCESS_ALL),
                rule(
                    true,
                    DeviceKind::Char,
                    Some(136),
                    None,
                    ACCESS_READ | ACCESS_WRITE,
                ),
            ],
            vec![rule(false, DeviceKind::All, None, None, ACCESS_READ)],
        ];
        for rules in cases {
            assert_all_reachable(&build_program(&rules).unwrap());
        }
    }
}
