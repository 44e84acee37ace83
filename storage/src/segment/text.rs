//! Encodings of text column blocks (dense: non-null values only).
//!
//! - plain: byte planes of the `count` value lengths, then the value bytes concatenated.
//! - dict: `u32 dict_count`, byte planes of the dictionary lengths, dictionary bytes (entries
//!   sorted byte-wise, distinct), then byte planes of one code per value.
//! - dict RLE: the same dictionary, then `u32 run_count`, byte planes of
//!   `zigzag(code - previous run's code)` per run (first run: from 0), byte planes of
//!   `run_length - 1` per run. Segments are sorted by device, so device attributes (ip, user
//!   agent, platform) come in long runs and sorted device ids give code deltas of +1.
//!
//! - segment codes: byte planes of one code per value into the column's segment dictionary
//!   (`dictionary.rs`), which is stored once per segment, not in the block.
//! - segment codes RLE: `u32 run_count` and the runs as in dict RLE, codes into the segment
//!   dictionary. Sorted device ids give increasing codes along each app's run.
//!
//! When the column has a segment dictionary the writer offers only the two segment-code forms
//! (they never lose to a per-block dictionary of the same values, and skip its cost). Otherwise
//! it offers plain always, and both dictionary forms when the block has at most
//! `dictionary_values_max` distinct values and at most half as many distinct values as values
//! (beyond that a dictionary cannot pay for itself); the smallest after compression wins.

use super::encoding::{
    get_planes, get_planes_u32, invalid, put_planes, unzigzag, zigzag, Invalid, ENCODING_DICT, ENCODING_DICT_RLE,
    ENCODING_PLAIN, ENCODING_SEGMENT_CODES, ENCODING_SEGMENT_CODES_RLE,
};
use super::COLUMN_BLOCK_RAW_BYTES_MAX;
use super::dictionary::TextDictionary;
use crate::sort::rank_text;
use lookback_common::{ByteReader, TextValues};

pub(crate) fn encode_texts(values: &[&[u8]], dictionary_values_max: usize) -> Vec<(u8, Vec<u8>)> {
    let mut candidates = vec![(ENCODING_PLAIN, encode_plain(values))];
    if values.is_empty() {
        return candidates;
    }
    let (dictionary, codes) = rank_text(values);
    if dictionary.len() > dictionary_values_max || dictionary.len() > values.len() / 2 {
        return candidates;
    }
    let mut dict = Vec::new();
    put_strings(&mut dict, &dictionary);
    let mut plain_codes = dict.clone();
    put_planes(&mut plain_codes, &codes.iter().map(|&c| c as u64).collect::<Vec<_>>());
    candidates.push((ENCODING_DICT, plain_codes));
    let mut runs = dict;
    put_runs(&mut runs, &codes);
    candidates.push((ENCODING_DICT_RLE, runs));
    candidates
}

/// Both segment-code candidates for the codes of one block's non-null values.
pub(crate) fn encode_segment_codes(codes: &[u32]) -> Vec<(u8, Vec<u8>)> {
    let mut plain = Vec::with_capacity(1 + codes.len() * 3);
    put_planes(&mut plain, &codes.iter().map(|&c| c as u64).collect::<Vec<_>>());
    let mut runs = Vec::new();
    put_runs(&mut runs, codes);
    vec![(ENCODING_SEGMENT_CODES, plain), (ENCODING_SEGMENT_CODES_RLE, runs)]
}

fn encode_plain(values: &[&[u8]]) -> Vec<u8> {
    let bytes: usize = values.iter().map(|v| v.len()).sum();
    let mut out = Vec::with_capacity(bytes + values.len() * 2 + 1);
    put_planes(&mut out, &values.iter().map(|v| v.len() as u64).collect::<Vec<_>>());
    for v in values {
        out.extend_from_slice(v);
    }
    out
}

fn put_strings(out: &mut Vec<u8>, strings: &[&[u8]]) {
    out.extend_from_slice(&(strings.len() as u32).to_le_bytes());
    put_planes(out, &strings.iter().map(|s| s.len() as u64).collect::<Vec<_>>());
    for s in strings {
        out.extend_from_slice(s);
    }
}

fn put_runs(out: &mut Vec<u8>, codes: &[u32]) {
    let mut starts = Vec::new();
    let mut lengths = Vec::new();
    for (i, &code) in codes.iter().enumerate() {
        if i > 0 && codes[i - 1] == code {
            if let Some(len) = lengths.last_mut() {
                *len += 1;
            }
        } else {
            starts.push(code);
            lengths.push(0u64);
        }
    }
    let mut previous = 0i64;
    let deltas: Vec<u64> = starts
        .iter()
        .map(|&c| {
            let d = zigzag(c as i64 - previous);
            previous = c as i64;
            d
        })
        .collect();
    out.extend_from_slice(&(starts.len() as u32).to_le_bytes());
    put_planes(out, &deltas);
    put_planes(out, &lengths);
}

/// Decodes `count` dense values. `segment_dictionary` is the column's segment dictionary, which
/// the segment-code encodings need (the caller passes it when the column has one).
pub(crate) fn decode_texts(
    r: &mut ByteReader<'_>,
    encoding: u8,
    count: usize,
    segment_dictionary: Option<&TextDictionary>,
) -> Result<TextValues, Invalid> {
    match encoding {
        ENCODING_PLAIN => {
            let lengths = get_planes(r, count)?;
            let strings = get_strings(r, &lengths)?;
            let codes: Vec<u32> = (0..count as u32).collect();
            expand_codes(strings.len(), |c| strings[c].as_bytes(), &codes)
        }
        ENCODING_DICT | ENCODING_DICT_RLE => {
            let strings = get_dictionary(r, count)?;
            let codes = get_codes(r, encoding == ENCODING_DICT, count)?;
            expand_codes(strings.len(), |c| strings[c].as_bytes(), &codes)
        }
        ENCODING_SEGMENT_CODES | ENCODING_SEGMENT_CODES_RLE => {
            let Some(dictionary) = segment_dictionary else {
                return invalid("segment codes without a segment dictionary");
            };
            let codes = get_codes(r, encoding == ENCODING_SEGMENT_CODES, count)?;
            expand_codes(dictionary.len(), |c| dictionary.entry(c), &codes)
        }
        other => invalid(format!("unknown text encoding {other}")),
    }
}

/// The `count` dense codes of a segment-code encoding, each checked to be below
/// `dictionary_len`: for readers that keep text as codes instead of expanding it.
pub(crate) fn decode_segment_codes(
    r: &mut ByteReader<'_>,
    encoding: u8,
    count: usize,
    dictionary_len: usize,
) -> Result<Vec<u32>, Invalid> {
    if !matches!(encoding, ENCODING_SEGMENT_CODES | ENCODING_SEGMENT_CODES_RLE) {
        return invalid(format!("encoding {encoding} holds no segment codes"));
    }
    let codes = get_codes(r, encoding == ENCODING_SEGMENT_CODES, count)?;
    // The largest code, in one pass the compiler vectorizes (an early-exit search does not).
    match codes.iter().copied().max() {
        Some(c) if c as usize >= dictionary_len => invalid(format!("code {c} outside a dictionary of {dictionary_len}")),
        _ => Ok(codes),
    }
}

/// Plain codes (byte planes) or runs.
fn get_codes(r: &mut ByteReader<'_>, plain: bool, count: usize) -> Result<Vec<u32>, Invalid> {
    if plain {
        get_planes_u32(r, count)
    } else {
        get_runs(r, count)
    }
}

fn get_dictionary<'a>(r: &mut ByteReader<'a>, count: usize) -> Result<Vec<&'a str>, Invalid> {
    let dict_count = r.u32()? as usize;
    if dict_count > count || (dict_count == 0) != (count == 0) {
        return invalid(format!("dictionary of {dict_count} entries for {count} values"));
    }
    let lengths = get_planes(r, dict_count)?;
    get_strings(r, &lengths)
}

/// Slices consecutive strings of the given lengths, each checked to be UTF-8.
fn get_strings<'a>(r: &mut ByteReader<'a>, lengths: &[u64]) -> Result<Vec<&'a str>, Invalid> {
    let total = lengths.iter().try_fold(0u64, |acc, &l| acc.checked_add(l));
    match total {
        Some(t) if t <= r.remaining() as u64 => {}
        _ => return invalid("string lengths exceed the payload"),
    }
    lengths
        .iter()
        .map(|&len| {
            let bytes = r.bytes(len as usize)?;
            std::str::from_utf8(bytes).map_err(|_| Invalid("text is not UTF-8".into()))
        })
        .collect()
}

fn get_runs(r: &mut ByteReader<'_>, count: usize) -> Result<Vec<u32>, Invalid> {
    let run_count = r.u32()? as usize;
    if run_count > count || (run_count == 0) != (count == 0) {
        return invalid(format!("{run_count} runs for {count} values"));
    }
    let deltas = get_planes(r, run_count)?;
    let lengths = get_planes(r, run_count)?;
    let mut codes = Vec::with_capacity(count);
    let mut code = 0i64;
    for (d, len) in deltas.into_iter().zip(lengths) {
        code = code.wrapping_add(unzigzag(d));
        let run = len.checked_add(1).filter(|&run| run <= (count - codes.len()) as u64);
        let (Some(run), Ok(c)) = (run, u32::try_from(code)) else {
            return invalid("run exceeds the block or code out of range");
        };
        codes.extend(std::iter::repeat_n(c, run as usize));
    }
    if codes.len() != count {
        return invalid(format!("runs cover {} of {count} values", codes.len()));
    }
    Ok(codes)
}

/// Builds the values `entry(codes[i])` from a dictionary of `len` UTF-8 entries, checking every
/// code and bounding the expanded size before allocating.
fn expand_codes<'d>(
    len: usize,
    entry: impl Fn(usize) -> &'d [u8],
    codes: &[u32],
) -> Result<TextValues, Invalid> {
    let mut total = 0usize;
    for &c in codes {
        if c as usize >= len {
            return invalid(format!("code {c} outside a dictionary of {len}"));
        }
        total += entry(c as usize).len();
        if total > COLUMN_BLOCK_RAW_BYTES_MAX {
            return invalid("expanded text exceeds the column block limit");
        }
    }
    let mut text = TextValues::with_capacity(codes.len(), total);
    for &c in codes {
        // Entries are validated UTF-8 (by get_strings or the segment dictionary's decoder),
        // so appending bytes keeps the TextValues invariant.
        text.data.extend_from_slice(entry(c as usize));
        text.offsets.push(text.data.len() as u32);
    }
    Ok(text)
}
