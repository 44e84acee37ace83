//! Backend (server-to-client) bytes as the `pgwire` target checks them: split into messages,
//! and each ErrorResponse's fields. A decoder of bytes the server under test wrote, so it
//! returns what is wrong instead of trusting a length field.

/// One message: its type byte and its body (without the type byte and length).
#[derive(Debug, PartialEq, Eq)]
pub struct Message<'a> {
    pub kind: u8,
    pub body: &'a [u8],
}

/// The single byte a server answers an SSLRequest or GSSENCRequest with when it refuses it.
const NEGOTIATION_REFUSED: u8 = b'N';
/// A length field above this after an 'N' is the next message's type byte and length read one
/// byte early: the 'N' was a refusal, not a NoticeResponse (every message type byte is at
/// least 0x31, so the misread length is at least 0x3100_0000).
const NOTICE_BYTES_PLAUSIBLE_MAX: u32 = 0x1000_0000;
/// The type byte of ErrorResponse.
pub const ERROR_RESPONSE: u8 = b'E';

/// Splits `bytes` into messages. An incomplete last message (the read stopped before it
/// ended) is left out. Err: a length field below 4, which no message can have.
pub fn split(bytes: &[u8]) -> Result<Vec<Message<'_>>, String> {
    let mut out = Vec::new();
    let mut at = 0usize;
    while at < bytes.len() {
        let Some(header) = bytes.get(at..at + 5) else {
            break;
        };
        let kind = header[0];
        let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]);
        if kind == NEGOTIATION_REFUSED && len > NOTICE_BYTES_PLAUSIBLE_MAX {
            at += 1;
            continue;
        }
        if len < 4 {
            return Err(format!(
                "message {:?} at byte {at} has length {len}, below 4",
                kind as char
            ));
        }
        let end = at.saturating_add(1).saturating_add(len as usize);
        let Some(body) = bytes.get(at + 5..end) else {
            break;
        };
        out.push(Message { kind, body });
        at = end;
    }
    Ok(out)
}

/// The (field code, value) pairs of an ErrorResponse or NoticeResponse body: each value a
/// NUL-terminated string, the list ended by a 0 code.
pub fn fields(body: &[u8]) -> Result<Vec<(u8, &[u8])>, String> {
    let mut out = Vec::new();
    let mut rest = body;
    loop {
        match rest.split_first() {
            None => return Err("error fields end without the terminating 0".into()),
            Some((0, [])) => return Ok(out),
            Some((0, tail)) => {
                return Err(format!(
                    "{} bytes after the terminating 0 of the fields",
                    tail.len()
                ))
            }
            Some((&code, tail)) => {
                let nul = tail
                    .iter()
                    .position(|&b| b == 0)
                    .ok_or("an error field without its NUL")?;
                out.push((code, &tail[..nul]));
                rest = &tail[nul + 1..];
            }
        }
    }
}

/// An ErrorResponse is well formed: it has a message (`M`) and a SQLSTATE (`C`) of exactly
/// five digits or upper-case letters, as PostgreSQL's are.
pub fn check_error_response(body: &[u8]) -> Result<(), String> {
    let fields = fields(body)?;
    let field = |code: u8| fields.iter().find(|(c, _)| *c == code).map(|(_, v)| *v);
    let sqlstate = field(b'C').ok_or("an ErrorResponse without a SQLSTATE (field C)")?;
    if !is_sqlstate(sqlstate) {
        return Err(format!(
            "an ErrorResponse with SQLSTATE {:?}, not five digits or capitals",
            String::from_utf8_lossy(sqlstate)
        ));
    }
    if field(b'M').is_none() {
        return Err("an ErrorResponse without a message (field M)".into());
    }
    Ok(())
}

/// Five characters, each a digit or an upper-case ASCII letter (PostgreSQL appendix A).
pub fn is_sqlstate(code: &[u8]) -> bool {
    code.len() == 5
        && code
            .iter()
            .all(|b| b.is_ascii_digit() || b.is_ascii_uppercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(code: &str) -> Vec<u8> {
        let mut body = Vec::new();
        for (c, v) in [(b'S', "ERROR"), (b'C', code), (b'M', "boom")] {
            body.push(c);
            body.extend_from_slice(v.as_bytes());
            body.push(0);
        }
        body.push(0);
        let mut out = vec![ERROR_RESPONSE];
        out.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
        out.extend_from_slice(&body);
        out
    }

    #[test]
    fn split_skips_a_refusal_byte_and_stops_at_a_cut_message() {
        let mut bytes = vec![b'N'];
        bytes.extend_from_slice(&error("42601"));
        bytes.extend_from_slice(&[b'Z', 0, 0, 0, 5, b'I']);
        bytes.extend_from_slice(&[b'D', 0, 0, 0, 9, 1]);
        let messages = split(&bytes).expect("well framed");
        assert_eq!(
            messages.iter().map(|m| m.kind).collect::<Vec<_>>(),
            vec![b'E', b'Z']
        );
        assert!(check_error_response(messages[0].body).is_ok());
    }

    #[test]
    fn bad_lengths_and_sqlstates_are_reported() {
        assert!(split(&[b'Z', 0, 0, 0, 3, 0]).is_err());
        let bad = error("4260");
        assert!(check_error_response(&bad[5..]).is_err());
        let bad = error("4260x");
        assert!(check_error_response(&bad[5..]).is_err());
        assert!(
            check_error_response(&[b'C', b'1', 0]).is_err(),
            "no terminating 0"
        );
    }
}
