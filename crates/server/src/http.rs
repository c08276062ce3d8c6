//! The little HTTP/1.1 the binary speaks, std only: the admin endpoint reads request heads,
//! the Agones client and `tickwire healthcheck` read response heads. Every function here reads
//! bytes from a socket, so each has a fuzz target (crates/server/fuzz).

/// A parsed request line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request<'a> {
    /// Method, e.g. `GET`.
    pub method: &'a str,
    /// Path without the query string.
    pub path: &'a str,
}

/// Parses the request line of an HTTP/1.x request head; `None` when malformed.
pub fn parse_request(head: &[u8]) -> Option<Request<'_>> {
    let end = head
        .windows(2)
        .position(|w| w == b"\r\n")
        .unwrap_or(head.len());
    let line = std::str::from_utf8(&head[..end]).ok()?;
    let mut parts = line.split(' ');
    let (method, target, version) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || !version.starts_with("HTTP/1.") || method.is_empty() {
        return None;
    }
    let path = target.split(['?', '#']).next().unwrap_or(target);
    Some(Request { method, path })
}

/// `HTTP/1.x NNN ...` status and the Content-Length header, if any, of a response head
/// (without the blank line); `None` when malformed.
pub fn parse_response_head(head: &[u8]) -> Option<(u16, Option<usize>)> {
    let text = std::str::from_utf8(head).ok()?;
    let mut lines = text.split("\r\n");
    let status_line = lines.next()?;
    let mut parts = status_line.split_whitespace();
    if !parts.next()?.starts_with("HTTP/1.") {
        return None;
    }
    let status: u16 = parts.next()?.parse().ok()?;
    let length = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse().ok());
    Some((status, length))
}

/// The position of `needle` in `hay` (e.g. the end of a head, `\r\n\r\n`).
pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return Some(0);
    }
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests() {
        let r = parse_request(b"GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\n").unwrap();
        assert_eq!((r.method, r.path), ("GET", "/metrics"));
        assert!(parse_request(b"GET /metrics").is_none());
        assert!(parse_request(b"GET / HTTP/2 extra").is_none());
        assert!(parse_request(b"\xff\xfe").is_none());
    }

    #[test]
    fn responses() {
        let head = b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\nX: y";
        assert_eq!(parse_response_head(head), Some((200, Some(12))));
        assert_eq!(parse_response_head(b"HTTP/1.0 503 Busy"), Some((503, None)));
        assert_eq!(parse_response_head(b"SSH-2.0 hi"), None);
        assert_eq!(find(b"ab\r\n\r\ncd", b"\r\n\r\n"), Some(2));
    }
}
