//! Page-aligned O_DIRECT writes for group commit.
//!
//! Buffered WAL writes cost a kernel copy of every byte into the page cache (a fifth of the
//! server's CPU under sustained ingest on two cores), plus writeback work, for pages nobody
//! reads again. O_DIRECT hands our buffer to the device instead, but needs offsets, lengths and
//! buffers aligned to [`PAGE_BYTES`]. A group ends at an arbitrary offset, so each write starts
//! at the page holding its first byte: the bytes of that page already written by the previous
//! group (kept in `tail`, or read back after a restart) are written again unchanged, and the
//! write is padded with zeros to the next page boundary — which is what the pre-zeroed file
//! holds there anyway. The logical content of the file is therefore identical to buffered
//! writes; recovery reads it the same way.
//!
//! Falls back to buffered writes (returns `None`) when the file system refuses O_DIRECT (tmpfs)
//! or the segment size is not a whole number of pages.

use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Alignment of O_DIRECT offsets, lengths and buffers.
pub const PAGE_BYTES: u64 = 4096;

#[derive(Default)]
pub struct DirectWrites {
    disabled: bool,
    /// The O_DIRECT descriptor of the segment written last, and that segment's size.
    file: Option<(PathBuf, Arc<File>, u64)>,
    /// Bytes of the last partially written page of `file`, and where that page starts.
    tail: Vec<u8>,
    tail_page_start: u64,
    /// Over-allocated so an aligned window of it can be used.
    backing: Vec<u8>,
}

/// One aligned write: `bytes` at `offset` through `file`.
pub struct Staged<'a> {
    pub file: Arc<File>,
    pub offset: u64,
    pub bytes: &'a [u8],
}

impl DirectWrites {
    /// Prepares the write of `bytes` at `offset` of the segment at `path` (open buffered as
    /// `buffered`). `None`: write buffered instead.
    pub fn stage(&mut self, buffered: &File, path: &Path, offset: u64, bytes: &[u8]) -> io::Result<Option<Staged<'_>>> {
        if self.disabled || !self.open(buffered, path)? {
            return Ok(None);
        }
        let Some((_, file, file_bytes)) = &self.file else { return Ok(None) };
        let (file, file_bytes) = (Arc::clone(file), *file_bytes);
        let page_start = offset / PAGE_BYTES * PAGE_BYTES;
        let prefix_len = (offset - page_start) as usize;
        let end = offset + bytes.len() as u64;
        let aligned_end = end.div_ceil(PAGE_BYTES) * PAGE_BYTES;
        if self.tail_page_start != page_start || self.tail.len() != prefix_len {
            self.tail.resize(prefix_len, 0);
            buffered.read_exact_at(&mut self.tail, page_start)?;
            self.tail_page_start = page_start;
        }
        if aligned_end > file_bytes {
            return Ok(None);
        }
        let len = (aligned_end - page_start) as usize;
        let align = PAGE_BYTES as usize;
        if self.backing.len() < len + align {
            self.backing = vec![0u8; (len + align).next_power_of_two()];
        }
        let skew = self.backing.as_ptr().align_offset(align);
        let window = &mut self.backing[skew..skew + len];
        window[..prefix_len].copy_from_slice(&self.tail);
        window[prefix_len..prefix_len + bytes.len()].copy_from_slice(bytes);
        window[prefix_len + bytes.len()..].fill(0);
        Ok(Some(Staged { file, offset: page_start, bytes: &self.backing[skew..skew + len] }))
    }

    /// Records what a successful staged write left in its last page.
    pub fn written(&mut self, offset: u64, bytes: &[u8]) {
        let end = offset + bytes.len() as u64;
        let last_page = end / PAGE_BYTES * PAGE_BYTES;
        let keep = (end - last_page) as usize;
        if last_page >= offset {
            self.tail.clear();
            self.tail.extend_from_slice(&bytes[bytes.len() - keep..]);
        } else {
            self.tail.extend_from_slice(bytes);
        }
        self.tail_page_start = last_page;
    }

    /// Opens the O_DIRECT descriptor for `path` unless it is the current one. False: disabled.
    fn open(&mut self, buffered: &File, path: &Path) -> io::Result<bool> {
        if self.file.as_ref().is_some_and(|(p, _, _)| p == path) {
            return Ok(true);
        }
        self.file = None;
        self.tail.clear();
        self.tail_page_start = u64::MAX;
        let file_bytes = buffered.metadata()?.len();
        if file_bytes % PAGE_BYTES != 0 {
            return Ok(false);
        }
        match File::options().write(true).custom_flags(libc::O_DIRECT).open(path) {
            Ok(f) => {
                self.file = Some((path.to_path_buf(), Arc::new(f), file_bytes));
                Ok(true)
            }
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                tracing::info!(path = %path.display(), "O_DIRECT refused by the file system; the wal writes through the page cache");
                self.disabled = true;
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligned_writes_reproduce_buffered_content() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("seg");
        std::fs::write(&path, vec![0u8; 64 * 1024]).unwrap();
        let buffered = File::options().read(true).write(true).open(&path).unwrap();
        let mut expected = vec![0u8; 64 * 1024];
        let mut direct = DirectWrites::default();
        let mut offset = 0u64;
        for (i, len) in [10usize, 4086, 1, 5000, 3, 8192, 100].into_iter().enumerate() {
            let bytes: Vec<u8> = (0..len).map(|j| (i * 31 + j) as u8 | 1).collect();
            expected[offset as usize..offset as usize + len].copy_from_slice(&bytes);
            let staged = direct.stage(&buffered, &path, offset, &bytes).unwrap().expect("ext4 takes O_DIRECT");
            assert_eq!(staged.offset % PAGE_BYTES, 0);
            assert_eq!(staged.bytes.len() as u64 % PAGE_BYTES, 0);
            staged.file.write_all_at(staged.bytes, staged.offset).unwrap();
            direct.written(offset, &bytes);
            offset += len as u64;
        }
        assert_eq!(std::fs::read(&path).unwrap(), expected);
        // A fresh stager (as after a restart) reads the partial page back from the file.
        let mut again = DirectWrites::default();
        let staged = again.stage(&buffered, &path, offset, b"xyz").unwrap().unwrap();
        staged.file.write_all_at(staged.bytes, staged.offset).unwrap();
        expected[offset as usize..offset as usize + 3].copy_from_slice(b"xyz");
        assert_eq!(std::fs::read(&path).unwrap(), expected);
    }
}
