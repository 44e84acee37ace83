//! Power-loss emulation: what would be left on disk if the power went out now.
//!
//! A process kill loses nothing the kernel has accepted, so it cannot show that the engine
//! fsyncs what it acknowledges. With a [`Journal`] attached to [`crate::Faults`], every
//! successful fsync is mirrored into a journal directory outside the data directory:
//! - `files/<inode key>`: the content of a file as of its last fsync (an *image*). Keyed by
//!   inode (number and birth time), because a rename moves a name, not data.
//! - `dirs/<hex of the directory path>`: the names a directory held at its last fsync, each
//!   with its inode key (or marked as a subdirectory).
//!
//! After the process is killed, [`restore`] rewrites the data directory to that durable state:
//! every directory that was ever fsynced gets exactly the names of its last fsync, each file
//! the content of its inode's last fsync (empty if it never had one). Written but not synced
//! bytes, and creations, renames and removals not followed by a directory fsync, are undone, as
//! the worst case a power cut allows. (Torn sectors are a separate fault.)
//!
//! `ignore_sync_containing` makes file syncs of matching paths count for nothing: the negative
//! control of "fsync disabled", which must show acknowledged data lost.
//!
//! This is a test facility: a journal that cannot be written aborts the process, because an
//! emulation that silently missed a sync would report results for the wrong reason.

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

const FILES_DIR: &str = "files";
const DIRS_DIR: &str = "dirs";
/// Chunk size for copying file content into and out of images.
const COPY_CHUNK_BYTES: usize = 1 << 20;

#[derive(Debug)]
pub struct Journal {
    root: PathBuf,
    ignore_sync_containing: Option<String>,
    /// Serializes journal updates: image writes of one file and directory records.
    lock: Mutex<()>,
}

impl Journal {
    /// Opens (creating if needed) a journal in `root`, which must be outside the data directory.
    pub fn open(root: &Path, ignore_sync_containing: Option<String>) -> io::Result<Journal> {
        std::fs::create_dir_all(root.join(FILES_DIR))?;
        std::fs::create_dir_all(root.join(DIRS_DIR))?;
        Ok(Journal {
            root: root.to_path_buf(),
            ignore_sync_containing,
            lock: Mutex::new(()),
        })
    }

    pub fn synced_file(&self, path: &Path, written: Option<(u64, usize)>) {
        if self
            .ignore_sync_containing
            .as_deref()
            .is_some_and(|s| path.to_string_lossy().contains(s))
        {
            return;
        }
        let _one = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(e) = self.copy_to_image(path, written) {
            fail(&format!("record fsync of {}", path.display()), &e);
        }
    }

    pub fn synced_dir(&self, dir: &Path) {
        let _one = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(e) = self.record_dir(dir) {
            fail(&format!("record fsync of directory {}", dir.display()), &e);
        }
    }

    fn copy_to_image(&self, path: &Path, written: Option<(u64, usize)>) -> io::Result<()> {
        let file = File::open(path)?;
        let meta = file.metadata()?;
        let image_path = self.root.join(FILES_DIR).join(inode_key(&meta));
        let whole = written.is_none() || !image_path.exists();
        let image = File::options()
            .create(true)
            .write(true)
            .truncate(whole)
            .open(&image_path)?;
        let (from, to) = match written {
            Some((offset, len)) if !whole => (offset, offset + len as u64),
            _ => (0, meta.len()),
        };
        copy_range(&file, &image, from, to.min(meta.len()))?;
        image.set_len(meta.len())
    }

    fn record_dir(&self, dir: &Path) -> io::Result<()> {
        let mut text = String::new();
        let mut entries: Vec<_> = std::fs::read_dir(dir)?.collect::<io::Result<_>>()?;
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let meta = match std::fs::symlink_metadata(entry.path()) {
                Ok(m) => m,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue, // removed meanwhile
                Err(e) => return Err(e),
            };
            let name = hex(entry.file_name().as_encoded_bytes());
            if meta.is_dir() {
                text.push_str(&format!("d {name}\n"));
            } else if meta.is_file() {
                text.push_str(&format!("f {name} {}\n", inode_key(&meta)));
            }
        }
        let record = self
            .root
            .join(DIRS_DIR)
            .join(hex(dir.as_os_str().as_encoded_bytes()));
        let tmp = record.with_extension("tmp");
        std::fs::write(&tmp, text)?;
        std::fs::rename(&tmp, &record)
    }
}

fn fail(what: &str, error: &io::Error) -> ! {
    eprintln!(
        "power-loss journal: cannot {what}: {error}; aborting (the emulation would be wrong)"
    );
    std::process::abort()
}

/// Inode number and birth time: a reused inode number is a different file.
fn inode_key(meta: &std::fs::Metadata) -> String {
    let born = meta
        .created()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok());
    format!("{}-{}", meta.ino(), born.map_or(0, |d| d.as_nanos()))
}

fn copy_range(from: &File, to: &File, start: u64, end: u64) -> io::Result<()> {
    let mut buf = vec![0u8; COPY_CHUNK_BYTES];
    let mut offset = start;
    while offset < end {
        let len = ((end - offset) as usize).min(buf.len());
        from.read_exact_at(&mut buf[..len], offset)?;
        to.write_all_at(&buf[..len], offset)?;
        offset += len as u64;
    }
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// One entry of a directory record.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Entry {
    File { key: String },
    Dir,
}

/// What [`restore`] did, for the harness's report.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RestoreReport {
    pub dirs: usize,
    pub files_restored: usize,
    /// Names present before the cut but not durable: removed.
    pub names_removed: usize,
    /// Bytes of file content that were written but never synced (dropped).
    pub bytes_dropped: u64,
}

/// Rewrites every journaled directory to its durable state (see the module docs). Run only
/// while no process uses the data directory.
pub fn restore(journal_root: &Path) -> io::Result<RestoreReport> {
    let mut records: Vec<(PathBuf, BTreeMap<Vec<u8>, Entry>)> = Vec::new();
    for entry in std::fs::read_dir(journal_root.join(DIRS_DIR))? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with(".tmp") {
            continue;
        }
        let dir = unhex(&name).ok_or_else(|| bad(format!("journal record name {name:?}")))?;
        let dir =
            PathBuf::from(<std::ffi::OsString as std::os::unix::ffi::OsStringExt>::from_vec(dir));
        records.push((dir, parse_record(&std::fs::read_to_string(entry.path())?)?));
    }
    // Parents first: a directory that is not durable in its parent goes with it.
    records.sort_by_key(|(dir, _)| dir.components().count());
    let mut report = RestoreReport::default();
    for (dir, entries) in &records {
        if !dir.exists() {
            continue; // removed with a parent that was not durable
        }
        report.dirs += 1;
        restore_dir(journal_root, dir, entries, &mut report)?;
    }
    Ok(report)
}

fn bad(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

fn parse_record(text: &str) -> io::Result<BTreeMap<Vec<u8>, Entry>> {
    let mut entries = BTreeMap::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let (name, entry) = match fields.as_slice() {
            ["d", name] => (name, Entry::Dir),
            ["f", name, key] => (
                name,
                Entry::File {
                    key: key.to_string(),
                },
            ),
            _ => return Err(bad(format!("journal record line {line:?}"))),
        };
        entries.insert(
            unhex(name).ok_or_else(|| bad(format!("journal entry name {name:?}")))?,
            entry,
        );
    }
    Ok(entries)
}

fn restore_dir(
    root: &Path,
    dir: &Path,
    durable: &BTreeMap<Vec<u8>, Entry>,
    report: &mut RestoreReport,
) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().as_bytes().to_vec();
        let kind = entry.file_type()?;
        let keep = match durable.get(&name) {
            Some(Entry::Dir) => kind.is_dir(),
            Some(Entry::File { .. }) => kind.is_file(),
            None => false,
        };
        if !keep {
            report.names_removed += 1;
            if kind.is_dir() {
                std::fs::remove_dir_all(entry.path())?;
            } else {
                std::fs::remove_file(entry.path())?;
            }
        }
    }
    for (name, entry) in durable {
        let path = dir.join(std::ffi::OsStr::from_bytes(name));
        match entry {
            Entry::Dir => {
                if !path.is_dir() {
                    std::fs::create_dir_all(&path)?;
                }
            }
            Entry::File { key } => {
                let dropped = restore_file(&root.join(FILES_DIR).join(key), &path)?;
                report.files_restored += 1;
                report.bytes_dropped += dropped;
            }
        }
    }
    Ok(())
}

/// Replaces `path`'s content with the image (empty when the inode never synced); returns how
/// many bytes differed from what was there.
fn restore_file(image: &Path, path: &Path) -> io::Result<u64> {
    let durable = match std::fs::read(image) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e),
    };
    let current = std::fs::read(path).unwrap_or_default();
    let common = durable.len().min(current.len());
    let changed = durable[..common]
        .iter()
        .zip(&current[..common])
        .filter(|(a, b)| a != b)
        .count();
    let dropped = changed as u64 + (current.len().max(durable.len()) - common) as u64;
    if dropped > 0 {
        std::fs::write(path, &durable)?;
    }
    Ok(dropped)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn sync_file(journal: &Journal, path: &Path) {
        File::open(path).unwrap().sync_all().unwrap();
        journal.synced_file(path, None);
    }

    #[test]
    fn unsynced_writes_and_names_are_undone() {
        let tmp = std::env::temp_dir().join(format!("powerloss-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        let data = tmp.join("data");
        std::fs::create_dir_all(data.join("sub")).unwrap();
        let journal = Journal::open(&tmp.join("journal"), None).unwrap();
        // a: written, synced, named durably; then appended without a sync.
        std::fs::write(data.join("a"), b"durable").unwrap();
        sync_file(&journal, &data.join("a"));
        // m: the manifest pattern, old version durable.
        std::fs::write(data.join("m"), b"old").unwrap();
        sync_file(&journal, &data.join("m"));
        journal.synced_dir(&data);
        journal.synced_dir(&data.join("sub"));
        let mut a = File::options().append(true).open(data.join("a")).unwrap();
        io::Write::write_all(&mut a, b" lost").unwrap();
        // A new version of m renamed over it, synced as a file but not in the directory.
        std::fs::write(data.join("m.tmp"), b"new").unwrap();
        sync_file(&journal, &data.join("m.tmp"));
        std::fs::rename(data.join("m.tmp"), data.join("m")).unwrap();
        // b: synced content, directory never synced after its creation.
        std::fs::write(data.join("b"), b"nameless").unwrap();
        sync_file(&journal, &data.join("b"));
        // sub/c: named durably but its content never synced.
        std::fs::write(data.join("sub/c"), b"unsynced").unwrap();
        journal.synced_dir(&data.join("sub"));
        let report = restore(&tmp.join("journal")).unwrap();
        assert_eq!(std::fs::read(data.join("a")).unwrap(), b"durable");
        assert_eq!(
            std::fs::read(data.join("m")).unwrap(),
            b"old",
            "the rename was not durable"
        );
        assert!(!data.join("b").exists() && !data.join("m.tmp").exists());
        assert_eq!(
            std::fs::read(data.join("sub/c")).unwrap(),
            b"",
            "never synced: empty"
        );
        assert!(
            report.bytes_dropped > 0 && report.names_removed == 1,
            "{report:?}"
        );
        let _ = std::fs::remove_dir_all(&tmp);
    }

    #[test]
    fn ranges_update_images_and_ignored_syncs_count_for_nothing() {
        let tmp = std::env::temp_dir().join(format!("powerloss-range-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        let data = tmp.join("data");
        std::fs::create_dir_all(&data).unwrap();
        let journal = Journal::open(&tmp.join("journal"), Some(".log".into())).unwrap();
        let log = data.join("x.log");
        let seg = data.join("x.seg");
        for path in [&log, &seg] {
            std::fs::write(path, [0u8; 16]).unwrap();
            journal.synced_file(path, None);
        }
        journal.synced_dir(&data);
        for path in [&log, &seg] {
            File::options()
                .write(true)
                .open(path)
                .unwrap()
                .write_all_at(b"abcd", 4)
                .unwrap();
            journal.synced_file(path, Some((4, 4)));
        }
        restore(&tmp.join("journal")).unwrap();
        let mut expected = [0u8; 16];
        expected[4..8].copy_from_slice(b"abcd");
        assert_eq!(
            std::fs::read(&seg).unwrap(),
            expected,
            "the synced range is durable"
        );
        assert!(
            std::fs::read(&log).unwrap().is_empty(),
            "syncs of .log files were ignored: never durable"
        );
        assert_eq!(unhex(&hex(b"\x00\xffab")).unwrap(), b"\x00\xffab");
        assert!(unhex("abc").is_none() && unhex("zz").is_none());
        let _ = std::fs::remove_dir_all(&tmp);
    }
}
