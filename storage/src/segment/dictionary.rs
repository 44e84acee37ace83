//! Segment dictionaries: one sorted dictionary per text column per segment, stored once in its
//! own checksummed section, so that column blocks hold only codes into it.
//!
//! Why: with per-block dictionaries a device id is stored again in every block where the device
//! appears (segments are sorted by app, then device, and a device uses several apps). A segment
//! dictionary stores it once; since it is sorted byte-wise, codes preserve order and increase
//! along each app's run of sorted device ids, so the codes' RLE deltas are tiny.
//!
//! Entries are *packed*: each entry has a tag, and canonical forms of common identifiers are
//! stored in binary rather than as text:
//!
//! | tag | form                                                  | payload             |
//! |----:|-------------------------------------------------------|---------------------|
//! | 0   | anything else (raw UTF-8)                             | the bytes           |
//! | 1   | UUID `8-4-4-4-12`, hex digits all lower-case          | 16 bytes            |
//! | 2   | UUID `8-4-4-4-12`, hex digits all upper-case (with at least one letter) | 16 bytes |
//! | 3   | dotted-quad IPv4, each octet 0..=255 without leading zeros | 4 bytes        |
//!
//! A string is packed only when formatting the payload gives back exactly the same bytes, so
//! every entry round-trips byte-exactly; anything not canonical stays raw.
//!
//! Raw layout (before compression; byte planes as in [`super::encoding::put_planes`]):
//!
//! ```text
//! u32 entry_count
//! entry_count × u8 tag                       (entry order: sorted byte-wise, distinct)
//! for tag 1, then tag 2 (n = entries with that tag, in entry order):
//!     planes(hi[i] - hi[i-1]) (wrapping, hi[-1] = 0; hi = first 8 payload bytes, big-endian)
//!     n × 8 bytes: the last 8 payload bytes
//! for tag 3 (n entries): 4 planes of n bytes, plane k = octet k
//! for tag 0 (n entries): planes(byte lengths), the bytes concatenated
//! ```
//!
//! Within one UUID tag, byte-wise text order is numeric order, so `hi` deltas are non-negative
//! and small (about 2^64 / n): roughly 2 bytes per UUID entry are saved over storing `hi` raw.
//!
//! Decoding trusts nothing: counts are bounded by the segment's rows and
//! [`SEGMENT_DICTIONARY_ENTRIES_MAX`], the expanded text by [`COLUMN_BLOCK_RAW_BYTES_MAX`], and
//! the decoded entries must be strictly increasing (so codes keep their order meaning).

use super::encoding::{get_planes, invalid, put_planes, Invalid};
use super::{COLUMN_BLOCK_RAW_BYTES_MAX, SEGMENT_DICTIONARY_ENTRIES_MAX};
use lookback_common::{ByteReader, TextValues};

/// A decoded segment dictionary: entries sorted byte-wise, distinct, valid UTF-8. The entry
/// bytes are one shared buffer so a query can hand them to Arrow arrays without a copy.
#[derive(Debug)]
pub struct TextDictionary {
    offsets: Vec<u32>,
    data: bytes::Bytes,
    entry_bytes_max: usize,
}

impl TextDictionary {
    /// Takes a plain-form `text` (the decoder's output) as dictionary entries.
    pub(crate) fn new(text: TextValues) -> TextDictionary {
        assert!(text.codes.is_none(), "a segment dictionary is plain text");
        let entry_bytes_max = text.offsets.windows(2).map(|w| (w[1] - w[0]) as usize).max().unwrap_or(0);
        TextDictionary { offsets: text.offsets, data: bytes::Bytes::from(text.data), entry_bytes_max }
    }

    pub fn len(&self) -> usize {
        self.offsets.len().saturating_sub(1)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Entry `i`'s bytes (UTF-8). Panics when `i >= len()`.
    pub fn entry(&self, i: usize) -> &[u8] {
        &self.data[self.offsets[i] as usize..self.offsets[i + 1] as usize]
    }

    /// `len() + 1` offsets into [`Self::data`], starting at 0, non-decreasing.
    pub fn offsets(&self) -> &[u32] {
        &self.offsets
    }

    /// Every entry's bytes, concatenated.
    pub fn data(&self) -> &bytes::Bytes {
        &self.data
    }

    /// Bytes of the longest entry.
    pub fn entry_bytes_max(&self) -> usize {
        self.entry_bytes_max
    }
}

const TAG_RAW: u8 = 0;
const TAG_UUID_LOWER: u8 = 1;
const TAG_UUID_UPPER: u8 = 2;
const TAG_IPV4: u8 = 3;

const UUID_TEXT_BYTES: usize = 36;
const IPV4_TEXT_BYTES_MAX: usize = 15;
const DASHES: [usize; 4] = [8, 13, 18, 23];

/// Whether a segment dictionary should replace per-block encodings for a column with
/// `distinct` distinct values over `non_null` non-null values. It pays when values repeat
/// (at most half as many distinct values as values), like the per-block dictionary rule.
pub(crate) fn pays(distinct: usize, non_null: usize) -> bool {
    distinct > 0 && distinct <= SEGMENT_DICTIONARY_ENTRIES_MAX && distinct <= non_null / 2
}

/// Bytes of the entries once expanded back to text (the reader's allocation).
pub(crate) fn expanded_bytes(entries: &[&[u8]]) -> usize {
    entries.iter().map(|e| e.len()).sum()
}

/// Encodes `entries` (sorted byte-wise, distinct, at least one) as the raw section bytes.
pub(crate) fn encode(entries: &[&[u8]]) -> Vec<u8> {
    assert!(!entries.is_empty(), "a segment dictionary has at least one entry");
    assert!(entries.windows(2).all(|w| w[0] < w[1]), "dictionary entries sorted and distinct");
    let mut tags = Vec::with_capacity(entries.len());
    let mut uuids: [Vec<[u8; 16]>; 2] = [Vec::new(), Vec::new()];
    let mut ipv4s: Vec<[u8; 4]> = Vec::new();
    let mut raws: Vec<&[u8]> = Vec::new();
    for &entry in entries {
        if let Some((upper, bytes)) = parse_uuid(entry) {
            tags.push(if upper { TAG_UUID_UPPER } else { TAG_UUID_LOWER });
            uuids[upper as usize].push(bytes);
        } else if let Some(octets) = parse_ipv4(entry) {
            tags.push(TAG_IPV4);
            ipv4s.push(octets);
        } else {
            tags.push(TAG_RAW);
            raws.push(entry);
        }
    }
    let mut out = Vec::with_capacity(5 + entries.len() + expanded_bytes(entries) / 2);
    out.extend_from_slice(&(entries.len() as u32).to_le_bytes());
    out.extend_from_slice(&tags);
    for group in &uuids {
        put_uuids(&mut out, group);
    }
    for k in 0..4 {
        out.extend(ipv4s.iter().map(|o| o[k]));
    }
    put_planes(&mut out, &raws.iter().map(|r| r.len() as u64).collect::<Vec<_>>());
    for r in raws {
        out.extend_from_slice(r);
    }
    out
}

fn put_uuids(out: &mut Vec<u8>, uuids: &[[u8; 16]]) {
    let mut previous = 0u64;
    let deltas: Vec<u64> = uuids
        .iter()
        .map(|u| {
            let hi = u64::from_be_bytes(half(u, 0));
            let d = hi.wrapping_sub(previous);
            previous = hi;
            d
        })
        .collect();
    put_planes(out, &deltas);
    for u in uuids {
        out.extend_from_slice(&u[8..]);
    }
}

fn half(u: &[u8; 16], start: usize) -> [u8; 8] {
    let mut h = [0u8; 8];
    h.copy_from_slice(&u[start..start + 8]);
    h
}

/// Decodes a dictionary of at most `entries_max` entries into its text entries.
pub(crate) fn decode(raw: &[u8], entries_max: usize) -> Result<TextValues, Invalid> {
    let mut r = ByteReader::new(raw);
    let count = r.u32()? as usize;
    if count == 0 || count > entries_max.min(SEGMENT_DICTIONARY_ENTRIES_MAX) {
        return invalid(format!("dictionary of {count} entries (at most {entries_max})"));
    }
    let tags = r.bytes(count)?;
    let mut counts = [0usize; 4];
    for &tag in tags {
        let Some(n) = counts.get_mut(tag as usize) else {
            return invalid(format!("unknown dictionary entry tag {tag}"));
        };
        *n += 1;
    }
    let lower = get_uuids(&mut r, counts[TAG_UUID_LOWER as usize])?;
    let upper = get_uuids(&mut r, counts[TAG_UUID_UPPER as usize])?;
    let n_ipv4 = counts[TAG_IPV4 as usize];
    let mut planes = Vec::with_capacity(4);
    for _ in 0..4 {
        planes.push(r.bytes(n_ipv4)?);
    }
    let raw_lengths = get_planes(&mut r, counts[TAG_RAW as usize])?;
    let raw_total = raw_lengths.iter().try_fold(0u64, |acc, &l| acc.checked_add(l));
    let expanded = (lower.len() + upper.len()) as u64 * UUID_TEXT_BYTES as u64
        + n_ipv4 as u64 * IPV4_TEXT_BYTES_MAX as u64;
    match raw_total {
        Some(t) if t <= r.remaining() as u64 && t + expanded <= COLUMN_BLOCK_RAW_BYTES_MAX as u64 => {}
        _ => return invalid("dictionary text exceeds the payload or the limit"),
    }
    let raw_bytes = r.bytes(r.remaining())?;
    if raw_total != Some(raw_bytes.len() as u64) {
        return invalid("trailing bytes after the dictionary");
    }
    let capacity = expanded as usize + raw_bytes.len();
    let mut text = TextValues::with_capacity(count, capacity);
    let (mut lower, mut upper) = (lower.iter(), upper.iter());
    let (mut ip, mut raw_at, mut lengths) = (0usize, 0usize, raw_lengths.iter());
    let mut scratch = String::with_capacity(UUID_TEXT_BYTES);
    for &tag in tags {
        scratch.clear();
        match tag {
            TAG_UUID_LOWER | TAG_UUID_UPPER => {
                let next = if tag == TAG_UUID_LOWER { lower.next() } else { upper.next() };
                let Some(u) = next else { return invalid("uuid entries out of step") };
                format_uuid(&mut scratch, u, tag == TAG_UUID_UPPER);
                text.push(&scratch);
            }
            TAG_IPV4 => {
                let octets = [0, 1, 2, 3].map(|k| planes[k].get(ip).copied().unwrap_or(0));
                ip += 1;
                format_ipv4(&mut scratch, octets);
                text.push(&scratch);
            }
            _ => {
                let len = lengths.next().copied().unwrap_or(0) as usize;
                let Some(bytes) = raw_bytes.get(raw_at..raw_at + len) else {
                    return invalid("raw entries out of step");
                };
                raw_at += len;
                let s = std::str::from_utf8(bytes).map_err(|_| Invalid("entry is not UTF-8".into()))?;
                text.push(s);
            }
        }
        if count_ordered(&text).is_err() {
            return invalid(format!("dictionary entry {} out of order", text.len() - 1));
        }
    }
    Ok(text)
}

/// Checks the last entry of `text` is greater than the one before it.
fn count_ordered(text: &TextValues) -> Result<(), ()> {
    let n = text.len();
    if n >= 2 && text.get_bytes(n - 2) >= text.get_bytes(n - 1) {
        return Err(());
    }
    Ok(())
}

fn get_uuids(r: &mut ByteReader<'_>, count: usize) -> Result<Vec<[u8; 16]>, Invalid> {
    let deltas = get_planes(r, count)?;
    let lows = r.bytes(count.saturating_mul(8))?;
    let mut hi = 0u64;
    let mut out = Vec::with_capacity(count);
    for (d, low) in deltas.iter().zip(lows.chunks_exact(8)) {
        hi = hi.wrapping_add(*d);
        let mut u = [0u8; 16];
        u[..8].copy_from_slice(&hi.to_be_bytes());
        u[8..].copy_from_slice(low);
        out.push(u);
    }
    Ok(out)
}

/// `Some((upper, bytes))` for a canonical UUID text whose hex letters share one case.
fn parse_uuid(s: &[u8]) -> Option<(bool, [u8; 16])> {
    if s.len() != UUID_TEXT_BYTES || DASHES.iter().any(|&i| s[i] != b'-') {
        return None;
    }
    let (mut lower, mut upper) = (false, false);
    let mut bytes = [0u8; 16];
    let mut nibbles = s.iter().enumerate().filter(|(i, _)| !DASHES.contains(i)).map(|(_, &c)| c);
    for byte in bytes.iter_mut() {
        let mut v = 0u8;
        for _ in 0..2 {
            let c = nibbles.next()?;
            let n = match c {
                b'0'..=b'9' => c - b'0',
                b'a'..=b'f' => {
                    lower = true;
                    c - b'a' + 10
                }
                b'A'..=b'F' => {
                    upper = true;
                    c - b'A' + 10
                }
                _ => return None,
            };
            v = (v << 4) | n;
        }
        *byte = v;
    }
    if lower && upper {
        return None;
    }
    Some((upper, bytes))
}

fn format_uuid(out: &mut String, u: &[u8; 16], upper: bool) {
    let digits: &[u8; 16] = if upper { b"0123456789ABCDEF" } else { b"0123456789abcdef" };
    for (i, &b) in u.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            out.push('-');
        }
        out.push(digits[(b >> 4) as usize] as char);
        out.push(digits[(b & 15) as usize] as char);
    }
}

/// Octets of a canonical dotted quad: four decimal octets 0..=255, no leading zeros.
fn parse_ipv4(s: &[u8]) -> Option<[u8; 4]> {
    if s.len() < 7 || s.len() > IPV4_TEXT_BYTES_MAX {
        return None;
    }
    let mut octets = [0u8; 4];
    let mut parts = s.split(|&c| c == b'.');
    for octet in octets.iter_mut() {
        let part = parts.next()?;
        let canonical = !part.is_empty() && part.len() <= 3 && (part[0] != b'0' || part.len() == 1);
        if !canonical || !part.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let v = part.iter().fold(0u32, |acc, &c| acc * 10 + (c - b'0') as u32);
        *octet = u8::try_from(v).ok()?;
    }
    parts.next().is_none().then_some(octets)
}

fn format_ipv4(out: &mut String, octets: [u8; 4]) {
    use std::fmt::Write;
    for (i, o) in octets.iter().enumerate() {
        if i > 0 {
            out.push('.');
        }
        let _ = write!(out, "{o}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(entries: &[&str]) {
        let mut sorted: Vec<&[u8]> = entries.iter().map(|e| e.as_bytes()).collect();
        sorted.sort();
        sorted.dedup();
        let raw = encode(&sorted);
        let text = decode(&raw, sorted.len()).expect("decode");
        let back: Vec<&[u8]> = (0..text.len()).map(|i| text.get_bytes(i)).collect();
        assert_eq!(back, sorted);
        for len in 0..raw.len() {
            assert!(decode(&raw[..len], sorted.len()).is_err(), "truncated to {len}");
        }
    }

    #[test]
    fn packed_entries_roundtrip_byte_exactly() {
        roundtrip(&[
            "0f8fad5b-d9cb-469f-a165-70867728950e",
            "0F8FAD5B-D9CB-469F-A165-70867728950E",
            "0F8FAD5B-d9cb-469f-a165-70867728950e",
            "00000000-0000-0000-0000-000000000000",
            "ffffffff-ffff-ffff-ffff-ffffffffffff",
            "0f8fad5bd9cb469fa16570867728950e",
            "0f8fad5b-d9cb-469f-a165-70867728950g",
            "1.2.3.4",
            "255.255.255.255",
            "0.0.0.0",
            "01.2.3.4",
            "256.1.1.1",
            "1.2.3",
            "1.2.3.4.5",
            "1..3.4",
            "10.0.0.1 ",
            "",
            "cookie-abc",
            "日本語",
        ]);
        roundtrip(&["a"]);
        roundtrip(&["9.9.9.9"]);
    }

    #[test]
    fn parses_only_canonical_forms() {
        assert!(parse_uuid(b"0f8fad5b-d9cb-469f-a165-70867728950e").is_some_and(|(u, _)| !u));
        assert!(parse_uuid(b"0F8FAD5B-D9CB-469F-A165-70867728950E").is_some_and(|(u, _)| u));
        assert!(parse_uuid(b"0f8fad5b-D9CB-469f-a165-70867728950e").is_none());
        assert_eq!(parse_ipv4(b"192.168.0.1"), Some([192, 168, 0, 1]));
        assert_eq!(parse_ipv4(b"192.168.00.1"), None);
        assert_eq!(parse_ipv4(b"+1.1.1.1"), None);
    }

    #[test]
    fn rejects_unsorted_and_bad_tags() {
        let raw = encode(&[b"a", b"b"]);
        let mut swapped = raw.clone();
        let n = swapped.len();
        swapped.swap(n - 1, n - 2);
        assert!(decode(&swapped, 2).is_err());
        let mut bad_tag = raw;
        bad_tag[4] = 9;
        assert!(decode(&bad_tag, 2).is_err());
    }
}
