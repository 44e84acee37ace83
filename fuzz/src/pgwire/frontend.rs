//! Frontend (client-to-server) Postgres messages as bytes: what the `pgwire` target prepends
//! (a StartupMessage), what its health check sends, and what the seed corpus is built from;
//! and [`well_formed`], whether a message's body has the shape its type requires.
//! Encoding only, from values the caller chose; the server's decoder is what is under test.
//! Layouts as in the PostgreSQL protocol documentation ("Message Formats"): a type byte (none
//! for the startup-phase packets), a big-endian `u32` length that counts itself, the body.

/// Protocol 3.0 in a StartupMessage.
pub const PROTOCOL_3_0: u32 = 196_608;
/// The codes that take a protocol version's place in the startup-phase packets.
pub const SSL_REQUEST_CODE: u32 = 80_877_103;
pub const GSSENC_REQUEST_CODE: u32 = 80_877_104;
pub const CANCEL_REQUEST_CODE: u32 = 80_877_102;

/// Which object a Describe or Close names.
#[derive(Clone, Copy, Debug)]
pub enum Target {
    Statement,
    Portal,
}

impl Target {
    fn byte(self) -> u8 {
        match self {
            Target::Statement => b'S',
            Target::Portal => b'P',
        }
    }
}

/// A stream of frontend messages, built by chaining.
#[derive(Clone, Debug, Default)]
pub struct Messages {
    bytes: Vec<u8>,
}

impl Messages {
    pub fn new() -> Messages {
        Messages::default()
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }

    /// A packet without a type byte (the startup phase).
    fn untyped(&mut self, body: &[u8]) -> &mut Self {
        self.bytes
            .extend_from_slice(&packet_len(body).to_be_bytes());
        self.bytes.extend_from_slice(body);
        self
    }

    fn typed(&mut self, kind: u8, body: &[u8]) -> &mut Self {
        self.bytes.push(kind);
        self.untyped(body)
    }

    /// StartupMessage, protocol 3.0, with `parameters` as (name, value) pairs.
    pub fn startup(&mut self, parameters: &[(&str, &str)]) -> &mut Self {
        let mut body = PROTOCOL_3_0.to_be_bytes().to_vec();
        for (name, value) in parameters {
            cstring(&mut body, name);
            cstring(&mut body, value);
        }
        body.push(0);
        self.untyped(&body)
    }

    pub fn ssl_request(&mut self) -> &mut Self {
        self.untyped(&SSL_REQUEST_CODE.to_be_bytes())
    }

    pub fn gssenc_request(&mut self) -> &mut Self {
        self.untyped(&GSSENC_REQUEST_CODE.to_be_bytes())
    }

    pub fn cancel_request(&mut self, pid: i32, secret_key: i32) -> &mut Self {
        let mut body = CANCEL_REQUEST_CODE.to_be_bytes().to_vec();
        body.extend_from_slice(&pid.to_be_bytes());
        body.extend_from_slice(&secret_key.to_be_bytes());
        self.untyped(&body)
    }

    /// Query (simple protocol): one or more statements.
    pub fn query(&mut self, sql: &str) -> &mut Self {
        let mut body = Vec::new();
        cstring(&mut body, sql);
        self.typed(b'Q', &body)
    }

    /// Parse: prepare `sql` as `statement` ("" is the unnamed one) with parameter type OIDs
    /// (0: let the server infer).
    pub fn parse(&mut self, statement: &str, sql: &str, parameter_types: &[u32]) -> &mut Self {
        let mut body = Vec::new();
        cstring(&mut body, statement);
        cstring(&mut body, sql);
        body.extend_from_slice(&count(parameter_types.len()).to_be_bytes());
        for oid in parameter_types {
            body.extend_from_slice(&oid.to_be_bytes());
        }
        self.typed(b'P', &body)
    }

    /// Bind: `statement` to `portal` with text-format parameters (None: NULL) and text results.
    pub fn bind(
        &mut self,
        portal: &str,
        statement: &str,
        parameters: &[Option<&str>],
    ) -> &mut Self {
        let values: Vec<Option<&[u8]>> = parameters.iter().map(|p| p.map(str::as_bytes)).collect();
        self.bind_with_formats(portal, statement, &[], &values, &[])
    }

    /// Bind with explicit format codes (0 text, 1 binary; none: all text, one: for all).
    pub fn bind_with_formats(
        &mut self,
        portal: &str,
        statement: &str,
        parameter_formats: &[u16],
        parameters: &[Option<&[u8]>],
        result_formats: &[u16],
    ) -> &mut Self {
        let mut body = Vec::new();
        cstring(&mut body, portal);
        cstring(&mut body, statement);
        body.extend_from_slice(&count(parameter_formats.len()).to_be_bytes());
        for format in parameter_formats {
            body.extend_from_slice(&format.to_be_bytes());
        }
        body.extend_from_slice(&count(parameters.len()).to_be_bytes());
        for parameter in parameters {
            match parameter {
                None => body.extend_from_slice(&(-1i32).to_be_bytes()),
                Some(value) => {
                    body.extend_from_slice(&byte_len(value).to_be_bytes());
                    body.extend_from_slice(value);
                }
            }
        }
        body.extend_from_slice(&count(result_formats.len()).to_be_bytes());
        for format in result_formats {
            body.extend_from_slice(&format.to_be_bytes());
        }
        self.typed(b'B', &body)
    }

    pub fn describe(&mut self, target: Target, name: &str) -> &mut Self {
        let mut body = vec![target.byte()];
        cstring(&mut body, name);
        self.typed(b'D', &body)
    }

    /// Execute `portal`, returning at most `rows_max` rows (0: all).
    pub fn execute(&mut self, portal: &str, rows_max: u32) -> &mut Self {
        let mut body = Vec::new();
        cstring(&mut body, portal);
        body.extend_from_slice(&rows_max.to_be_bytes());
        self.typed(b'E', &body)
    }

    pub fn close(&mut self, target: Target, name: &str) -> &mut Self {
        let mut body = vec![target.byte()];
        cstring(&mut body, name);
        self.typed(b'C', &body)
    }

    pub fn sync(&mut self) -> &mut Self {
        self.typed(b'S', &[])
    }

    pub fn flush(&mut self) -> &mut Self {
        self.typed(b'H', &[])
    }

    pub fn copy_data(&mut self, data: &[u8]) -> &mut Self {
        self.typed(b'd', data)
    }

    pub fn copy_done(&mut self) -> &mut Self {
        self.typed(b'c', &[])
    }

    pub fn copy_fail(&mut self, message: &str) -> &mut Self {
        let mut body = Vec::new();
        cstring(&mut body, message);
        self.typed(b'f', &body)
    }

    pub fn terminate(&mut self) -> &mut Self {
        self.typed(b'X', &[])
    }

    /// Bytes as they are, for malformed messages.
    pub fn raw(&mut self, bytes: &[u8]) -> &mut Self {
        self.bytes.extend_from_slice(bytes);
        self
    }
}

/// The length field of a packet with `body`: the body plus the field's own 4 bytes. Bodies
/// built here are far below 4 GiB; a longer one is a bug in the caller.
fn packet_len(body: &[u8]) -> u32 {
    byte_len(body) + 4
}

fn byte_len(bytes: &[u8]) -> u32 {
    u32::try_from(bytes.len())
        .ok()
        .filter(|n| *n < u32::MAX - 4)
        .expect("a frontend message under 4 GiB")
}

fn count(n: usize) -> u16 {
    u16::try_from(n).expect("at most 65,535 parameters")
}

fn cstring(out: &mut Vec<u8>, s: &str) {
    out.extend(s.bytes().filter(|&b| b != 0));
    out.push(0);
}

/// The StartupMessage the target prepends and the health check sends.
pub fn startup() -> Vec<u8> {
    let mut m = Messages::new();
    m.startup(&[
        ("user", "lookback"),
        ("database", "lookback"),
        ("application_name", "lookback-fuzz"),
        ("client_encoding", "UTF8"),
    ]);
    m.into_bytes()
}

/// Whether `body` is a well-formed body of a frontend message of type `kind`: its fields
/// fill it exactly (each string NUL-terminated, counts matching what follows). Types without
/// a check here (password, function call...) count as malformed.
///
/// Why the target needs it: the protocol library decodes a message's fields from its read
/// buffer without holding them to the declared length (pgwire 0.41.1): a Query whose string
/// ends early leaves the rest of its body to be read as the next messages. Only for streams
/// of well-formed messages does the server owe an answer at each boundary, Terminate
/// included.
pub fn well_formed(kind: u8, body: &[u8]) -> bool {
    let mut r = Reader { rest: body };
    let shaped = match kind {
        b'Q' | b'f' => r.cstring(),
        b'P' => r.cstring() && r.cstring() && r.counted(4),
        b'B' => r.cstring() && r.cstring() && r.counted(2) && r.values() && r.counted(2),
        b'E' => r.cstring() && r.take(4).is_some(),
        b'D' | b'C' => matches!(r.take(1), Some([b'S' | b'P'])) && r.cstring(),
        b'S' | b'H' | b'c' | b'X' => true,
        b'd' => {
            r.rest = &[];
            true
        }
        _ => false,
    };
    shaped && r.rest.is_empty()
}

/// Whether `body` (after the length) is a well-formed protocol 3.0 StartupMessage: the code,
/// then (name, value) string pairs, then a 0.
pub fn well_formed_startup(body: &[u8]) -> bool {
    let mut r = Reader { rest: body };
    if r.take(4) != Some(&PROTOCOL_3_0.to_be_bytes()[..]) {
        return false;
    }
    while r.rest.first().is_some_and(|&b| b != 0) {
        if !(r.cstring() && r.cstring()) {
            return false;
        }
    }
    r.rest == [0]
}

struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, tail) = (self.rest.get(..n)?, self.rest.get(n..)?);
        self.rest = tail;
        Some(head)
    }

    fn u16(&mut self) -> Option<usize> {
        self.take(2)
            .map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])))
    }

    fn cstring(&mut self) -> bool {
        let Some(nul) = self.rest.iter().position(|&b| b == 0) else {
            return false;
        };
        self.rest = &self.rest[nul + 1..];
        true
    }

    /// A u16 count, then that many fields of `size` bytes.
    fn counted(&mut self, size: usize) -> bool {
        self.u16().is_some_and(|n| self.take(n * size).is_some())
    }

    /// Bind's parameter values: a u16 count, then each an i32 length (-1: NULL) and its bytes.
    fn values(&mut self) -> bool {
        let Some(n) = self.u16() else { return false };
        (0..n).all(|_| {
            match self
                .take(4)
                .map(|b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
            {
                Some(-1) => true,
                Some(len) => usize::try_from(len).is_ok_and(|len| self.take(len).is_some()),
                None => false,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_framed_as_the_protocol_says() {
        let mut m = Messages::new();
        m.query("SELECT 1").sync().terminate();
        let bytes = m.into_bytes();
        assert_eq!(&bytes[..5], &[b'Q', 0, 0, 0, 13]);
        assert_eq!(&bytes[5..14], b"SELECT 1\0");
        assert_eq!(&bytes[14..], &[b'S', 0, 0, 0, 4, b'X', 0, 0, 0, 4]);
        let startup = startup();
        assert_eq!(
            u32::from_be_bytes([startup[0], startup[1], startup[2], startup[3]]) as usize,
            startup.len()
        );
        assert_eq!(&startup[4..8], &PROTOCOL_3_0.to_be_bytes());
        assert_eq!(startup.last(), Some(&0));
    }

    /// Every message the encoder builds is well formed; cut or padded, none is.
    #[test]
    fn the_encoder_builds_well_formed_messages_only() {
        let mut m = Messages::new();
        m.query("SELECT 1")
            .parse("s", "SELECT $1", &[25])
            .bind("", "s", &[Some("x"), None])
            .describe(Target::Portal, "")
            .execute("", 0)
            .close(Target::Statement, "s")
            .sync()
            .flush()
            .copy_data(b"a\0b")
            .copy_done()
            .copy_fail("no")
            .terminate();
        let bytes = m.into_bytes();
        let mut at = 0;
        while at < bytes.len() {
            let len =
                u32::from_be_bytes([bytes[at + 1], bytes[at + 2], bytes[at + 3], bytes[at + 4]])
                    as usize;
            let (kind, body) = (bytes[at], &bytes[at + 5..at + 1 + len]);
            assert!(well_formed(kind, body), "{:?}", kind as char);
            if !body.is_empty() && kind != b'd' {
                assert!(
                    !well_formed(kind, &body[..body.len() - 1]),
                    "{:?} cut",
                    kind as char
                );
                assert!(
                    !well_formed(kind, &[body, b"x"].concat()),
                    "{:?} padded",
                    kind as char
                );
            }
            at += 1 + len;
        }
        assert!(
            !well_formed(b'Q', b"SELECT 1\0d\0\0\0\x05x\0"),
            "a string ending before its body"
        );
        let startup = startup();
        assert!(well_formed_startup(&startup[4..]));
        assert!(!well_formed_startup(&startup[4..startup.len() - 1]));
    }

    #[test]
    fn bind_encodes_null_and_text_parameters() {
        let mut m = Messages::new();
        m.bind("", "s1", &[Some("ab"), None]);
        let bytes = m.into_bytes();
        // 'B', len, "" , "s1\0", 0 formats, 2 params, len 2 "ab", -1, 0 result formats
        let body = &bytes[5..];
        assert_eq!(
            body,
            &[0, b's', b'1', 0, 0, 0, 0, 2, 0, 0, 0, 2, b'a', b'b', 0xff, 0xff, 0xff, 0xff, 0, 0]
        );
    }
}
