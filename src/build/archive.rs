//! Tar archives read and written defensively. Extraction never leaves its
//! directory: it never follows a symlink, and refuses absolute paths, `..`,
//! symlinks whose relative target climbs out, hard links to anything but a
//! file it extracted, and device nodes. Writing keeps long names, numeric
//! owners and symlinks, drops setuid/setgid bits and never reads through a
//! symlink. Used by the slug store and for buildpack tarballs.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::fs::{self, OpenOptions};
use std::io::{self, BufReader, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use crate::sys::io::{at, walking, PathError};

/// Longest name that fits a tar header without a GNU long-name entry.
const TAR_NAME_FIELD: usize = 100;

/// What can go wrong reading or writing an archive.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error(transparent)]
    Io(#[from] PathError),
    #[error("archive entry {entry:?} refused: {reason}; the archive is damaged or made to escape its directory, and nothing of it was kept")]
    HostileEntry { entry: String, reason: String },
    #[error("archive {path} is unpacked {size} bytes, over the limit of {limit} bytes; use a smaller archive")]
    ArchiveTooLarge {
        path: PathBuf,
        size: u64,
        limit: u64,
    },
}

type Result<T> = std::result::Result<T, ArchiveError>;

/// Removes `path` (file or tree), first giving directories back their write
/// bit so that a read-only tree can be removed by a non-root owner too.
/// Never follows symlinks.
pub fn remove_tree(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
        Ok(meta) if meta.is_dir() => {
            for entry in walkdir::WalkDir::new(path).follow_links(false) {
                let Ok(entry) = entry else { continue };
                if entry.file_type().is_dir() {
                    let _ = fs::set_permissions(entry.path(), fs::Permissions::from_mode(0o700));
                }
            }
            fs::remove_dir_all(path)
        }
        Ok(_) => fs::remove_file(path),
    }
}

/// Joins the normal components of a relative symlink target onto the
/// symlink's directory (both as components below the root) and tells
/// whether the result stays inside the root.
fn relative_target_stays_inside(link_dir: &[&[u8]], target: &[u8]) -> bool {
    let mut depth = link_dir.len();
    for part in target.split(|&b| b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => {
                if depth == 0 {
                    return false;
                }
                depth -= 1;
            }
            _ => depth += 1,
        }
    }
    true
}

/// Why a symlink target would leave the tree, or `None` when it is fine.
/// Absolute targets are container paths and allowed.
pub fn symlink_problem(link_components: &[&[u8]], target: &[u8]) -> Option<String> {
    if target.is_empty() {
        return Some("symlink with an empty target".into());
    }
    if target.contains(&0) {
        return Some("symlink target contains a NUL byte".into());
    }
    if target.starts_with(b"/") {
        return None;
    }
    let dir = &link_components[..link_components.len().saturating_sub(1)];
    if relative_target_stays_inside(dir, target) {
        None
    } else {
        Some(format!(
            "symlink to {:?} points outside the tree",
            String::from_utf8_lossy(target)
        ))
    }
}

/// One thing to put in the archive, found by the walk before packing.
pub struct PackItem {
    pub path: PathBuf,
    /// `./relative`, plus a trailing `/` for directories.
    pub name: Vec<u8>,
    pub meta: fs::Metadata,
    pub link_target: Option<PathBuf>,
}

/// Appends an entry whose name (and link name) may be longer than the tar
/// header field, with GNU long-name entries, keeping the `./` prefix that the
/// tar crate's path helpers would strip.
fn append_named<W: Write, R: Read>(
    builder: &mut tar::Builder<W>,
    header: &mut tar::Header,
    name: &[u8],
    link: Option<&[u8]>,
    data: R,
) -> io::Result<()> {
    fn long_entry<W: Write>(
        builder: &mut tar::Builder<W>,
        kind: tar::EntryType,
        bytes: &[u8],
    ) -> io::Result<()> {
        let mut long = tar::Header::new_gnu();
        let field = &mut long.as_old_mut().name;
        field[..13].copy_from_slice(b"././@LongLink");
        long.set_mode(0o644);
        long.set_uid(0);
        long.set_gid(0);
        long.set_mtime(0);
        long.set_entry_type(kind);
        let mut data = bytes.to_vec();
        data.push(0);
        long.set_size(data.len() as u64);
        long.set_cksum();
        builder.append(&long, &data[..])
    }
    fn fill(field: &mut [u8], bytes: &[u8]) {
        field.fill(0);
        let n = bytes.len().min(field.len());
        field[..n].copy_from_slice(&bytes[..n]);
    }
    if name.len() > TAR_NAME_FIELD {
        long_entry(builder, tar::EntryType::GNULongName, name)?;
    }
    fill(&mut header.as_old_mut().name, name);
    if let Some(link) = link {
        if link.len() > TAR_NAME_FIELD {
            long_entry(builder, tar::EntryType::GNULongLink, link)?;
        }
        fill(&mut header.as_old_mut().linkname, link);
    }
    header.set_cksum();
    builder.append(header, data)
}

/// A tar header for `meta`: numeric owner, mtime (no later than `clamp`, when given: what a
/// build made gets the source's newest time, so the same source packs to the same bytes),
/// permission bits without setuid/setgid (the unpacked slug sits on the host, where a
/// setuid-root file would be a way up for any host user who can reach it).
fn header_for(
    meta: &fs::Metadata,
    kind: tar::EntryType,
    size: u64,
    clamp: Option<u64>,
) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(kind);
    header.set_mode(meta.mode() & 0o1777);
    header.set_uid(meta.uid() as u64);
    header.set_gid(meta.gid() as u64);
    let mtime = meta.mtime().max(0) as u64;
    header.set_mtime(clamp.map_or(mtime, |c| mtime.min(c)));
    header.set_size(size);
    header
}

/// Reads exactly `expected` bytes from `inner`, failing when the file
/// changed size after it was measured (the archive would be corrupt).
struct ExactReader<R: Read> {
    inner: R,
    remaining: u64,
    path: PathBuf,
}

impl<R: Read> Read for ExactReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 {
            return Ok(0);
        }
        let want = buf.len().min(self.remaining as usize);
        let n = self.inner.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("{} shrank while it was packed", self.path.display()),
            ));
        }
        self.remaining -= n as u64;
        Ok(n)
    }
}

pub fn write_item<W: Write>(
    builder: &mut tar::Builder<W>,
    item: &PackItem,
    mtime_clamp: Option<u64>,
) -> Result<()> {
    let file_type = item.meta.file_type();
    let result = if file_type.is_dir() {
        let mut header = header_for(&item.meta, tar::EntryType::Directory, 0, mtime_clamp);
        append_named(builder, &mut header, &item.name, None, io::empty())
    } else if let Some(target) = &item.link_target {
        let mut header = header_for(&item.meta, tar::EntryType::Symlink, 0, mtime_clamp);
        let target = target.as_os_str().as_bytes();
        append_named(builder, &mut header, &item.name, Some(target), io::empty())
    } else {
        // O_NOFOLLOW: the walk saw a regular file; never read through a
        // symlink that replaced it since.
        let file = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&item.path)
            .map_err(at("opening", &item.path))?;
        let size = item.meta.len();
        let mut header = header_for(&item.meta, tar::EntryType::Regular, size, mtime_clamp);
        let reader = ExactReader {
            inner: BufReader::with_capacity(1 << 16, file),
            remaining: size,
            path: item.path.clone(),
        };
        append_named(builder, &mut header, &item.name, None, reader)
    };
    Ok(result.map_err(at("packing", &item.path))?)
}

/// How [`extract_tar`] treats what it writes.
#[derive(Debug, Clone)]
pub struct ExtractOptions {
    /// Give entries the numeric uid/gid of the archive (else the caller's).
    pub keep_owners: bool,
    /// Drop write bits from files (directories are made 0555 by the caller
    /// once everything is written, see [`make_read_only_dirs`]).
    pub read_only: bool,
    /// Refuse the archive once its regular files add up to more bytes.
    pub max_unpacked: Option<u64>,
}

/// A path inside an archive, checked and split into components.
fn archive_components(raw: &[u8]) -> std::result::Result<Vec<&[u8]>, String> {
    if raw.starts_with(b"/") {
        return Err("absolute path".into());
    }
    if raw.contains(&0) {
        return Err("path contains a NUL byte".into());
    }
    let mut parts = Vec::new();
    for part in raw.split(|&b| b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => return Err("path contains `..`".into()),
            _ => parts.push(part),
        }
    }
    Ok(parts)
}

fn join_components(root: &Path, parts: &[&[u8]]) -> PathBuf {
    let mut path = root.to_path_buf();
    for part in parts {
        path.push(OsStr::from_bytes(part));
    }
    path
}

/// Makes sure every parent of `parts` exists below `root` as a real
/// directory: a symlink on the way would let a later entry write outside.
fn ensure_parents(root: &Path, parts: &[&[u8]]) -> std::result::Result<(), String> {
    let mut path = root.to_path_buf();
    for part in &parts[..parts.len().saturating_sub(1)] {
        path.push(OsStr::from_bytes(part));
        match fs::symlink_metadata(&path) {
            Ok(meta) if meta.is_dir() => {}
            Ok(meta) if meta.file_type().is_symlink() => {
                return Err(format!(
                    "its path goes through the symlink {:?}",
                    path.strip_prefix(root).unwrap_or(&path)
                ))
            }
            Ok(_) => {
                return Err(format!(
                    "its parent {:?} is not a directory",
                    path.strip_prefix(root).unwrap_or(&path)
                ))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::create_dir(&path).map_err(|e| format!("creating {}: {e}", path.display()))?;
            }
            Err(e) => return Err(format!("checking {}: {e}", path.display())),
        }
    }
    Ok(())
}

/// Removes a non-directory at `path` so that an entry can take its place;
/// refuses to replace a directory.
fn clear_slot(path: &Path) -> std::result::Result<(), String> {
    match fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(format!("checking {}: {e}", path.display())),
        Ok(meta) if meta.is_dir() => Err("a directory of that name is already there".into()),
        Ok(_) => fs::remove_file(path).map_err(|e| format!("replacing {}: {e}", path.display())),
    }
}

/// Extracts a tar stream into the existing directory `dest` without ever
/// leaving it: entries with absolute paths or `..`, paths through symlinks,
/// symlinks whose relative target climbs out, hard links to anything but a
/// regular file already extracted, and device nodes or FIFOs are refused,
/// naming the entry. Setuid/setgid bits are dropped. Returns the reader, so
/// that the caller can read past the end of the archive.
pub fn extract_tar<R: Read>(reader: R, dest: &Path, options: &ExtractOptions) -> Result<R> {
    let mut archive = tar::Archive::new(reader);
    let mut unpacked = 0u64;
    let mut created: HashSet<PathBuf> = HashSet::new();
    {
        let entries = archive
            .entries()
            .map_err(at("reading archive into", dest))?;
        for entry in entries {
            let mut entry = entry.map_err(at("reading archive into", dest))?;
            let raw = entry.path_bytes().into_owned();
            let name = String::from_utf8_lossy(&raw).into_owned();
            let hostile = |reason: String| ArchiveError::HostileEntry {
                entry: name.clone(),
                reason,
            };
            let kind = entry.header().entry_type();
            if kind == tar::EntryType::XGlobalHeader {
                // pax global headers (git archive puts the commit there) hold no file.
                continue;
            }
            let parts = archive_components(&raw).map_err(hostile)?;
            let header = entry.header();
            let mode = header
                .mode()
                .map_err(|e| hostile(format!("bad mode: {e}")))?;
            let mtime = header.mtime().unwrap_or(0);
            let owner = if options.keep_owners {
                let uid = header.uid().map_err(|e| hostile(format!("bad uid: {e}")))?;
                let gid = header.gid().map_err(|e| hostile(format!("bad gid: {e}")))?;
                match (u32::try_from(uid), u32::try_from(gid)) {
                    (Ok(u), Ok(g)) => Some((u, g)),
                    _ => return Err(hostile(format!("owner {uid}:{gid} out of range"))),
                }
            } else {
                None
            };
            let perm = if options.read_only {
                mode & 0o555
            } else {
                mode & 0o1777
            };
            let path = join_components(dest, &parts);
            if parts.is_empty() {
                if kind.is_dir() {
                    set_owner(&path, owner).map_err(hostile)?;
                    continue;
                }
                return Err(hostile("the archive root must be a directory".into()));
            }
            ensure_parents(dest, &parts).map_err(hostile)?;
            match kind {
                tar::EntryType::Directory => {
                    match fs::symlink_metadata(&path) {
                        Ok(meta) if meta.is_dir() => {}
                        _ => {
                            clear_slot(&path).map_err(hostile)?;
                            fs::create_dir(&path).map_err(|e| hostile(format!("creating: {e}")))?;
                        }
                    }
                    set_owner(&path, owner).map_err(hostile)?;
                    // Kept writable until the end; the caller decides the final mode.
                    let dir_perm = if options.read_only {
                        0o755
                    } else {
                        (mode & 0o777) | 0o700
                    };
                    fs::set_permissions(&path, fs::Permissions::from_mode(dir_perm))
                        .map_err(|e| hostile(format!("setting mode: {e}")))?;
                }
                tar::EntryType::Regular
                | tar::EntryType::Continuous
                | tar::EntryType::GNUSparse => {
                    let size = entry.size();
                    unpacked = unpacked.saturating_add(size);
                    if let Some(limit) = options.max_unpacked {
                        if unpacked > limit {
                            return Err(ArchiveError::ArchiveTooLarge {
                                path: dest.to_path_buf(),
                                size: unpacked,
                                limit,
                            });
                        }
                    }
                    clear_slot(&path).map_err(hostile)?;
                    let mut file = OpenOptions::new()
                        .write(true)
                        .create_new(true)
                        .custom_flags(libc::O_NOFOLLOW)
                        .mode(0o600)
                        .open(&path)
                        .map_err(|e| hostile(format!("creating: {e}")))?;
                    io::copy(&mut entry, &mut file)
                        .map_err(|e| hostile(format!("writing: {e}")))?;
                    if let Some((u, g)) = owner {
                        std::os::unix::fs::fchown(&file, Some(u), Some(g))
                            .map_err(|e| hostile(format!("setting owner: {e}")))?;
                    }
                    // After chown, which clears setuid bits anyway.
                    file.set_permissions(fs::Permissions::from_mode(perm & 0o777))
                        .map_err(|e| hostile(format!("setting mode: {e}")))?;
                    let _ = file.set_modified(UNIX_EPOCH + Duration::from_secs(mtime));
                    created.insert(path);
                }
                tar::EntryType::Symlink => {
                    let target = entry
                        .link_name_bytes()
                        .map(|t| t.into_owned())
                        .unwrap_or_default();
                    if let Some(problem) = symlink_problem(&parts, &target) {
                        return Err(hostile(problem));
                    }
                    clear_slot(&path).map_err(hostile)?;
                    std::os::unix::fs::symlink(OsStr::from_bytes(&target), &path)
                        .map_err(|e| hostile(format!("creating symlink: {e}")))?;
                    if let Some((u, g)) = owner {
                        std::os::unix::fs::lchown(&path, Some(u), Some(g))
                            .map_err(|e| hostile(format!("setting owner: {e}")))?;
                    }
                    created.remove(&path);
                }
                tar::EntryType::Link => {
                    let target = entry
                        .link_name_bytes()
                        .map(|t| t.into_owned())
                        .unwrap_or_default();
                    let target_parts = archive_components(&target)
                        .map_err(|reason| hostile(format!("hard link target: {reason}")))?;
                    let target_path = join_components(dest, &target_parts);
                    // Only to a regular file this extraction wrote: never to
                    // anything that was there before or came through a symlink.
                    if target_parts.is_empty() || !created.contains(&target_path) {
                        return Err(hostile(format!(
                            "hard link to {:?}, which is not a file extracted earlier from this archive",
                            String::from_utf8_lossy(&target)
                        )));
                    }
                    if target_path == path {
                        continue;
                    }
                    clear_slot(&path).map_err(hostile)?;
                    fs::hard_link(&target_path, &path)
                        .map_err(|e| hostile(format!("creating hard link: {e}")))?;
                    created.insert(path);
                }
                tar::EntryType::Char | tar::EntryType::Block => {
                    return Err(hostile("device node".into()));
                }
                tar::EntryType::Fifo => return Err(hostile("FIFO".into())),
                other => {
                    return Err(hostile(format!("unsupported entry type {other:?}")));
                }
            }
        }
    }
    Ok(archive.into_inner())
}

fn set_owner(path: &Path, owner: Option<(u32, u32)>) -> std::result::Result<(), String> {
    match owner {
        Some((u, g)) => std::os::unix::fs::lchown(path, Some(u), Some(g))
            .map_err(|e| format!("setting owner of {}: {e}", path.display())),
        None => Ok(()),
    }
}

/// Sets every directory of the tree (not following symlinks) to 0555,
/// deepest first.
pub fn make_read_only_dirs(root: &Path) -> Result<()> {
    for entry in walkdir::WalkDir::new(root)
        .follow_links(false)
        .contents_first(true)
    {
        let entry = entry.map_err(walking("walking", root))?;
        if entry.file_type().is_dir() {
            fs::set_permissions(entry.path(), fs::Permissions::from_mode(0o555))
                .map_err(at("making read-only", entry.path()))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlink_rules() {
        assert!(symlink_problem(&[b"a", b"l"], b"../x").is_none());
        assert!(symlink_problem(&[b"a", b"l"], b"../../x").is_some());
        assert!(symlink_problem(&[b"l"], b"./a/./b/../c").is_none());
        assert!(symlink_problem(&[b"l"], b"..").is_some());
        assert!(symlink_problem(&[b"l"], b"/usr/bin/python3").is_none());
        assert!(symlink_problem(&[b"l"], b"").is_some());
    }
}
