//! A small mutation fuzzer for stable Rust: the short mode the test suite runs. Each execution
//! takes a corpus input, applies one to four random mutations (bit flips, interesting bytes and
//! integers, insertions, deletions, duplicated or spliced ranges, truncation) and runs the
//! target under `catch_unwind`. It has no coverage feedback, which is what libFuzzer adds in
//! the long mode; the committed corpus (real files and frames) keeps the inputs deep.
//!
//! A target may have a dictionary (`fuzz/libfuzzer/<target>.dict`, libFuzzer's format, the
//! same file the long mode is given): then token mutations join the byte ones, inserting a
//! token or replacing a word (a run of letters, digits and `_`) with one. Byte mutations
//! alone rarely turn `SELECT` into `JOIN`; the SQL target needs whole keywords, identifiers
//! and literals to get past the parser.

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::time::{Duration, Instant};

/// Inputs grow to at most this many bytes.
pub const INPUT_BYTES_MAX: usize = 1 << 20;

#[derive(Debug)]
pub struct Failure {
    pub input: Vec<u8>,
    pub message: String,
}

/// Runs `target` on every corpus input, then on mutants (with tokens from `dictionary`, which
/// may be empty) until `duration` has passed. Returns how many executions ran.
pub fn run(target: fn(&[u8]), corpus: &[Vec<u8>], dictionary: &[Vec<u8>], duration: Duration, seed: u64) -> Result<u64, Failure> {
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut executions = 0u64;
    let empty = vec![Vec::new()];
    let corpus = if corpus.is_empty() { &empty[..] } else { corpus };
    for input in corpus {
        execute(target, input)?;
        executions += 1;
    }
    let deadline = Instant::now() + duration;
    let mut input = Vec::new();
    while Instant::now() < deadline {
        for _ in 0..64 {
            input.clear();
            input.extend_from_slice(&corpus[rng.gen_range(0..corpus.len())]);
            for _ in 0..rng.gen_range(1..=4) {
                match dictionary.is_empty() || rng.gen_bool(0.5) {
                    true => mutate(&mut input, corpus, &mut rng),
                    false => mutate_token(&mut input, dictionary, &mut rng),
                }
            }
            execute(target, &input)?;
            executions += 1;
        }
    }
    Ok(executions)
}

/// With this set, each input is written to the file it names before it runs: an abort (a
/// failed allocation, a stack overflow) ends the process before a [`Failure`] can report it.
pub const LAST_INPUT_ENV: &str = "LOOKBACK_FUZZ_LAST_INPUT";

fn execute(target: fn(&[u8]), input: &[u8]) -> Result<(), Failure> {
    if let Some(path) = std::env::var_os(LAST_INPUT_ENV) {
        let _ = std::fs::write(path, input);
    }
    std::panic::catch_unwind(|| target(input))
        .map_err(|panic| Failure { input: input.to_vec(), message: panic_message(panic.as_ref()) })
}

/// The message of a caught panic's payload.
pub fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "a panic without a message".into())
}

const INTERESTING_U32: [u32; 8] = [0, 1, 0x7f, 0x80, 0xff, 0xffff, 0x7fff_ffff, u32::MAX];

fn mutate(input: &mut Vec<u8>, corpus: &[Vec<u8>], rng: &mut SmallRng) {
    let len = input.len();
    match rng.gen_range(0..8) {
        0 if len > 0 => {
            let at = rng.gen_range(0..len);
            input[at] ^= 1 << rng.gen_range(0..8);
        }
        1 if len > 0 => {
            let at = rng.gen_range(0..len);
            input[at] = [0u8, 0xff, 0x7f, 0x80, 1][rng.gen_range(0..5)];
        }
        2 if len >= 4 => {
            let at = rng.gen_range(0..=len - 4);
            let value = INTERESTING_U32[rng.gen_range(0..INTERESTING_U32.len())];
            input[at..at + 4].copy_from_slice(&value.to_le_bytes());
        }
        3 if len < INPUT_BYTES_MAX => {
            let at = rng.gen_range(0..=len);
            let n = rng.gen_range(1..=16);
            let bytes: Vec<u8> = (0..n).map(|_| rng.gen()).collect();
            input.splice(at..at, bytes);
        }
        4 if len > 0 => {
            let at = rng.gen_range(0..len);
            let n = rng.gen_range(1..=(len - at).min(64));
            input.drain(at..at + n);
        }
        5 if len > 0 && len < INPUT_BYTES_MAX => {
            let from = rng.gen_range(0..len);
            let n = rng.gen_range(1..=(len - from).min(256));
            let chunk = input[from..from + n].to_vec();
            let at = rng.gen_range(0..=len);
            input.splice(at..at, chunk);
        }
        6 if len > 0 => input.truncate(rng.gen_range(0..len)),
        _ => {
            let other = &corpus[rng.gen_range(0..corpus.len())];
            if !other.is_empty() && len > 0 {
                let at = rng.gen_range(0..len);
                let from = rng.gen_range(0..other.len());
                input.truncate(at);
                input.extend_from_slice(&other[from..other.len().min(from + INPUT_BYTES_MAX - at)]);
            }
        }
    }
}

/// Inserts a dictionary token at a random place, or puts one in place of a random word.
fn mutate_token(input: &mut Vec<u8>, dictionary: &[Vec<u8>], rng: &mut SmallRng) {
    let token = &dictionary[rng.gen_range(0..dictionary.len())];
    if input.len() + token.len() + 1 > INPUT_BYTES_MAX {
        return;
    }
    let words = words(input);
    if words.is_empty() || rng.gen_bool(0.5) {
        let at = rng.gen_range(0..=input.len());
        let mut spaced = token.clone();
        spaced.push(b' ');
        input.splice(at..at, spaced);
    } else {
        let (start, end) = words[rng.gen_range(0..words.len())];
        input.splice(start..end, token.iter().copied());
    }
}

/// The byte ranges of the runs of ASCII letters, digits and `_` in `input`.
fn words(input: &[u8]) -> Vec<(usize, usize)> {
    let is_word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let mut out = Vec::new();
    let mut start = None;
    for (i, &b) in input.iter().enumerate() {
        match (start, is_word(b)) {
            (None, true) => start = Some(i),
            (Some(s), false) => {
                out.push((s, i));
                start = None;
            }
            _ => {}
        }
    }
    if let Some(s) = start {
        out.push((s, input.len()));
    }
    out
}

/// The dictionary of `target` (`fuzz/libfuzzer/<target>.dict`), empty when it has none.
pub fn dictionary(target: &str) -> Result<Vec<Vec<u8>>, String> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("libfuzzer").join(format!("{target}.dict"));
    match std::fs::read_to_string(&path) {
        Ok(text) => parse_dictionary(&text).map_err(|e| format!("{}: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(format!("read {}: {e}", path.display())),
    }
}

/// libFuzzer's dictionary format: one `name="value"` or `"value"` a line, `#` comments and
/// blank lines ignored; in the value, `\\`, `\"` and `\xNN` escapes.
pub fn parse_dictionary(text: &str) -> Result<Vec<Vec<u8>>, String> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let quoted = line.find('"').map(|i| &line[i..]).ok_or_else(|| format!("line {}: no quoted value", n + 1))?;
        let inner = quoted.strip_prefix('"').and_then(|q| q.strip_suffix('"')).ok_or_else(|| format!("line {}: the value must end with a quote", n + 1))?;
        out.push(unescape(inner).map_err(|e| format!("line {}: {e}", n + 1))?);
    }
    Ok(out)
}

fn unescape(value: &str) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(value.len());
    let mut bytes = value.bytes();
    while let Some(b) = bytes.next() {
        if b != b'\\' {
            out.push(b);
            continue;
        }
        match bytes.next() {
            Some(b'\\') => out.push(b'\\'),
            Some(b'"') => out.push(b'"'),
            Some(b'x') => {
                let hex: Vec<u8> = bytes.by_ref().take(2).collect();
                let text = std::str::from_utf8(&hex).map_err(|_| "a bad \\x escape".to_string())?;
                out.push(u8::from_str_radix(text, 16).map_err(|_| format!("a bad \\x escape {text:?}"))?);
            }
            other => return Err(format!("an unknown escape \\{}", other.map(char::from).unwrap_or(' '))),
        }
    }
    Ok(out)
}

/// The committed corpus of `target` (`fuzz/corpus/<target>/`).
pub fn corpus(target: &str) -> std::io::Result<Vec<Vec<u8>>> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus").join(target);
    let mut paths: Vec<_> = std::fs::read_dir(dir)?.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    paths.into_iter().map(std::fs::read).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dictionaries_parse_as_libfuzzer_reads_them() {
        let text = "# keywords\nkw1=\"SELECT\"\n\n\"a\\\"b\\\\c\"\nsync=\"S\\x00\\x00\\x00\\x04\"\n";
        let tokens = parse_dictionary(text).expect("a valid dictionary");
        assert_eq!(tokens, vec![b"SELECT".to_vec(), b"a\"b\\c".to_vec(), b"S\x00\x00\x00\x04".to_vec()]);
        assert!(parse_dictionary("kw=\"open").is_err());
        assert!(parse_dictionary("kw=\"\\q\"").is_err());
    }

    #[test]
    fn token_mutations_replace_whole_words() {
        assert_eq!(words(b"SELECT a_1 FROM t;"), vec![(0, 6), (7, 10), (11, 15), (16, 17)]);
        let mut rng = SmallRng::seed_from_u64(5);
        let dictionary = vec![b"JOIN".to_vec()];
        for _ in 0..32 {
            let mut input = b"SELECT a FROM t".to_vec();
            mutate_token(&mut input, &dictionary, &mut rng);
            assert!(input.windows(4).any(|w| w == b"JOIN"), "{}", String::from_utf8_lossy(&input));
        }
    }
}
