//! Bounds-checked little-endian reading of untrusted bytes (network frames, files on disk).
//!
//! Every read checks the remaining length first and returns [`ReadError`] instead of panicking,
//! so decoders built on it never index out of bounds on hostile or corrupt input.

use thiserror::Error;

#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[error("unexpected end of input: needed {needed} bytes at offset {offset}, {available} available")]
pub struct ReadError {
    pub offset: usize,
    pub needed: usize,
    pub available: usize,
}

/// A cursor over a byte slice. Reads advance the cursor only when they succeed.
#[derive(Debug, Clone)]
pub struct ByteReader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> ByteReader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        ByteReader { buf, pos: 0 }
    }

    pub fn position(&self) -> usize {
        self.pos
    }

    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    pub fn is_empty(&self) -> bool {
        self.remaining() == 0
    }

    /// Takes the next `n` bytes.
    pub fn bytes(&mut self, n: usize) -> Result<&'a [u8], ReadError> {
        if n > self.remaining() {
            return Err(ReadError {
                offset: self.pos,
                needed: n,
                available: self.remaining(),
            });
        }
        let out = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    pub fn array<const N: usize>(&mut self) -> Result<[u8; N], ReadError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.bytes(N)?);
        Ok(out)
    }

    pub fn u8(&mut self) -> Result<u8, ReadError> {
        Ok(self.array::<1>()?[0])
    }

    pub fn u16(&mut self) -> Result<u16, ReadError> {
        Ok(u16::from_le_bytes(self.array()?))
    }

    pub fn u32(&mut self) -> Result<u32, ReadError> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    pub fn u64(&mut self) -> Result<u64, ReadError> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    pub fn i64(&mut self) -> Result<i64, ReadError> {
        Ok(i64::from_le_bytes(self.array()?))
    }

    /// Reads a `u16` length followed by that many bytes.
    pub fn bytes_u16_len(&mut self) -> Result<&'a [u8], ReadError> {
        let len = self.u16()? as usize;
        self.bytes(len)
    }

    /// Reads a `u32` length followed by that many bytes.
    pub fn bytes_u32_len(&mut self) -> Result<&'a [u8], ReadError> {
        let len = self.u32()? as usize;
        self.bytes(len)
    }
}

/// Appends a `u16` length prefix and the bytes. Panics if `bytes` is longer than `u16::MAX`:
/// callers bound their names well below that.
pub fn put_bytes_u16_len(out: &mut Vec<u8>, bytes: &[u8]) {
    let len = u16::try_from(bytes.len()).expect("length-prefixed field exceeds u16::MAX");
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(bytes);
}

/// Appends a `u32` length prefix and the bytes.
pub fn put_bytes_u32_len(out: &mut Vec<u8>, bytes: &[u8]) {
    let len = u32::try_from(bytes.len()).expect("length-prefixed field exceeds u32::MAX");
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(bytes);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_reads_fail_without_advancing() {
        let mut r = ByteReader::new(&[1, 2, 3]);
        assert_eq!(r.u16().unwrap(), 0x0201);
        let err = r.u32().unwrap_err();
        assert_eq!(
            err,
            ReadError {
                offset: 2,
                needed: 4,
                available: 1
            }
        );
        assert_eq!(r.u8().unwrap(), 3);
        assert!(r.is_empty());
    }

    #[test]
    fn length_prefixed_roundtrip_and_absurd_length() {
        let mut out = Vec::new();
        put_bytes_u32_len(&mut out, b"hello");
        assert_eq!(ByteReader::new(&out).bytes_u32_len().unwrap(), b"hello");
        let absurd = u32::MAX.to_le_bytes();
        assert!(ByteReader::new(&absurd).bytes_u32_len().is_err());
    }
}
