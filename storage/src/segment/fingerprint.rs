//! The fingerprint index: which blocks of a segment hold rows with a given (app_id, ip,
//! user_agent).
//!
//! Why: probabilistic attribution matches a conversion that has no device match to touchpoints
//! with the same app, ip and user agent. Rows are sorted by (app_id, device_id, ts), so those
//! touchpoints are scattered over the segment; without an index every probabilistic query
//! would read the ip and user_agent columns of every block. With it, a lookup is a binary
//! search, then reads of only the blocks it names.
//!
//! It is a sparse index (per block, not per row), like a skip index: a key's rows mostly belong
//! to one device, so to one block, and a block is the unit of reading anyway. Keys are hashed
//! ([`key_hash`], a fixed, documented function: the hash is on disk) and the hash is cut to
//! `hash_bits` bits, about 7 more than needed to tell the segment's keys apart, so a lookup
//! names a block without the key about once in 128 (the reader compares values; the index only
//! narrows the blocks). Rows with a null app_id, ip or user_agent are not indexed. Measured on
//! the load generator's events: 0.4 B/event, against 1.9 B/event for a per-row index.
//!
//! Layout (docs/format.md, "Fingerprint index"):
//!
//! ```text
//! u8 hash_bits (8..=32), u32 entry_count
//! planes(hash[i] - hash[i-1])     hash[-1] = 0; (hash, block) pairs strictly increasing
//! planes(block[i])
//! ```

use super::encoding::{get_planes, invalid, put_planes, Invalid};
use lookback_common::schema::events;
use lookback_common::{ByteReader, ColumnType, Schema};

/// FNV-1a, 64-bit: the per-value hash [`key_hash`] combines.
pub fn value_hash(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The on-disk hash of one (app_id, ip, user_agent) key, from the values' [`value_hash`]es.
pub fn key_hash(app: u64, ip: u64, user_agent: u64) -> u32 {
    const MIX: u64 = 0x9e37_79b9_7f4a_7c15;
    let h = ((app.wrapping_mul(MIX) ^ ip).wrapping_mul(MIX)) ^ user_agent;
    let h = h.wrapping_mul(MIX);
    (h ^ (h >> 32)) as u32
}

/// The (app_id, ip, user_agent) columns of `schema` when it is the built-in events table
/// (those three text columns present): the tables that get a fingerprint index.
pub fn fingerprint_columns(schema: &Schema) -> Option<[usize; 3]> {
    if schema.name != events::TABLE_NAME {
        return None;
    }
    let text = |name: &str| schema.column_index(name).filter(|&c| schema.columns[c].ty == ColumnType::Text);
    Some([text("app_id")?, text("ip")?, text("user_agent")?])
}

/// Bits of a key hash kept for `keys` distinct keys: about 7 more than tell them apart.
fn hash_bits_for(keys: usize) -> u8 {
    let needed = usize::BITS - keys.max(1).leading_zeros();
    (needed + 7).clamp(8, 32) as u8
}

/// A decoded fingerprint index: (hash, block) pairs, sorted.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct FingerprintIndex {
    hash_bits: u8,
    hashes: Vec<u32>,
    blocks: Vec<u32>,
}

impl FingerprintIndex {
    /// The index of rows `0..` in blocks of `block_rows` rows, given each row's [`key_hash`]
    /// (`None`: a key value is null).
    pub fn build(hashes: impl Iterator<Item = Option<u32>>, block_rows: usize) -> FingerprintIndex {
        assert!(block_rows > 0, "fingerprint index: blocks have rows");
        let mut pairs: Vec<u64> =
            hashes.enumerate().filter_map(|(row, h)| h.map(|h| ((h as u64) << 32) | (row / block_rows) as u64)).collect();
        pairs.sort_unstable();
        pairs.dedup();
        let distinct = 1 + pairs.windows(2).filter(|w| w[0] >> 32 != w[1] >> 32).count();
        let hash_bits = hash_bits_for(if pairs.is_empty() { 0 } else { distinct });
        // Keys whose cut hashes collide interleave their blocks: sort the (fewer) pairs again.
        for pair in pairs.iter_mut() {
            *pair = ((cut((*pair >> 32) as u32, hash_bits) as u64) << 32) | (*pair & u32::MAX as u64);
        }
        pairs.sort_unstable();
        pairs.dedup();
        FingerprintIndex {
            hash_bits,
            hashes: pairs.iter().map(|&p| (p >> 32) as u32).collect(),
            blocks: pairs.iter().map(|&p| p as u32).collect(),
        }
    }

    /// Blocks that may hold rows whose key has [`key_hash`] `hash`, increasing (every block
    /// that does, and about one in 128 others).
    pub fn blocks_of(&self, hash: u32) -> &[u32] {
        let hash = cut(hash, self.hash_bits);
        let from = self.hashes.partition_point(|&h| h < hash);
        let to = from + self.hashes[from..].partition_point(|&h| h == hash);
        &self.blocks[from..to]
    }

    /// (hash, block) entries.
    pub fn len(&self) -> usize {
        self.hashes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.hashes.is_empty()
    }

    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(5 + self.hashes.len() * 3);
        out.push(self.hash_bits);
        out.extend_from_slice(&(self.hashes.len() as u32).to_le_bytes());
        let mut previous = 0u32;
        let deltas: Vec<u64> = self.hashes.iter().map(|&h| (h - std::mem::replace(&mut previous, h)) as u64).collect();
        put_planes(&mut out, &deltas);
        put_planes(&mut out, &self.blocks.iter().map(|&b| b as u64).collect::<Vec<u64>>());
        out
    }

    /// Decodes the index of a segment of `block_count` blocks whose directory says `entries`
    /// entries, checking hashes fit `hash_bits`, blocks exist and pairs strictly increase.
    pub(crate) fn decode(raw: &[u8], entries: u32, block_count: usize) -> Result<FingerprintIndex, Invalid> {
        let mut r = ByteReader::new(raw);
        let (hash_bits, count) = (r.u8()?, r.u32()?);
        if !(8..=32).contains(&hash_bits) || count != entries {
            return invalid(format!("hash bits {hash_bits}, {count} entries (directory: {entries})"));
        }
        let deltas = get_planes(&mut r, count as usize)?;
        let blocks = get_planes(&mut r, count as usize)?;
        if !r.is_empty() {
            return invalid("trailing bytes after the fingerprint index");
        }
        let hash_max = u32::MAX as u64 >> (32 - hash_bits as u32);
        let mut index = FingerprintIndex { hash_bits, hashes: Vec::with_capacity(deltas.len()), blocks: Vec::with_capacity(blocks.len()) };
        let mut hash = 0u64;
        for (i, (&delta, &block)) in deltas.iter().zip(&blocks).enumerate() {
            hash = hash.saturating_add(delta);
            let increasing = i == 0 || delta > 0 || block > index.blocks[i - 1] as u64;
            if hash > hash_max || block >= block_count as u64 || !increasing {
                return invalid(format!("fingerprint entry {i}: hash {hash} block {block}"));
            }
            index.hashes.push(hash as u32);
            index.blocks.push(block as u32);
        }
        Ok(index)
    }
}

/// The top `bits` bits of `hash`.
fn cut(hash: u32, bits: u8) -> u32 {
    ((hash as u64) >> (32 - bits as u32)) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_encode_decode_roundtrip() {
        let top = |h: u32| h << 22;
        // 8 rows in blocks of 3: rows 0-2 block 0, 3-5 block 1, 6-7 block 2.
        let hashes = [Some(top(7)), None, Some(top(3)), Some(top(7)), Some(u32::MAX), Some(top(3)), Some(0), Some(top(7))];
        let index = FingerprintIndex::build(hashes.iter().copied(), 3);
        assert_eq!(index.hash_bits, 10, "4 keys: 3 bits tell them apart, plus 7");
        assert_eq!(index.blocks_of(top(7)), &[0, 1, 2]);
        assert_eq!(index.blocks_of(top(3)), &[0, 1]);
        assert_eq!(index.blocks_of(0), &[2]);
        assert_eq!(index.blocks_of(u32::MAX), &[1]);
        // Only the kept bits count: a hash differing in dropped bits names the same blocks.
        assert_eq!(index.blocks_of(top(7) | 0xff), &[0, 1, 2]);
        assert!(index.blocks_of(top(8)).is_empty());
        assert_eq!(index.len(), 7);
        let raw = index.encode();
        assert_eq!(FingerprintIndex::decode(&raw, 7, 3).expect("decodes"), index);
        // Every truncation, a segment with too few blocks, and a wrong count are refused.
        for len in 0..raw.len() {
            assert!(FingerprintIndex::decode(&raw[..len], 7, 3).is_err(), "len {len}");
        }
        assert!(FingerprintIndex::decode(&raw, 7, 2).is_err());
        assert!(FingerprintIndex::decode(&raw, 6, 3).is_err());
        let empty = FingerprintIndex::build(std::iter::empty(), 3);
        assert_eq!(FingerprintIndex::decode(&empty.encode(), 0, 1).expect("decodes"), empty);
    }

    #[test]
    fn hash_bits_grow_with_keys() {
        assert_eq!(hash_bits_for(0), 8);
        assert_eq!(hash_bits_for(2), 9);
        assert_eq!(hash_bits_for(150_000), 25);
        assert_eq!(hash_bits_for(1 << 30), 32);
    }

    #[test]
    fn hashes_are_the_documented_functions() {
        // FNV-1a 64 test vectors.
        assert_eq!(value_hash(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(value_hash(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(value_hash(b"foobar"), 0x8594_4171_f739_67e8);
        // The combination is order-sensitive: (app, ip, ua) keys do not collide by permutation.
        let (a, b, c) = (value_hash(b"app"), value_hash(b"1.2.3.4"), value_hash(b"ua"));
        assert_ne!(key_hash(a, b, c), key_hash(b, a, c));
        assert_ne!(key_hash(a, b, c), key_hash(a, c, b));
        // Pinned: the hash is on disk and must never change.
        assert_eq!(key_hash(a, b, c), 2_450_350_075);
    }

    #[test]
    fn only_the_events_table_is_indexed() {
        assert_eq!(fingerprint_columns(&Schema::events()), Some([events::APP_ID, events::IP, events::USER_AGENT]));
        let mut other = Schema::events();
        other.name = "campaign_costs".into();
        assert_eq!(fingerprint_columns(&other), None);
    }
}
