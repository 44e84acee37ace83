//! Ingest protocol framing: the frame envelope, the five frame types, and reading one frame
//! from a socket.
//!
//! Every frame is `u32 body_len | u32 crc32(body) | body` (little-endian), and the body is
//! `u8 frame_type | payload`. Decoding treats every byte as hostile: the body length is checked
//! against the caller's limit before any buffer grows, the body is read into a buffer that
//! grows only as bytes actually arrive (a peer announcing 64 MiB and sending 10 bytes costs
//! 10 bytes), every field length is bounded by what is present, and decoding never panics.
//!
//! This module knows nothing of connections, timeouts or policy; see `docs/ingest-protocol.md`
//! for the byte diagrams.

use lookback_common::schema::SCHEMA_NAME_BYTES_MAX;
use lookback_common::{crc32, ByteReader, ReadError};
use std::io;
use tokio::io::{AsyncRead, AsyncReadExt};

/// `b"LKBK"`: the first bytes of every Hello payload.
pub const MAGIC: [u8; 4] = *b"LKBK";
/// The only protocol version this implementation speaks.
pub const PROTOCOL_VERSION: u16 = 1;
/// `u32 body_len | u32 crc32`.
pub const FRAME_HEADER_BYTES: usize = 8;
/// Longest table name a Batch frame may carry (the schema limit).
pub const TABLE_NAME_BYTES_MAX: usize = SCHEMA_NAME_BYTES_MAX;
/// Longest error message a server sends; longer messages are cut at a character boundary.
pub const ERROR_MESSAGE_BYTES_MAX: usize = 1024;
/// Largest possible Hello body (type, magic, version, producer id, u16-prefixed api key).
pub const HELLO_BODY_BYTES_MAX: usize = 1 + 4 + 2 + 8 + 2 + u16::MAX as usize;
/// Largest body a server ever sends (an Error frame with a u16-prefixed message).
pub const SERVER_BODY_BYTES_MAX: usize = 1 + 8 + 2 + 2 + u16::MAX as usize;
/// Ack flags bit 0: the batch was applied earlier; nothing new was written.
pub const ACK_FLAG_DUPLICATE_BATCH: u8 = 1;

/// On-wire frame type codes. Never renumber.
pub mod frame_type {
    pub const HELLO: u8 = 1;
    pub const WELCOME: u8 = 2;
    pub const BATCH: u8 = 3;
    pub const ACK: u8 = 4;
    pub const ERROR: u8 = 5;
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("frame body length {body_len} is outside 1..={frame_bytes_max}")]
    BodyLength {
        body_len: u32,
        frame_bytes_max: usize,
    },
    #[error("frame crc {actual:#010x} does not match header crc {expected:#010x}")]
    Crc { expected: u32, actual: u32 },
    #[error("truncated frame: {0}")]
    Truncated(#[from] ReadError),
    #[error("unknown frame type {0}")]
    UnknownType(u8),
    #[error("hello does not start with magic LKBK")]
    BadMagic,
    #[error("unsupported protocol version {0}, this server speaks version 1")]
    UnsupportedVersion(u16),
    #[error("{0} is not UTF-8")]
    NotUtf8(&'static str),
    #[error("{0} trailing bytes after the frame payload")]
    TrailingBytes(usize),
    #[error("invalid field: {0}")]
    Invalid(String),
}

/// Failure to read one frame from a stream.
#[derive(Debug, thiserror::Error)]
pub enum ReadFrameError {
    #[error("read frame: {0}")]
    Io(#[from] io::Error),
    #[error("connection closed in the middle of a frame")]
    ClosedMidFrame,
    #[error(transparent)]
    Frame(#[from] FrameError),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello<'a> {
    pub version: u16,
    /// 0 = anonymous: no batch-sequence deduplication.
    pub producer_id: u64,
    pub api_key: &'a str,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Welcome {
    pub version: u16,
    pub producer_last_seq: u64,
    pub frame_bytes_max: u32,
    pub batch_events_max: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchFrame<'a> {
    /// > 0, strictly increasing per producer.
    pub seq: u64,
    pub table: &'a str,
    /// Batch-codec bytes (`lookback_common::encode_batch`), not yet validated.
    pub batch: &'a [u8],
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AckFrame {
    pub seq: u64,
    pub lsn: u64,
    pub events_accepted: u32,
    pub events_deduplicated: u32,
    pub flags: u8,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorFrame<'a> {
    /// The batch this error is about, 0 when it is about the connection.
    pub seq: u64,
    /// Raw code: decoding accepts codes this version does not know (see `ErrorCode`).
    pub code: u16,
    pub message: &'a str,
}

/// A decoded frame body, borrowing from the receive buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame<'a> {
    Hello(Hello<'a>),
    Welcome(Welcome),
    Batch(BatchFrame<'a>),
    Ack(AckFrame),
    Error(ErrorFrame<'a>),
}

impl Frame<'_> {
    pub fn type_name(&self) -> &'static str {
        match self {
            Frame::Hello(_) => "hello",
            Frame::Welcome(_) => "welcome",
            Frame::Batch(_) => "batch",
            Frame::Ack(_) => "ack",
            Frame::Error(_) => "error",
        }
    }
}

/// Appends one complete frame (header and body) to `out`.
///
/// Panics if a length field overflows (api key or message over 65535 bytes, table name over
/// 65535 bytes, body over 4 GiB): callers validate those before building frames.
pub fn encode_frame(frame: &Frame<'_>, out: &mut Vec<u8>) {
    let start = begin_frame(out);
    match frame {
        Frame::Hello(h) => {
            out.push(frame_type::HELLO);
            out.extend_from_slice(&MAGIC);
            out.extend_from_slice(&h.version.to_le_bytes());
            out.extend_from_slice(&h.producer_id.to_le_bytes());
            put_u16_len(out, h.api_key.as_bytes());
        }
        Frame::Welcome(w) => {
            out.push(frame_type::WELCOME);
            out.extend_from_slice(&w.version.to_le_bytes());
            out.extend_from_slice(&w.producer_last_seq.to_le_bytes());
            out.extend_from_slice(&w.frame_bytes_max.to_le_bytes());
            out.extend_from_slice(&w.batch_events_max.to_le_bytes());
        }
        Frame::Batch(b) => {
            put_batch_prefix(out, b.seq, b.table);
            out.extend_from_slice(b.batch);
        }
        Frame::Ack(a) => {
            out.push(frame_type::ACK);
            out.extend_from_slice(&a.seq.to_le_bytes());
            out.extend_from_slice(&a.lsn.to_le_bytes());
            out.extend_from_slice(&a.events_accepted.to_le_bytes());
            out.extend_from_slice(&a.events_deduplicated.to_le_bytes());
            out.push(a.flags);
        }
        Frame::Error(e) => {
            out.push(frame_type::ERROR);
            out.extend_from_slice(&e.seq.to_le_bytes());
            out.extend_from_slice(&e.code.to_le_bytes());
            put_u16_len(out, e.message.as_bytes());
        }
    }
    finish_frame(out, start);
}

/// Reserves the header of a frame whose body the caller appends next; returns its offset.
pub fn begin_frame(out: &mut Vec<u8>) -> usize {
    let start = out.len();
    out.extend_from_slice(&[0u8; FRAME_HEADER_BYTES]);
    start
}

/// Fills in the header reserved by [`begin_frame`] once the body is complete.
pub fn finish_frame(out: &mut [u8], start: usize) {
    let body = &out[start + FRAME_HEADER_BYTES..];
    assert!(
        !body.is_empty(),
        "a frame body holds at least its type byte"
    );
    let body_len = u32::try_from(body.len()).expect("frame body exceeds 4 GiB");
    let crc = crc32(body);
    out[start..start + 4].copy_from_slice(&body_len.to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// Appends the Batch frame's type byte, sequence and table name; the batch bytes follow.
pub fn put_batch_prefix(out: &mut Vec<u8>, seq: u64, table: &str) {
    out.push(frame_type::BATCH);
    out.extend_from_slice(&seq.to_le_bytes());
    put_u16_len(out, table.as_bytes());
}

fn put_u16_len(out: &mut Vec<u8>, bytes: &[u8]) {
    let len = u16::try_from(bytes.len()).expect("u16-prefixed frame field exceeds 65535 bytes");
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(bytes);
}

/// Cuts `message` to at most [`ERROR_MESSAGE_BYTES_MAX`] bytes on a character boundary.
pub fn truncate_message(message: &str) -> &str {
    if message.len() <= ERROR_MESSAGE_BYTES_MAX {
        return message;
    }
    let mut end = ERROR_MESSAGE_BYTES_MAX;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    &message[..end]
}

/// Decodes a frame body (type byte and payload). The whole body must be consumed.
pub fn decode_body(body: &[u8]) -> Result<Frame<'_>, FrameError> {
    let mut r = ByteReader::new(body);
    let frame = match r.u8()? {
        frame_type::HELLO => Frame::Hello(decode_hello(&mut r)?),
        frame_type::WELCOME => Frame::Welcome(decode_welcome(&mut r)?),
        frame_type::BATCH => Frame::Batch(decode_batch_frame(&mut r)?),
        frame_type::ACK => Frame::Ack(decode_ack(&mut r)?),
        frame_type::ERROR => Frame::Error(decode_error(&mut r)?),
        other => return Err(FrameError::UnknownType(other)),
    };
    if !r.is_empty() {
        return Err(FrameError::TrailingBytes(r.remaining()));
    }
    Ok(frame)
}

fn decode_hello<'a>(r: &mut ByteReader<'a>) -> Result<Hello<'a>, FrameError> {
    if r.array::<4>()? != MAGIC {
        return Err(FrameError::BadMagic);
    }
    // The version comes before anything whose layout a later version might change.
    let version = r.u16()?;
    if version != PROTOCOL_VERSION {
        return Err(FrameError::UnsupportedVersion(version));
    }
    let producer_id = r.u64()?;
    let api_key = utf8(r.bytes_u16_len()?, "api key")?;
    Ok(Hello {
        version,
        producer_id,
        api_key,
    })
}

fn decode_welcome(r: &mut ByteReader<'_>) -> Result<Welcome, FrameError> {
    Ok(Welcome {
        version: r.u16()?,
        producer_last_seq: r.u64()?,
        frame_bytes_max: r.u32()?,
        batch_events_max: r.u32()?,
    })
}

fn decode_batch_frame<'a>(r: &mut ByteReader<'a>) -> Result<BatchFrame<'a>, FrameError> {
    let seq = r.u64()?;
    if seq == 0 {
        return Err(FrameError::Invalid(
            "batch seq must be greater than 0".into(),
        ));
    }
    let table = utf8(r.bytes_u16_len()?, "table name")?;
    if table.is_empty() || table.len() > TABLE_NAME_BYTES_MAX {
        return Err(FrameError::Invalid(format!(
            "table name of {} bytes is outside 1..={TABLE_NAME_BYTES_MAX}",
            table.len()
        )));
    }
    let batch = r.bytes(r.remaining())?;
    Ok(BatchFrame { seq, table, batch })
}

fn decode_ack(r: &mut ByteReader<'_>) -> Result<AckFrame, FrameError> {
    Ok(AckFrame {
        seq: r.u64()?,
        lsn: r.u64()?,
        events_accepted: r.u32()?,
        events_deduplicated: r.u32()?,
        flags: r.u8()?,
    })
}

fn decode_error<'a>(r: &mut ByteReader<'a>) -> Result<ErrorFrame<'a>, FrameError> {
    let seq = r.u64()?;
    let code = r.u16()?;
    let message = utf8(r.bytes_u16_len()?, "error message")?;
    Ok(ErrorFrame { seq, code, message })
}

fn utf8<'a>(bytes: &'a [u8], field: &'static str) -> Result<&'a str, FrameError> {
    std::str::from_utf8(bytes).map_err(|_| FrameError::NotUtf8(field))
}

/// Checks a header's body length against `frame_bytes_max` (bodies are never empty).
pub fn check_body_len(body_len: u32, frame_bytes_max: usize) -> Result<usize, FrameError> {
    let len = body_len as usize;
    if len == 0 || len > frame_bytes_max {
        return Err(FrameError::BodyLength {
            body_len,
            frame_bytes_max,
        });
    }
    Ok(len)
}

/// Reads one frame into `body` (cleared first; its capacity is reused across frames) and
/// checks its length and CRC. `Ok(false)` means the peer closed cleanly between frames.
///
/// Not cancel-safe: if the future is dropped mid-frame the stream is no longer at a frame
/// boundary and must be closed.
pub async fn read_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
    body: &mut Vec<u8>,
    frame_bytes_max: usize,
) -> Result<bool, ReadFrameError> {
    let mut header = [0u8; FRAME_HEADER_BYTES];
    if !read_header(reader, &mut header).await? {
        return Ok(false);
    }
    let [l0, l1, l2, l3, c0, c1, c2, c3] = header;
    let len = check_body_len(u32::from_le_bytes([l0, l1, l2, l3]), frame_bytes_max)?;
    let expected = u32::from_le_bytes([c0, c1, c2, c3]);
    body.clear();
    // `take` + `read_to_end` grows the buffer as data arrives rather than trusting `len`.
    let read = reader.take(len as u64).read_to_end(body).await?;
    if read < len {
        return Err(ReadFrameError::ClosedMidFrame);
    }
    let actual = crc32(body);
    if actual != expected {
        return Err(FrameError::Crc { expected, actual }.into());
    }
    Ok(true)
}

/// Fills `header`; `Ok(false)` on EOF before its first byte.
async fn read_header<R: AsyncRead + Unpin>(
    reader: &mut R,
    header: &mut [u8; FRAME_HEADER_BYTES],
) -> Result<bool, ReadFrameError> {
    let mut filled = 0;
    while filled < FRAME_HEADER_BYTES {
        let n = reader.read(&mut header[filled..]).await?;
        if n == 0 {
            return if filled == 0 {
                Ok(false)
            } else {
                Err(ReadFrameError::ClosedMidFrame)
            };
        }
        filled += n;
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples() -> Vec<Frame<'static>> {
        vec![
            Frame::Hello(Hello {
                version: 1,
                producer_id: 42,
                api_key: "key-é",
            }),
            Frame::Hello(Hello {
                version: 1,
                producer_id: 0,
                api_key: "",
            }),
            Frame::Welcome(Welcome {
                version: 1,
                producer_last_seq: 7,
                frame_bytes_max: 64 << 20,
                batch_events_max: 100_000,
            }),
            Frame::Batch(BatchFrame {
                seq: 3,
                table: "events",
                batch: &[1, 2, 3, 4, 5],
            }),
            Frame::Batch(BatchFrame {
                seq: u64::MAX,
                table: "t",
                batch: &[],
            }),
            Frame::Ack(AckFrame {
                seq: 3,
                lsn: 99,
                events_accepted: 10,
                events_deduplicated: 2,
                flags: ACK_FLAG_DUPLICATE_BATCH,
            }),
            Frame::Error(ErrorFrame {
                seq: 0,
                code: 4,
                message: "overloaded: try later",
            }),
        ]
    }

    fn encoded(frame: &Frame<'_>) -> Vec<u8> {
        let mut out = Vec::new();
        encode_frame(frame, &mut out);
        out
    }

    #[test]
    fn every_frame_type_roundtrips() {
        for frame in samples() {
            let bytes = encoded(&frame);
            let len = u32::from_le_bytes(bytes[0..4].try_into().expect("4 bytes")) as usize;
            assert_eq!(len, bytes.len() - FRAME_HEADER_BYTES);
            let crc = u32::from_le_bytes(bytes[4..8].try_into().expect("4 bytes"));
            assert_eq!(crc, crc32(&bytes[8..]));
            assert_eq!(decode_body(&bytes[8..]).expect("decodes"), frame);
        }
    }

    #[test]
    fn every_truncated_body_fails_cleanly() {
        for frame in samples() {
            let bytes = encoded(&frame);
            let body = &bytes[FRAME_HEADER_BYTES..];
            // A Batch's batch bytes run to the end of the body, so only its prefix is checked.
            let prefix = match &frame {
                Frame::Batch(b) => body.len() - b.batch.len(),
                _ => body.len(),
            };
            for len in 0..prefix {
                assert!(
                    decode_body(&body[..len]).is_err(),
                    "{} cut to {len}",
                    frame.type_name()
                );
            }
        }
    }

    #[tokio::test]
    async fn read_frame_at_every_truncation_fails_cleanly() {
        for frame in samples() {
            let bytes = encoded(&frame);
            let mut body = Vec::new();
            for len in 1..bytes.len() {
                let mut cut = &bytes[..len];
                let result = read_frame(&mut cut, &mut body, 1 << 20).await;
                assert!(
                    matches!(result, Err(ReadFrameError::ClosedMidFrame)),
                    "{} cut to {len}: {result:?}",
                    frame.type_name()
                );
            }
            let mut whole = &bytes[..];
            assert!(read_frame(&mut whole, &mut body, 1 << 20)
                .await
                .expect("reads"));
            assert_eq!(decode_body(&body).expect("decodes"), frame);
            assert!(
                !read_frame(&mut whole, &mut body, 1 << 20)
                    .await
                    .expect("reads"),
                "clean EOF"
            );
        }
    }

    #[tokio::test]
    async fn bad_lengths_and_crc_are_rejected_before_reading_the_body() {
        let mut body = Vec::new();
        for len in [0u32, 1025, u32::MAX] {
            let mut header = Vec::new();
            header.extend_from_slice(&len.to_le_bytes());
            header.extend_from_slice(&0u32.to_le_bytes());
            let result = read_frame(&mut &header[..], &mut body, 1024).await;
            assert!(matches!(
                result,
                Err(ReadFrameError::Frame(FrameError::BodyLength { .. }))
            ));
            assert!(
                body.capacity() < 1 << 20,
                "no allocation of the announced size"
            );
        }
        let mut bytes = encoded(&samples()[0]);
        bytes[FRAME_HEADER_BYTES + 3] ^= 0x40;
        let result = read_frame(&mut &bytes[..], &mut body, 1 << 20).await;
        assert!(matches!(
            result,
            Err(ReadFrameError::Frame(FrameError::Crc { .. }))
        ));
    }

    #[test]
    fn invalid_fields_are_rejected() {
        assert_eq!(decode_body(&[0x7f]), Err(FrameError::UnknownType(0x7f)));
        let mut hello = encoded(&samples()[0]);
        hello[FRAME_HEADER_BYTES + 5] = 2; // version low byte
        assert_eq!(
            decode_body(&hello[FRAME_HEADER_BYTES..]),
            Err(FrameError::UnsupportedVersion(2))
        );
        hello[FRAME_HEADER_BYTES + 1] = b'X';
        assert_eq!(
            decode_body(&hello[FRAME_HEADER_BYTES..]),
            Err(FrameError::BadMagic)
        );
        let zero_seq = encoded(&Frame::Batch(BatchFrame {
            seq: 0,
            table: "t",
            batch: &[],
        }));
        assert!(matches!(
            decode_body(&zero_seq[8..]),
            Err(FrameError::Invalid(_))
        ));
        let long = "x".repeat(TABLE_NAME_BYTES_MAX + 1);
        let long_table = encoded(&Frame::Batch(BatchFrame {
            seq: 1,
            table: &long,
            batch: &[],
        }));
        assert!(matches!(
            decode_body(&long_table[8..]),
            Err(FrameError::Invalid(_))
        ));
        let mut ack = encoded(&samples()[5]);
        ack.push(0);
        assert_eq!(decode_body(&ack[8..]), Err(FrameError::TrailingBytes(1)));
    }

    /// Pins the worked example in docs/ingest-protocol.md §7.
    #[test]
    fn documented_example_bytes() {
        use lookback_common::{encode_batch, BatchBuilder, ColumnDef, ColumnType, Schema, Value};
        let c = ColumnDef::new;
        let columns = vec![
            c("id", ColumnType::Int64, false),
            c("name", ColumnType::Text, true),
        ];
        let schema = Schema::new("t", columns, vec![], vec![]).expect("schema");
        let mut builder = BatchBuilder::new(&schema, 1);
        builder
            .push_row(&[Value::Int64(7), Value::Text("hi".into())])
            .expect("row");
        let mut batch = Vec::new();
        encode_batch(&builder.finish().expect("batch"), &mut batch);
        let frame = encoded(&Frame::Batch(BatchFrame {
            seq: 1,
            table: "t",
            batch: &batch,
        }));
        let body: Vec<u8> = [
            &[3u8][..],
            &[1, 0, 0, 0, 0, 0, 0, 0],
            &[1, 0, b't'],
            &[1, 0, 0, 0, 2, 0, 0, 0],
            &[2, 0, 0, 0],
            &[7, 0, 0, 0, 0, 0, 0, 0],
            &[5, 0, 0, 0],
            &[2, 0, 0, 0],
            b"hi",
        ]
        .concat();
        assert_eq!(&frame[..4], &[0x2a, 0, 0, 0]);
        assert_eq!(&frame[FRAME_HEADER_BYTES..], &body[..]);
        let ack = AckFrame {
            seq: 1,
            lsn: 5,
            events_accepted: 1,
            events_deduplicated: 0,
            flags: 0,
        };
        assert_eq!(encoded(&Frame::Ack(ack)).len(), 34);
        let welcome = Welcome {
            version: 1,
            producer_last_seq: 0,
            frame_bytes_max: 0,
            batch_events_max: 0,
        };
        assert_eq!(encoded(&Frame::Welcome(welcome)).len(), 27);
    }

    #[test]
    fn long_messages_are_cut_on_a_char_boundary() {
        let message = "é".repeat(ERROR_MESSAGE_BYTES_MAX);
        let cut = truncate_message(&message);
        assert!(cut.len() <= ERROR_MESSAGE_BYTES_MAX);
        assert!(cut.len() >= ERROR_MESSAGE_BYTES_MAX - 1);
        assert_eq!(truncate_message("short"), "short");
    }
}
