//! The HTTP/1.1 heads of the WebSocket opening handshake (RFC 6455 §4, RFC 9112 syntax):
//! finding the end of a head in a bounded buffer, reading its header fields, checking a
//! client's upgrade request and a server's `101`, and the `Sec-WebSocket-Accept` hash.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;

use crate::SUBPROTOCOL;

/// The GUID RFC 6455 §1.3 appends to the key before hashing.
const WS_GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// `Sec-WebSocket-Accept` for a `Sec-WebSocket-Key` value: base64(SHA-1(key + GUID)).
///
/// ```
/// assert_eq!(
///     tickwire_stream::websocket_accept("dGhlIHNhbXBsZSBub25jZQ=="),
///     "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=",
/// );
/// ```
pub fn websocket_accept(key: &str) -> String {
    let mut sha = sha1_smol::Sha1::new();
    sha.update(key.as_bytes());
    sha.update(WS_GUID);
    STANDARD.encode(sha.digest().bytes())
}

/// Finds the end of an HTTP head as bytes arrive: the first empty line (CRLF CRLF, with a
/// bare LF accepted as a line end, RFC 9112 §2.2).
#[derive(Debug, Default)]
pub(crate) struct HeadScan {
    /// Bytes already scanned.
    pos: usize,
    /// Start of the line being scanned.
    line_start: usize,
}

impl HeadScan {
    /// Scans the new bytes of `buf` (everything past the previous call); returns the length of
    /// the head, blank line included, once it is complete.
    pub(crate) fn advance(&mut self, buf: &[u8]) -> Option<usize> {
        while self.pos < buf.len() {
            let i = self.pos;
            self.pos += 1;
            if buf[i] == b'\n' {
                let line = &buf[self.line_start..i];
                if self.line_start > 0 && (line.is_empty() || line == b"\r") {
                    return Some(i + 1);
                }
                self.line_start = i + 1;
            }
        }
        None
    }
}

/// A head split into its first line and its header field lines.
pub(crate) struct Head<'a> {
    pub(crate) first: &'a [u8],
    rest: &'a [u8],
}

/// One line without its terminator.
fn strip_eol(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

impl<'a> Head<'a> {
    /// `head` is a complete head as [`HeadScan`] found it.
    pub(crate) fn new(head: &'a [u8]) -> Head<'a> {
        let nl = head.iter().position(|&b| b == b'\n').unwrap_or(head.len());
        Head {
            first: strip_eol(&head[..nl]),
            rest: head.get(nl + 1..).unwrap_or(&[]),
        }
    }

    /// Calls `f(name, value)` for each header field (value without surrounding whitespace);
    /// `Err` for a line that is not a well-formed field (no colon, a name that is not a token,
    /// control characters, obsolete line folding).
    pub(crate) fn fields(&self, mut f: impl FnMut(&'a [u8], &'a [u8])) -> Result<(), ()> {
        for raw in self.rest.split(|&b| b == b'\n') {
            let line = strip_eol(raw);
            if line.is_empty() {
                // The blank line that ends the head (and the empty slice after its LF).
                continue;
            }
            let colon = line.iter().position(|&b| b == b':').ok_or(())?;
            let (name, value) = (&line[..colon], &line[colon + 1..]);
            if name.is_empty() || !name.iter().all(|&b| is_tchar(b)) {
                return Err(());
            }
            if value.iter().any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f) {
                return Err(());
            }
            f(name, trim(value));
        }
        Ok(())
    }
}

/// RFC 9110 §5.6.2 token characters.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn trim(v: &[u8]) -> &[u8] {
    let start = v.iter().position(|&b| b != b' ' && b != b'\t');
    let end = v.iter().rposition(|&b| b != b' ' && b != b'\t');
    match (start, end) {
        (Some(s), Some(e)) => &v[s..=e],
        _ => &[],
    }
}

/// Whether a comma-separated list (`Connection`, `Upgrade`, ...) holds `token`, compared
/// ASCII case-insensitively.
fn list_has(value: &[u8], token: &[u8]) -> bool {
    value
        .split(|&b| b == b',')
        .any(|t| trim(t).eq_ignore_ascii_case(token))
}

/// Whether a comma-separated list holds `token` exactly (subprotocol names are
/// case-sensitive).
fn list_has_exact(value: &[u8], token: &[u8]) -> bool {
    value.split(|&b| b == b',').any(|t| trim(t) == token)
}

/// The server's answers to a request it refuses. Each closes the connection.
pub(crate) const RESPONSE_400: &[u8] =
    b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Length: 0\r\n\r\n";
/// A plain GET, or a WebSocket version other than 13 (RFC 6455 §4.4).
pub(crate) const RESPONSE_426: &[u8] = b"HTTP/1.1 426 Upgrade Required\r\nConnection: close\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nContent-Length: 0\r\n\r\n";
pub(crate) const RESPONSE_431: &[u8] = b"HTTP/1.1 431 Request Header Fields Too Large\r\nConnection: close\r\nContent-Length: 0\r\n\r\n";

/// A client upgrade request the server accepts.
#[derive(Debug)]
pub(crate) struct Upgrade {
    /// `Sec-WebSocket-Accept` for the request's key.
    pub(crate) accept: String,
    /// The client offered [`SUBPROTOCOL`].
    pub(crate) subprotocol: bool,
}

/// Checks a client's opening handshake (RFC 6455 §4.2.1); `Err` carries the HTTP response
/// to send before closing.
pub(crate) fn check_request(head: &[u8]) -> Result<Upgrade, &'static [u8]> {
    let head = Head::new(head);
    let mut parts = head.first.split(|&b| b == b' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(RESPONSE_400);
    };
    if method != b"GET"
        || version != b"HTTP/1.1"
        || target.first() != Some(&b'/')
        || !target.iter().all(|b| (0x21..0x7f).contains(b))
    {
        return Err(RESPONSE_400);
    }

    let mut hosts = 0;
    let mut upgrade = false;
    let mut connection = false;
    let mut version = false;
    let mut keys = 0;
    let mut key: &[u8] = &[];
    let mut subprotocol = false;
    let mut body = false;
    head.fields(|name, value| {
        if name.eq_ignore_ascii_case(b"host") {
            hosts += 1;
        } else if name.eq_ignore_ascii_case(b"upgrade") {
            upgrade |= list_has(value, b"websocket");
        } else if name.eq_ignore_ascii_case(b"connection") {
            connection |= list_has(value, b"upgrade");
        } else if name.eq_ignore_ascii_case(b"sec-websocket-version") {
            version |= list_has(value, b"13");
        } else if name.eq_ignore_ascii_case(b"sec-websocket-key") {
            keys += 1;
            key = value;
        } else if name.eq_ignore_ascii_case(b"sec-websocket-protocol") {
            subprotocol |= list_has_exact(value, SUBPROTOCOL.as_bytes());
        } else if name.eq_ignore_ascii_case(b"content-length") {
            body |= value != b"0";
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            body = true;
        }
    })
    .map_err(|()| RESPONSE_400)?;

    if hosts != 1 || body {
        return Err(RESPONSE_400);
    }
    if !upgrade || !connection || !version {
        return Err(RESPONSE_426);
    }
    let key_ok = keys == 1
        && STANDARD
            .decode(key)
            .is_ok_and(|k| k.len() == 16 && key.len() == 24);
    if !key_ok {
        return Err(RESPONSE_400);
    }
    // A base64 key is ASCII, so this cannot fail.
    let key = std::str::from_utf8(key).map_err(|_| RESPONSE_400)?;
    Ok(Upgrade {
        accept: websocket_accept(key),
        subprotocol,
    })
}

/// The `101 Switching Protocols` answer to an accepted request.
pub(crate) fn write_101(up: &Upgrade, out: &mut Vec<u8>) {
    out.extend_from_slice(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ",
    );
    out.extend_from_slice(up.accept.as_bytes());
    out.extend_from_slice(b"\r\n");
    if up.subprotocol {
        out.extend_from_slice(b"Sec-WebSocket-Protocol: ");
        out.extend_from_slice(SUBPROTOCOL.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// Why a server's answer to our upgrade is refused.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ResponseError {
    /// Not an HTTP/1.1 status line.
    Malformed,
    /// A well-formed status other than 101.
    Status(u16),
    /// A 101 with missing or wrong upgrade fields, accept hash, subprotocol or an extension.
    BadUpgrade,
}

/// Checks the server's answer (RFC 6455 §4.1, the client's checks), with the accept value
/// expected for our key.
pub(crate) fn check_response(head: &[u8], accept: &str) -> Result<(), ResponseError> {
    let head = Head::new(head);
    let mut parts = head.first.splitn(3, |&b| b == b' ');
    let (Some(version), Some(code)) = (parts.next(), parts.next()) else {
        return Err(ResponseError::Malformed);
    };
    if version != b"HTTP/1.1" || code.len() != 3 || !code.iter().all(u8::is_ascii_digit) {
        return Err(ResponseError::Malformed);
    }
    let status = code.iter().fold(0u16, |n, &d| n * 10 + u16::from(d - b'0'));
    if status != 101 {
        return Err(ResponseError::Status(status));
    }
    let mut upgrade = false;
    let mut connection = false;
    let mut accepts = 0;
    let mut accept_ok = false;
    let mut protocol_ok = true;
    let mut extension = false;
    head.fields(|name, value| {
        if name.eq_ignore_ascii_case(b"upgrade") {
            upgrade |= list_has(value, b"websocket");
        } else if name.eq_ignore_ascii_case(b"connection") {
            connection |= list_has(value, b"upgrade");
        } else if name.eq_ignore_ascii_case(b"sec-websocket-accept") {
            accepts += 1;
            accept_ok = value == accept.as_bytes();
        } else if name.eq_ignore_ascii_case(b"sec-websocket-protocol") {
            protocol_ok &= value == SUBPROTOCOL.as_bytes();
        } else if name.eq_ignore_ascii_case(b"sec-websocket-extensions") {
            extension |= !value.is_empty();
        }
    })
    .map_err(|()| ResponseError::BadUpgrade)?;
    if upgrade && connection && accepts == 1 && accept_ok && protocol_ok && !extension {
        Ok(())
    } else {
        Err(ResponseError::BadUpgrade)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc_6455_example_accept() {
        // RFC 6455 §1.3.
        assert_eq!(
            websocket_accept("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn head_scan_finds_crlf_and_lf_ends() {
        let mut s = HeadScan::default();
        assert_eq!(s.advance(b"GET / HTTP/1.1\r\nA: b\r\n\r\nxyz"), Some(24));
        let mut s = HeadScan::default();
        assert_eq!(s.advance(b"GET / HTTP/1.1\nA: b\n\nxyz"), Some(21));
        // Incremental: byte by byte, the same answer.
        let text = b"GET / HTTP/1.1\r\nA: b\r\n\r\n";
        let mut s = HeadScan::default();
        let mut found = None;
        for n in 1..=text.len() {
            if let Some(end) = s.advance(&text[..n]) {
                found = Some((n, end));
                break;
            }
        }
        assert_eq!(found, Some((text.len(), text.len())));
    }

    #[test]
    fn fields_are_trimmed_and_checked() {
        let head = Head::new(b"GET / HTTP/1.1\r\nHost:  a b \t\r\nX-Y:\r\n\r\n");
        let mut got = Vec::new();
        head.fields(|n, v| got.push((n.to_vec(), v.to_vec())))
            .unwrap();
        assert_eq!(
            got,
            [
                (b"Host".to_vec(), b"a b".to_vec()),
                (b"X-Y".to_vec(), b"".to_vec())
            ]
        );
        for bad in [
            &b"GET / HTTP/1.1\r\nHost a\r\n\r\n"[..],
            b"GET / HTTP/1.1\r\nHo st: a\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost : a\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\x00b\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\rb\r\n\r\n",
        ] {
            assert!(Head::new(bad).fields(|_, _| {}).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn lists() {
        assert!(list_has(b"keep-alive, Upgrade", b"upgrade"));
        assert!(!list_has(b"keep-alive, upgrades", b"upgrade"));
        assert!(list_has_exact(
            b"chat, tickwire.netcode",
            b"tickwire.netcode"
        ));
        assert!(!list_has_exact(b"Tickwire.Netcode", b"tickwire.netcode"));
    }

    #[test]
    fn response_status_codes() {
        let a = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";
        assert_eq!(
            check_response(b"HTTP/1.1 426 Upgrade Required\r\n\r\n", a),
            Err(ResponseError::Status(426))
        );
        assert_eq!(
            check_response(b"HTTP/1.0 101 x\r\n\r\n", a),
            Err(ResponseError::Malformed)
        );
        assert_eq!(
            check_response(b"HTTP/1.1 1O1\r\n\r\n", a),
            Err(ResponseError::Malformed)
        );
        let ok = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: WebSocket\r\nConnection: upgrade\r\nSec-WebSocket-Accept: {a}\r\n\r\n"
        );
        assert_eq!(check_response(ok.as_bytes(), a), Ok(()));
        // Status line without a reason phrase.
        let ok = format!(
            "HTTP/1.1 101\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {a}\r\n\r\n"
        );
        assert_eq!(check_response(ok.as_bytes(), a), Ok(()));
    }
}
