//! A deployment's source archive (`.tar`, `.tar.gz`/`.tgz`, `.tar.zst`), uploaded or
//! downloaded, unpacked into the deployment's own directory.
//!
//! The archive is app-owner input and treated as hostile: it is read with the hardened reader
//! of [`crate::build::archive`] (no absolute paths, no `..`, no links that climb out, no
//! devices; the refused entry is named), and bounded three ways before anything is written
//! outside the destination: the archive's size, the number of entries, and the bytes the
//! decompressor may produce (a decompression bomb stops at the bound). Content under a single
//! top-level folder is taken from that folder, as GitHub's and `git archive --prefix` tarballs
//! have it.
use std::cell::Cell;
use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use crate::build::archive::{extract_tar, ArchiveError, ExtractOptions};

/// Bounds of a source archive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArchiveLimits {
    /// Largest archive file (compressed), in bytes.
    pub max_archive_bytes: u64,
    /// Largest total of the files in it, in bytes.
    pub max_unpacked_bytes: u64,
    /// Most entries (files, directories, links).
    pub max_entries: u64,
}

impl Default for ArchiveLimits {
    /// 1 GiB compressed (Dokku's bound), 2 GiB unpacked, 100 000 entries.
    fn default() -> Self {
        ArchiveLimits {
            max_archive_bytes: 1 << 30,
            max_unpacked_bytes: 2 << 30,
            max_entries: 100_000,
        }
    }
}

/// Why a source archive was refused.
#[derive(Debug, thiserror::Error)]
pub enum SourceArchiveError {
    #[error("the source archive is {size} bytes, over the limit of {limit} bytes; deploy a smaller archive (leave build output and dependencies out, the build installs them)")]
    ArchiveTooLarge { size: u64, limit: u64 },
    #[error("the source is not a tar archive (nor a gzip- or zstd-compressed one); deploy a directory, a .tar, .tar.gz or .tgz")]
    NotAnArchive,
    #[error("the source archive has more than {limit} entries; deploy fewer files (leave dependencies out, the build installs them)")]
    TooManyEntries { limit: u64 },
    #[error("the source archive unpacks to more than {limit} bytes (a decompression bomb, or too much data); deploy a smaller archive")]
    UnpacksTooLarge { limit: u64 },
    #[error("the source archive is damaged: {0}; create it again (tar -czf app.tgz -C DIR .)")]
    Damaged(String),
    #[error(transparent)]
    Refused(ArchiveError),
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

type Result<T> = std::result::Result<T, SourceArchiveError>;

/// Reads at most `limit` bytes, then fails (and says so through `hit`).
struct Capped<R> {
    inner: R,
    left: u64,
    hit: Rc<Cell<bool>>,
}

impl<R: Read> Read for Capped<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            // One byte more tells a stream that ends exactly at the bound from a longer one.
            let mut probe = [0u8; 1];
            return match self.inner.read(&mut probe)? {
                0 => Ok(0),
                _ => {
                    self.hit.set(true);
                    Err(io::Error::other("decompressed size bound reached"))
                }
            };
        }
        let want = buf.len().min(self.left.min(usize::MAX as u64) as usize);
        let n = self.inner.read(&mut buf[..want])?;
        self.left -= n as u64;
        Ok(n)
    }
}

/// The archive's bytes, decompressed as its first bytes say, bounded.
fn open_stream(path: &Path, limits: &ArchiveLimits, hit: Rc<Cell<bool>>) -> Result<Box<dyn Read>> {
    let io_err = |action| {
        move |source| SourceArchiveError::Io {
            action,
            path: path.to_path_buf(),
            source,
        }
    };
    let mut file = File::open(path).map_err(io_err("opening"))?;
    let mut magic = [0u8; 4];
    let n = read_up_to(&mut file, &mut magic).map_err(io_err("reading"))?;
    let file = File::open(path).map_err(io_err("opening"))?;
    let reader = BufReader::with_capacity(1 << 16, file);
    let decoded: Box<dyn Read> = match &magic[..n] {
        [0x1f, 0x8b, ..] => Box::new(flate2::read::MultiGzDecoder::new(reader)),
        [0x28, 0xb5, 0x2f, 0xfd] => {
            Box::new(zstd::Decoder::with_buffer(reader).map_err(io_err("decompressing"))?)
        }
        _ => Box::new(reader),
    };
    // Room for the files plus their headers (at most a few blocks per entry).
    let bound = limits
        .max_unpacked_bytes
        .saturating_add(limits.max_entries.saturating_mul(4096));
    Ok(Box::new(Capped {
        inner: decoded,
        left: bound,
        hit,
    }))
}

fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// Whether `path` starts like a tar archive: `ustar` at offset 257 (POSIX and GNU), or an
/// old-style header whose checksum adds up.
fn looks_like_tar(stream: &mut impl Read) -> io::Result<bool> {
    let mut header = [0u8; 512];
    if read_up_to(stream, &mut header)? < 512 {
        return Ok(false);
    }
    if &header[257..262] == b"ustar" {
        return Ok(true);
    }
    let stored = std::str::from_utf8(&header[148..156])
        .ok()
        .map(|s| s.trim_matches(|c: char| c == '\0' || c == ' '))
        .and_then(|s| u32::from_str_radix(s, 8).ok());
    let sum: u32 = header
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            if (148..156).contains(&i) {
                32
            } else {
                u32::from(b)
            }
        })
        .sum();
    Ok(stored == Some(sum))
}

/// Unpacks the archive at `archive` into the existing, empty directory `dest` and returns
/// the app's root: `dest`, or the single folder that holds everything.
pub fn unpack(archive: &Path, dest: &Path, limits: &ArchiveLimits) -> Result<PathBuf> {
    let size = std::fs::metadata(archive)
        .map_err(|source| SourceArchiveError::Io {
            action: "reading",
            path: archive.to_path_buf(),
            source,
        })?
        .len();
    if size > limits.max_archive_bytes {
        return Err(SourceArchiveError::ArchiveTooLarge {
            size,
            limit: limits.max_archive_bytes,
        });
    }
    // A read error past the decompression bound is a bomb; any other, a damaged archive.
    let damaged = |hit: &Rc<Cell<bool>>, e: io::Error| {
        if hit.get() {
            SourceArchiveError::UnpacksTooLarge {
                limit: limits.max_unpacked_bytes,
            }
        } else {
            SourceArchiveError::Damaged(e.to_string())
        }
    };

    // First pass: is it tar at all, and how many entries (nothing is written).
    let hit = Rc::new(Cell::new(false));
    let mut stream = open_stream(archive, limits, hit.clone())?;
    match looks_like_tar(&mut stream) {
        Ok(true) => {}
        Ok(false) => return Err(SourceArchiveError::NotAnArchive),
        Err(e) => return Err(damaged(&hit, e)),
    }
    let hit = Rc::new(Cell::new(false));
    let stream = open_stream(archive, limits, hit.clone())?;
    let mut count = 0u64;
    let mut tar = tar::Archive::new(stream);
    let entries = tar
        .entries()
        .map_err(|e| SourceArchiveError::Damaged(e.to_string()))?;
    for entry in entries {
        if let Err(e) = entry {
            return Err(damaged(&hit, e));
        }
        count += 1;
        if count > limits.max_entries {
            return Err(SourceArchiveError::TooManyEntries {
                limit: limits.max_entries,
            });
        }
    }

    // Second pass: extract, every entry checked.
    let hit = Rc::new(Cell::new(false));
    let stream = open_stream(archive, limits, hit.clone())?;
    let options = ExtractOptions {
        keep_owners: false,
        read_only: false,
        max_unpacked: Some(limits.max_unpacked_bytes),
    };
    match extract_tar(stream, dest, &options) {
        Ok(_) => {}
        Err(_) if hit.get() => {
            return Err(SourceArchiveError::UnpacksTooLarge {
                limit: limits.max_unpacked_bytes,
            })
        }
        Err(ArchiveError::ArchiveTooLarge { limit, .. }) => {
            return Err(SourceArchiveError::UnpacksTooLarge { limit })
        }
        Err(e) => return Err(SourceArchiveError::Refused(e)),
    }
    Ok(single_folder(dest).unwrap_or_else(|| dest.to_path_buf()))
}

/// The one directory (not a link) that `dir` holds, when it holds nothing else.
fn single_folder(dir: &Path) -> Option<PathBuf> {
    let mut entries = std::fs::read_dir(dir).ok()?;
    let only = entries.next()?.ok()?;
    if entries.next().is_some() {
        return None;
    }
    let meta = std::fs::symlink_metadata(only.path()).ok()?;
    meta.is_dir().then(|| only.path())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// A tar with raw header names (the tar crate's safe helpers refuse what attackers write).
    fn raw_tar(entries: &[(&str, tar::EntryType, &[u8], Option<&str>)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, kind, data, link) in entries {
            let mut h = tar::Header::new_gnu();
            h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
            h.set_entry_type(*kind);
            h.set_mode(0o644);
            h.set_size(data.len() as u64);
            if let Some(link) = link {
                h.as_old_mut().linkname[..link.len()].copy_from_slice(link.as_bytes());
            }
            h.set_cksum();
            b.append(&h, *data).unwrap();
        }
        b.into_inner().unwrap()
    }

    fn gz(bytes: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(bytes).unwrap();
        e.finish().unwrap()
    }

    struct Scene {
        dir: tempfile::TempDir,
    }

    impl Scene {
        fn new() -> Scene {
            let dir = tempfile::tempdir().unwrap();
            std::fs::create_dir(dir.path().join("dest")).unwrap();
            std::fs::create_dir(dir.path().join("outside")).unwrap();
            Scene { dir }
        }
        fn unpack(&self, bytes: &[u8], limits: &ArchiveLimits) -> Result<PathBuf> {
            let a = self.dir.path().join("a.tgz");
            std::fs::write(&a, bytes).unwrap();
            unpack(&a, &self.dir.path().join("dest"), limits)
        }
        fn outside_empty(&self) {
            assert_eq!(
                std::fs::read_dir(self.dir.path().join("outside"))
                    .unwrap()
                    .count(),
                0
            );
        }
    }

    use tar::EntryType::{Directory as D, Regular as F, Symlink as L};

    #[test]
    fn a_single_top_level_folder_is_stripped() {
        let s = Scene::new();
        let t = raw_tar(&[
            ("app-main/", D, b"", None),
            ("app-main/Procfile", F, b"web: x\n", None),
        ]);
        let root = s.unpack(&gz(&t), &ArchiveLimits::default()).unwrap();
        assert!(root.ends_with("dest/app-main"));
        assert_eq!(
            std::fs::read_to_string(root.join("Procfile")).unwrap(),
            "web: x\n"
        );
        let s = Scene::new();
        let t = raw_tar(&[
            ("./Procfile", F, b"web: x\n", None),
            ("./lib/", D, b"", None),
        ]);
        let root = s.unpack(&t, &ArchiveLimits::default()).unwrap();
        assert!(root.ends_with("dest"));
    }

    #[test]
    fn hostile_entries_are_refused_by_name_and_nothing_lands_outside() {
        for (entries, named) in [
            (vec![("../outside/x", F, &b"x"[..], None)], "../outside/x"),
            (vec![("/tmp/abs", F, &b"x"[..], None)], "/tmp/abs"),
            (vec![("link", L, &b""[..], Some("../outside"))], "link"),
            (
                vec![
                    ("link", L, &b""[..], Some("/")),
                    ("link/tmp/x", F, &b"x"[..], None),
                ],
                "link/tmp/x",
            ),
            (vec![("dev", tar::EntryType::Char, &b""[..], None)], "dev"),
        ] {
            let s = Scene::new();
            let e = s
                .unpack(&gz(&raw_tar(&entries)), &ArchiveLimits::default())
                .unwrap_err()
                .to_string();
            assert!(e.contains(&format!("{named:?}")), "{named}: {e}");
            s.outside_empty();
        }
    }

    #[test]
    fn bounds_on_size_entries_and_bombs() {
        let small = ArchiveLimits {
            max_archive_bytes: 1 << 20,
            max_unpacked_bytes: 1 << 20,
            max_entries: 3,
        };
        let s = Scene::new();
        let many: Vec<(String, tar::EntryType, &[u8], Option<&str>)> = (0..5)
            .map(|i| (format!("f{i}"), F, &b"x"[..], None))
            .collect();
        let many: Vec<_> = many
            .iter()
            .map(|(n, k, d, l)| (n.as_str(), *k, *d, *l))
            .collect();
        let e = s.unpack(&raw_tar(&many), &small).unwrap_err();
        assert!(
            matches!(e, SourceArchiveError::TooManyEntries { .. }),
            "{e}"
        );
        // 64 MiB of zeros compress to almost nothing.
        let zeros = vec![0u8; 64 << 20];
        let bomb = gz(&raw_tar(&[("big", F, &zeros, None)]));
        assert!(bomb.len() < (1 << 20));
        let s = Scene::new();
        let e = s.unpack(&bomb, &small).unwrap_err();
        assert!(
            matches!(e, SourceArchiveError::UnpacksTooLarge { .. }),
            "{e}"
        );
        let s = Scene::new();
        let e = s.unpack(&vec![1u8; 2 << 20], &small).unwrap_err();
        assert!(
            matches!(e, SourceArchiveError::ArchiveTooLarge { .. }),
            "{e}"
        );
        let s = Scene::new();
        let e = s
            .unpack(b"just some text, not an archive", &small)
            .unwrap_err();
        assert!(matches!(e, SourceArchiveError::NotAnArchive), "{e}");
    }
}
