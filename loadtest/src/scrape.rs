//! Scraping the server's Prometheus endpoint: a tiny HTTP/1.1 GET over `std::net::TcpStream`
//! and a tolerant parser for the Prometheus text exposition format.
//!
//! Called twice per run (at the start and at the end of the measurement window), never on the
//! hot path, so it allocates freely. [`MetricsUrl`] parses the `--metrics` argument (plain
//! `http://host[:port][/path]` only), [`fetch`] returns a [`Scrape`], and the `*_delta`
//! helpers turn two scrapes into the figures of the report:
//!
//! - [`cpu_cores`]: `delta(process_cpu_seconds_total) / wall seconds`;
//! - [`histogram_quantile`] over [`bucket_delta`] of a `<name>_bucket{le="..."}` family, with
//!   linear interpolation inside the bucket, like Prometheus' `histogram_quantile`.
//!
//! The parser skips comments (`# HELP`, `# TYPE`, ...), blank lines and lines it cannot read
//! (counted in [`Scrape::malformed_lines`]); label values may contain escaped quotes,
//! backslashes, newlines, commas and braces; values may be `+Inf`, `-Inf` or `NaN`; an optional
//! trailing timestamp is ignored. Series of one family with different labels (for example one
//! per backend) are summed.

use std::error::Error;
use std::fmt;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::str::FromStr;
use std::time::{Duration, Instant};

/// Counter of the server process' CPU time (user + system), in seconds.
pub const PROCESS_CPU_SECONDS: &str = "process_cpu_seconds_total";
/// Histogram of the server's tick duration, in milliseconds.
pub const TICK_DURATION_MS: &str = "tick_duration_ms";
/// Histogram of how late each tick started after its deadline, in milliseconds.
pub const TICK_LATENESS_MS: &str = "tick_lateness_ms";

/// Longest time one scrape may take (connect, and each read or write).
const TIMEOUT: Duration = Duration::from_secs(3);
/// Largest response accepted, in bytes.
const MAX_RESPONSE_BYTES: u64 = 32 * 1024 * 1024;

/// A parsed `--metrics` URL: `http://host[:port][/path]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MetricsUrl {
    /// Host name or address as written (IPv6 without the brackets).
    pub host: String,
    /// TCP port (80 when the URL names none).
    pub port: u16,
    /// Request path with query, starting with `/` (`/metrics` when the URL has no path).
    pub path: String,
}

/// Why a `--metrics` URL was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UrlError {
    /// `https://`: TLS is not supported; scrape the plain-HTTP endpoint.
    Https,
    /// Any scheme other than `http://` (or none).
    Scheme(String),
    /// No host between `//` and the port or path.
    MissingHost,
    /// `user@` is not supported.
    UserInfo,
    /// An IPv6 literal without its closing `]`.
    BadIpv6,
    /// The port is not a number in 1..=65535.
    BadPort(String),
    /// A `#fragment`, or whitespace or control characters in the URL.
    BadCharacter,
}

impl fmt::Display for UrlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UrlError::Https => f.write_str(
                "https is not supported: give the server's plain http metrics URL \
                 (e.g. http://127.0.0.1:9464/metrics)",
            ),
            UrlError::Scheme(s) if s.is_empty() => {
                f.write_str("the URL must start with http:// (e.g. http://127.0.0.1:9464/metrics)")
            }
            UrlError::Scheme(s) => write!(f, "unsupported URL scheme {s:?}: only http:// works"),
            UrlError::MissingHost => f.write_str("the URL has no host"),
            UrlError::UserInfo => f.write_str("user@host URLs are not supported"),
            UrlError::BadIpv6 => f.write_str("IPv6 host without a closing ']'"),
            UrlError::BadPort(p) => write!(f, "bad port {p:?}: expected a number in 1..=65535"),
            UrlError::BadCharacter => {
                f.write_str("the URL contains whitespace, a control character or a '#'")
            }
        }
    }
}

impl Error for UrlError {}

impl FromStr for MetricsUrl {
    type Err = UrlError;

    fn from_str(url: &str) -> Result<Self, UrlError> {
        if url
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '#')
        {
            return Err(UrlError::BadCharacter);
        }
        let rest = match url.split_once("://") {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") => rest,
            Some((scheme, _)) if scheme.eq_ignore_ascii_case("https") => {
                return Err(UrlError::Https)
            }
            Some((scheme, _)) => return Err(UrlError::Scheme(scheme.to_string())),
            None => return Err(UrlError::Scheme(String::new())),
        };
        let (authority, path) = match rest.find(['/', '?']) {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        if authority.contains('@') {
            return Err(UrlError::UserInfo);
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (host, after) = v6.split_once(']').ok_or(UrlError::BadIpv6)?;
            match after {
                "" => (host, None),
                _ => match after.strip_prefix(':') {
                    Some(p) => (host, Some(p)),
                    None => return Err(UrlError::BadIpv6),
                },
            }
        } else {
            match authority.split_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            }
        };
        if host.is_empty() {
            return Err(UrlError::MissingHost);
        }
        let port = match port {
            None => 80,
            Some(p) => match p.parse::<u16>() {
                Ok(n) if n != 0 && p.bytes().all(|b| b.is_ascii_digit()) => n,
                _ => return Err(UrlError::BadPort(p.to_string())),
            },
        };
        let path = if path.is_empty() {
            "/metrics".to_string()
        } else if path.starts_with('?') {
            format!("/{path}")
        } else {
            path.to_string()
        };
        Ok(MetricsUrl {
            host: host.to_string(),
            port,
            path,
        })
    }
}

impl fmt::Display for MetricsUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "http://[{}]:{}{}", self.host, self.port, self.path)
        } else {
            write!(f, "http://{}:{}{}", self.host, self.port, self.path)
        }
    }
}

/// Why a scrape failed.
#[derive(Debug)]
pub enum ScrapeError {
    /// The host did not resolve to any address.
    Resolve(String),
    /// Connecting, writing or reading failed.
    Io(io::Error),
    /// The response is not a well-formed HTTP/1.x response.
    BadResponse(&'static str),
    /// The server answered with a status other than 200.
    Status(u16),
    /// The response exceeds the size limit.
    TooLarge,
}

impl fmt::Display for ScrapeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ScrapeError::Resolve(h) => write!(f, "cannot resolve {h}"),
            ScrapeError::Io(e) => write!(f, "{e}"),
            ScrapeError::BadResponse(why) => write!(f, "bad HTTP response: {why}"),
            ScrapeError::Status(code) => write!(f, "HTTP status {code}"),
            ScrapeError::TooLarge => {
                write!(f, "response larger than {MAX_RESPONSE_BYTES} bytes")
            }
        }
    }
}

/// The I/O error's text is already part of the message, so no `source` (it would print twice).
impl Error for ScrapeError {}

impl From<io::Error> for ScrapeError {
    fn from(e: io::Error) -> Self {
        ScrapeError::Io(e)
    }
}

/// One sample line: `name{labels} value`.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// Metric name (with any `_bucket`/`_sum`/`_count`/`_total` suffix).
    pub name: String,
    /// Label pairs in the order written, values unescaped.
    pub labels: Vec<(String, String)>,
    /// The value.
    pub value: f64,
}

impl Sample {
    /// The value of label `key`, if present.
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// One scrape: the samples and when they were taken.
#[derive(Clone, Debug)]
pub struct Scrape {
    /// Midpoint of the request, the best estimate of when the server rendered the page.
    pub at: Instant,
    /// Every sample read.
    pub samples: Vec<Sample>,
    /// Non-comment lines that could not be parsed (skipped).
    pub malformed_lines: usize,
}

impl Scrape {
    /// Parses a Prometheus text page taken at `at`.
    pub fn parse(text: &str, at: Instant) -> Scrape {
        let mut samples = Vec::new();
        let mut malformed_lines = 0;
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            match parse_sample(line) {
                Some(s) => samples.push(s),
                None => malformed_lines += 1,
            }
        }
        Scrape {
            at,
            samples,
            malformed_lines,
        }
    }

    /// Sum of every series named exactly `name` (all label sets), or `None` when absent.
    pub fn sum(&self, name: &str) -> Option<f64> {
        let mut found = false;
        let mut total = 0.0;
        for s in self.samples.iter().filter(|s| s.name == name) {
            found = true;
            total += s.value;
        }
        found.then_some(total)
    }

    /// The cumulative buckets of histogram `base` (`<base>_bucket{le="..."}`), summed over every
    /// other label set, sorted by upper bound. `None` when the family is absent.
    pub fn buckets(&self, base: &str) -> Option<Vec<(f64, f64)>> {
        let name = format!("{base}_bucket");
        let mut out: Vec<(f64, f64)> = Vec::new();
        for s in self.samples.iter().filter(|s| s.name == name) {
            let Some(le) = s.label("le").and_then(parse_value) else {
                continue;
            };
            if le.is_nan() {
                continue;
            }
            match out.iter_mut().find(|(l, _)| *l == le) {
                Some((_, c)) => *c += s.value,
                None => out.push((le, s.value)),
            }
        }
        if out.is_empty() {
            return None;
        }
        out.sort_by(|a, b| a.0.total_cmp(&b.0));
        Some(out)
    }
}

/// Parses one sample line. `None` when it is not one.
fn parse_sample(line: &str) -> Option<Sample> {
    let name_end = line
        .find(|c: char| c == '{' || c.is_whitespace())
        .unwrap_or(line.len());
    let name = &line[..name_end];
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    {
        return None;
    }
    if name.as_bytes()[0].is_ascii_digit() {
        return None;
    }
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(after) = rest.strip_prefix('{') {
        let (parsed, after) = parse_labels(after)?;
        labels = parsed;
        rest = after;
    }
    let mut fields = rest.split_whitespace();
    let value = parse_value(fields.next()?)?;
    // An optional timestamp (integer milliseconds); anything more is malformed.
    if let Some(ts) = fields.next() {
        ts.parse::<i64>().ok()?;
    }
    if fields.next().is_some() {
        return None;
    }
    Some(Sample {
        name: name.to_string(),
        labels,
        value,
    })
}

/// Parses `key="value",...}` (the opening brace already consumed); returns the labels and the
/// text after the closing brace.
fn parse_labels(mut s: &str) -> Option<(Vec<(String, String)>, &str)> {
    let mut labels = Vec::new();
    loop {
        s = s.trim_start();
        if let Some(after) = s.strip_prefix('}') {
            return Some((labels, after));
        }
        let eq = s.find('=')?;
        let key = s[..eq].trim();
        if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return None;
        }
        s = s[eq + 1..].trim_start().strip_prefix('"')?;
        let mut value = String::new();
        let mut chars = s.char_indices();
        let end = loop {
            let (i, c) = chars.next()?;
            match c {
                '"' => break i,
                '\\' => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                c => value.push(c),
            }
        };
        labels.push((key.to_string(), value));
        s = s[end + 1..].trim_start();
        if let Some(after) = s.strip_prefix(',') {
            s = after;
        } else if !s.starts_with('}') {
            return None;
        }
    }
}

/// Parses a Prometheus value: a float, `+Inf`, `-Inf`, `NaN` (case-insensitive).
fn parse_value(v: &str) -> Option<f64> {
    match v.to_ascii_lowercase().as_str() {
        "+inf" | "inf" => Some(f64::INFINITY),
        "-inf" => Some(f64::NEG_INFINITY),
        "nan" => Some(f64::NAN),
        _ => v.parse::<f64>().ok(),
    }
}

/// The per-bucket increase between two cumulative bucket lists (`end - start`, matched by
/// upper bound; a bucket missing at the start counts from 0). When any bucket went down (the
/// server restarted), the end buckets are returned as they are.
pub fn bucket_delta(start: &[(f64, f64)], end: &[(f64, f64)]) -> Vec<(f64, f64)> {
    let mut out = Vec::with_capacity(end.len());
    for &(le, c) in end {
        let before = start
            .iter()
            .find(|(l, _)| *l == le)
            .map_or(0.0, |(_, c)| *c);
        if c < before {
            return end.to_vec();
        }
        out.push((le, c - before));
    }
    out
}

/// The `q` quantile (0..=1) of a cumulative histogram given as `(upper bound, cumulative count)`
/// sorted by bound, like Prometheus' `histogram_quantile`: linear interpolation inside the
/// bucket holding rank `q * total`; the lowest bucket starts at 0 (when its bound is positive);
/// a rank in the `+Inf` bucket answers the highest finite bound. `None` without a `+Inf`
/// bucket, without observations, or for `q` outside 0..=1.
pub fn histogram_quantile(q: f64, buckets: &[(f64, f64)]) -> Option<f64> {
    if !(0.0..=1.0).contains(&q) {
        return None;
    }
    let &(last_le, total) = buckets.last()?;
    if last_le != f64::INFINITY || total.is_nan() || total <= 0.0 {
        return None;
    }
    if buckets.len() < 2 {
        return None;
    }
    let rank = q * total;
    // Cumulative counts should never decrease; take a running max like Prometheus does.
    let mut prev_le = 0.0;
    let mut prev_count = 0.0;
    for (i, &(le, raw)) in buckets.iter().enumerate() {
        let count = if raw.is_nan() {
            prev_count
        } else {
            raw.max(prev_count)
        };
        if count >= rank && count > 0.0 {
            if le == f64::INFINITY {
                return Some(buckets[i - 1].0);
            }
            if i == 0 && le <= 0.0 {
                return Some(le);
            }
            let in_bucket = count - prev_count;
            if in_bucket <= 0.0 {
                return Some(le);
            }
            return Some(prev_le + (le - prev_le) * ((rank - prev_count) / in_bucket));
        }
        prev_le = le;
        prev_count = count;
    }
    Some(buckets[buckets.len() - 2].0)
}

/// Server CPU cores used between two scrapes: `delta(process_cpu_seconds_total) / wall`.
pub fn cpu_cores(start: &Scrape, end: &Scrape) -> Option<f64> {
    let cpu = end.sum(PROCESS_CPU_SECONDS)? - start.sum(PROCESS_CPU_SECONDS)?;
    let wall = end.at.checked_duration_since(start.at)?.as_secs_f64();
    (wall > 0.0 && cpu >= 0.0).then(|| cpu / wall)
}

/// The `q` quantile of histogram `base` over the observations made between two scrapes.
pub fn quantile_delta(q: f64, base: &str, start: &Scrape, end: &Scrape) -> Option<f64> {
    let end_buckets = end.buckets(base)?;
    let start_buckets = start.buckets(base).unwrap_or_default();
    histogram_quantile(q, &bucket_delta(&start_buckets, &end_buckets))
}

/// GETs `url` over plain HTTP/1.1 and parses the page.
pub fn fetch(url: &MetricsUrl) -> Result<Scrape, ScrapeError> {
    let addrs: Vec<SocketAddr> = (url.host.as_str(), url.port)
        .to_socket_addrs()
        .map_err(|_| ScrapeError::Resolve(url.host.clone()))?
        .collect();
    let Some(addr) = addrs.first() else {
        return Err(ScrapeError::Resolve(url.host.clone()));
    };
    let sent = Instant::now();
    let mut stream = TcpStream::connect_timeout(addr, TIMEOUT)?;
    stream.set_read_timeout(Some(TIMEOUT))?;
    stream.set_write_timeout(Some(TIMEOUT))?;
    stream.set_nodelay(true)?;
    let host = if url.host.contains(':') {
        format!("[{}]", url.host)
    } else {
        url.host.clone()
    };
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {}:{}\r\nUser-Agent: tickwire-loadtest\r\n\
         Accept: text/plain\r\nConnection: close\r\n\r\n",
        url.path, host, url.port
    );
    stream.write_all(request.as_bytes())?;
    let mut raw = Vec::new();
    (&mut stream)
        .take(MAX_RESPONSE_BYTES + 1)
        .read_to_end(&mut raw)?;
    if raw.len() as u64 > MAX_RESPONSE_BYTES {
        return Err(ScrapeError::TooLarge);
    }
    let received = Instant::now();
    let body = http_body(&raw)?;
    let at = sent + received.duration_since(sent) / 2;
    Ok(Scrape::parse(&String::from_utf8_lossy(&body), at))
}

/// Checks the status line and returns the body of a complete HTTP/1.x response (read until the
/// server closed), decoding `Transfer-Encoding: chunked` and honouring `Content-Length`.
pub fn http_body(raw: &[u8]) -> Result<Vec<u8>, ScrapeError> {
    let head_end = find(raw, b"\r\n\r\n").ok_or(ScrapeError::BadResponse("no end of headers"))?;
    let head = std::str::from_utf8(&raw[..head_end])
        .map_err(|_| ScrapeError::BadResponse("headers are not UTF-8"))?;
    let body = &raw[head_end + 4..];
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap_or("");
    let mut parts = status.split_whitespace();
    if !parts.next().is_some_and(|v| v.starts_with("HTTP/1.")) {
        return Err(ScrapeError::BadResponse("not an HTTP/1.x status line"));
    }
    let code: u16 = parts
        .next()
        .and_then(|c| c.parse().ok())
        .ok_or(ScrapeError::BadResponse("no status code"))?;
    if code != 200 {
        return Err(ScrapeError::Status(code));
    }
    let mut chunked = false;
    let mut length = None;
    for line in lines {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let (key, value) = (key.trim(), value.trim());
        if key.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.to_ascii_lowercase().contains("chunked");
        } else if key.eq_ignore_ascii_case("content-length") {
            length = Some(
                value
                    .parse::<usize>()
                    .map_err(|_| ScrapeError::BadResponse("bad Content-Length"))?,
            );
        }
    }
    if chunked {
        return dechunk(body);
    }
    match length {
        Some(n) if n <= body.len() => Ok(body[..n].to_vec()),
        Some(_) => Err(ScrapeError::BadResponse("body shorter than Content-Length")),
        None => Ok(body.to_vec()),
    }
}

/// Decodes a chunked body (trailers ignored).
fn dechunk(mut body: &[u8]) -> Result<Vec<u8>, ScrapeError> {
    let mut out = Vec::with_capacity(body.len());
    loop {
        let line_end = find(body, b"\r\n").ok_or(ScrapeError::BadResponse("truncated chunk"))?;
        let size_text = std::str::from_utf8(&body[..line_end])
            .map_err(|_| ScrapeError::BadResponse("bad chunk size"))?;
        let size_text = size_text.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| ScrapeError::BadResponse("bad chunk size"))?;
        body = &body[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        // `size` comes off the wire (up to usize::MAX): no arithmetic on it before it is
        // known to fit the body.
        let Some(after) = body.get(size..).and_then(|rest| rest.strip_prefix(b"\r\n")) else {
            return Err(ScrapeError::BadResponse("truncated chunk"));
        };
        out.extend_from_slice(&body[..size]);
        body = after;
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    const START: &str = r#"# HELP process_cpu_seconds_total Total user and system CPU time spent in seconds.
# TYPE process_cpu_seconds_total counter
process_cpu_seconds_total 10.5
# HELP tick_duration_ms Time one tick took.
# TYPE tick_duration_ms histogram
tick_duration_ms_bucket{le="0.5"} 100
tick_duration_ms_bucket{le="1"} 150
tick_duration_ms_bucket{le="2"} 190
tick_duration_ms_bucket{le="+Inf"} 200
tick_duration_ms_sum 180.0
tick_duration_ms_count 200
io_events_processed_total{backend="epoll"} 12345 1700000000000
weird_label{path="a \"quoted\" \\ value, with {braces}\n"} 1
"#;

    const END: &str = r#"process_cpu_seconds_total 40.5
tick_duration_ms_bucket{le="0.5"} 600
tick_duration_ms_bucket{le="1"} 1050
tick_duration_ms_bucket{le="2"} 1190
tick_duration_ms_bucket{le="+Inf"} 1200
tick_lateness_ms_bucket{backend="epoll",le="0.1"} 900
tick_lateness_ms_bucket{backend="epoll",le="1"} 990
tick_lateness_ms_bucket{backend="epoll",le="+Inf"} 1000
tick_lateness_ms_bucket{backend="select",le="0.1"} 100
tick_lateness_ms_bucket{backend="select",le="1.0"} 100
tick_lateness_ms_bucket{backend="select",le="+Inf"} 100
this is not a sample
bad_value 12abc
"#;

    #[test]
    fn parses_samples_labels_and_escapes() {
        let s = Scrape::parse(START, Instant::now());
        assert_eq!(s.malformed_lines, 0);
        assert_eq!(s.samples.len(), 9);
        assert_eq!(s.sum(PROCESS_CPU_SECONDS), Some(10.5));
        assert_eq!(s.sum("io_events_processed_total"), Some(12345.0));
        let inf = &s.samples[4];
        assert_eq!(inf.label("le"), Some("+Inf"));
        let weird = s.samples.iter().find(|x| x.name == "weird_label").unwrap();
        assert_eq!(
            weird.label("path"),
            Some("a \"quoted\" \\ value, with {braces}\n")
        );
        assert_eq!(s.sum("absent"), None);
        let b = s.buckets(TICK_DURATION_MS).unwrap();
        assert_eq!(
            b,
            vec![
                (0.5, 100.0),
                (1.0, 150.0),
                (2.0, 190.0),
                (f64::INFINITY, 200.0)
            ]
        );
    }

    #[test]
    fn counts_malformed_lines_and_sums_label_sets() {
        let s = Scrape::parse(END, Instant::now());
        assert_eq!(s.malformed_lines, 2);
        // "1" and "1.0" are the same bound: summed across backends.
        assert_eq!(
            s.buckets(TICK_LATENESS_MS).unwrap(),
            vec![(0.1, 1000.0), (1.0, 1090.0), (f64::INFINITY, 1100.0)]
        );
    }

    #[test]
    fn odd_lines() {
        for line in [
            "x{} 1",
            "x{a=\"b\",} 1",
            "x 1e3",
            "x -Inf",
            "x NaN",
            "x{a = \"b\" , c=\"d\"} 2 123",
        ] {
            assert!(parse_sample(line).is_some(), "{line}");
        }
        for line in [
            "x",
            "x{a=\"b\" 1",
            "x{a=b} 1",
            "{a=\"b\"} 1",
            "1x 1",
            "x 1 2 3",
            "x 1 notatimestamp",
            "x{a=\"b\"c=\"d\"} 1",
        ] {
            assert!(parse_sample(line).is_none(), "{line}");
        }
        assert!(parse_sample("x 1e3").unwrap().value == 1000.0);
        assert!(parse_sample("x NaN").unwrap().value.is_nan());
    }

    #[test]
    fn quantile_over_window() {
        let t0 = Instant::now();
        let start = Scrape::parse(START, t0);
        let end = Scrape::parse(END, t0 + Duration::from_secs(10));
        // Window: 500 in [0,0.5], 400 in (0.5,1], 100 in (1,2], 0 above: 1000 ticks.
        // p99 = rank 990 -> in (1,2]: 1 + (990-900)/100 = 1.9.
        let p99 = quantile_delta(0.99, TICK_DURATION_MS, &start, &end).unwrap();
        assert!((p99 - 1.9).abs() < 1e-9, "{p99}");
        // p50 = rank 500 -> exactly the top of the first bucket.
        let p50 = quantile_delta(0.5, TICK_DURATION_MS, &start, &end).unwrap();
        assert!((p50 - 0.5).abs() < 1e-9, "{p50}");
        // p25 = rank 250 -> half-way through [0, 0.5].
        let p25 = quantile_delta(0.25, TICK_DURATION_MS, &start, &end).unwrap();
        assert!((p25 - 0.25).abs() < 1e-9, "{p25}");
        // Lateness is absent at the start: counted from zero. 1100 obs, rank 1089 ->
        // (0.1, 1]: 0.1 + 0.9 * (89/90).
        let late = quantile_delta(0.99, TICK_LATENESS_MS, &start, &end).unwrap();
        assert!((late - (0.1 + 0.9 * 89.0 / 90.0)).abs() < 1e-9, "{late}");
        // CPU: 30 s over 10 s.
        assert!((cpu_cores(&start, &end).unwrap() - 3.0).abs() < 1e-9);
        assert_eq!(quantile_delta(0.99, "absent", &start, &end), None);
    }

    #[test]
    fn quantile_edge_cases() {
        let inf = f64::INFINITY;
        // Rank in +Inf bucket: highest finite bound.
        assert_eq!(
            histogram_quantile(0.99, &[(1.0, 1.0), (inf, 10.0)]),
            Some(1.0)
        );
        // No +Inf bucket, no observations, bad q.
        assert_eq!(histogram_quantile(0.5, &[(1.0, 1.0)]), None);
        assert_eq!(histogram_quantile(0.5, &[(1.0, 0.0), (inf, 0.0)]), None);
        assert_eq!(histogram_quantile(1.5, &[(1.0, 1.0), (inf, 1.0)]), None);
        // Non-monotonic input does not panic and stays within the bounds.
        let q = histogram_quantile(0.5, &[(1.0, 5.0), (2.0, 3.0), (inf, 6.0)]).unwrap();
        assert!((0.0..=2.0).contains(&q));
        // A counter reset: the end buckets are used as they are.
        let d = bucket_delta(&[(1.0, 10.0), (inf, 20.0)], &[(1.0, 1.0), (inf, 2.0)]);
        assert_eq!(d, vec![(1.0, 1.0), (inf, 2.0)]);
    }

    #[test]
    fn urls() {
        let u: MetricsUrl = "http://127.0.0.1:9464/metrics".parse().unwrap();
        assert_eq!(
            u,
            MetricsUrl {
                host: "127.0.0.1".into(),
                port: 9464,
                path: "/metrics".into()
            }
        );
        assert_eq!(u.to_string(), "http://127.0.0.1:9464/metrics");
        let u: MetricsUrl = "HTTP://localhost".parse().unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.path.as_str()),
            ("localhost", 80, "/metrics")
        );
        let u: MetricsUrl = "http://[::1]:9464/m?x=1".parse().unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.path.as_str()),
            ("::1", 9464, "/m?x=1")
        );
        assert_eq!(u.to_string(), "http://[::1]:9464/m?x=1");
        let u: MetricsUrl = "http://h:1?x".parse().unwrap();
        assert_eq!(u.path, "/?x");

        let err = |s: &str| s.parse::<MetricsUrl>().unwrap_err();
        assert_eq!(err("https://127.0.0.1:9464/metrics"), UrlError::Https);
        assert_eq!(err("ftp://x/"), UrlError::Scheme("ftp".into()));
        assert_eq!(err("127.0.0.1:9464"), UrlError::Scheme(String::new()));
        assert_eq!(err("http://:9464/metrics"), UrlError::MissingHost);
        assert_eq!(err("http:///metrics"), UrlError::MissingHost);
        assert_eq!(err("http://a@b/"), UrlError::UserInfo);
        assert_eq!(err("http://[::1/"), UrlError::BadIpv6);
        assert_eq!(err("http://[::1]x/"), UrlError::BadIpv6);
        assert_eq!(err("http://h:0/"), UrlError::BadPort("0".into()));
        assert_eq!(err("http://h:70000/"), UrlError::BadPort("70000".into()));
        assert_eq!(err("http://h:+80/"), UrlError::BadPort("+80".into()));
        assert_eq!(err("http://h:/"), UrlError::BadPort(String::new()));
        assert_eq!(err("http://h /"), UrlError::BadCharacter);
        assert_eq!(err("http://h/#x"), UrlError::BadCharacter);
        // Every error has a message.
        assert!(!UrlError::Https.to_string().is_empty());
    }

    #[test]
    fn http_bodies() {
        let plain =
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello";
        assert_eq!(http_body(plain).unwrap(), b"hello");
        let no_len = b"HTTP/1.0 200 OK\r\n\r\nabc";
        assert_eq!(http_body(no_len).unwrap(), b"abc");
        let chunked =
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n4\r\nwiki\r\n5;x=y\r\npedia\r\n0\r\n\r\n";
        assert_eq!(http_body(chunked).unwrap(), b"wikipedia");
        assert!(matches!(
            http_body(b"HTTP/1.1 404 Not Found\r\n\r\n"),
            Err(ScrapeError::Status(404))
        ));
        assert!(http_body(b"garbage").is_err());
        assert!(http_body(b"SSH-2.0\r\n\r\n").is_err());
        assert!(http_body(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nab").is_err());
        assert!(http_body(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n").is_err());
        assert!(
            http_body(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n9\r\nab").is_err()
        );
    }

    /// Found by the scrape_response fuzz target: a chunk size near usize::MAX overflowed
    /// `size + 2` (a panic with overflow checks, an out-of-range slice without them).
    #[test]
    fn chunk_size_near_usize_max_is_an_error_not_a_panic() {
        for size in ["ffffffffffffffff", "fffffffffffffffe", "fffffffffffffffd"] {
            let raw = format!(
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n{size}\r\nabc\r\n0\r\n\r\n"
            );
            assert!(http_body(raw.as_bytes()).is_err(), "{size}");
        }
        // A chunk that exactly fills the body still decodes.
        let raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n";
        assert_eq!(http_body(raw).unwrap(), b"abc");
        let raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r";
        assert!(http_body(raw).is_err());
    }

    #[test]
    fn fetch_over_loopback() {
        use std::net::TcpListener;
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            let mut req = Vec::new();
            let mut buf = [0u8; 1024];
            while find(&req, b"\r\n\r\n").is_none() {
                let n = conn.read(&mut buf).unwrap();
                assert!(n > 0);
                req.extend_from_slice(&buf[..n]);
            }
            let body = "process_cpu_seconds_total 1.25\n";
            let resp = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            conn.write_all(resp.as_bytes()).unwrap();
            String::from_utf8(req).unwrap()
        });
        let url: MetricsUrl = format!("http://127.0.0.1:{port}/metrics").parse().unwrap();
        let scrape = fetch(&url).unwrap();
        assert_eq!(scrape.sum(PROCESS_CPU_SECONDS), Some(1.25));
        let req = server.join().unwrap();
        assert!(req.starts_with("GET /metrics HTTP/1.1\r\n"), "{req}");
        assert!(
            req.contains(&format!("Host: 127.0.0.1:{port}\r\n")),
            "{req}"
        );
    }

    #[test]
    fn garbage_never_panics() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let alphabet = b"ab_{}=\",\\ \n#+-.0123456789eInfNaN\r:";
        for _ in 0..5000 {
            let mut text = Vec::new();
            for _ in 0..(x % 64) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                text.push(alphabet[(x % alphabet.len() as u64) as usize]);
            }
            let text = String::from_utf8(text).unwrap();
            let s = Scrape::parse(&text, Instant::now());
            let _ = s.buckets("a");
            let _ = http_body(text.as_bytes());
        }
    }
}
