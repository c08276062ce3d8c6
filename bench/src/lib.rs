//! tickwire-bench: the broadcast-N benchmark of `/work/shared/BENCHMARKS.md` as two binaries
//! and the small pieces they share.
//!
//! * `broadcast-server` runs the bare tick loop of the real server (docs/architecture.md, "The
//!   tick loop") on one `tickwire-io` backend: sleep to the next drain point, drain, and at each
//!   16 ms deadline send every known client one 600-byte snapshot (`send` + `flush` + a
//!   non-blocking `poll`, so io_uring submits at once). No protocol, no world, no encryption:
//!   it measures what the backend and the wake policy cost.
//! * `broadcast-load` is the load generator: N UDP sockets, one 32-byte input per client every
//!   16 ms spread over the tick (N/8 every 2 ms), counting the 600-byte snapshots that come back.
//!
//! The raw batched floor (`recvmmsg`/`sendmmsg` with libc, no backend) is an example of the
//! io crate, `crates/io/examples/floor_server.rs`, because only that crate may use `unsafe`.
//! `scripts/bench.sh` runs them all, pinned, and writes `target/bench/results.jsonl`;
//! docs/benchmarks.md has the figures.
//!
//! This library holds what both binaries need: a fixed-width [`Histogram`] (allocated once,
//! nothing per sample), the process' CPU time from `/proc/self/stat` ([`cpu_seconds`]) and the
//! wire sizes of the workload.

#![forbid(unsafe_code)]

use std::fmt;
use std::io;
use std::time::Duration;

/// Bytes of one client input.
pub const INPUT_BYTES: usize = 32;
/// Bytes of one server snapshot.
pub const SNAPSHOT_BYTES: usize = 600;
/// `USER_HZ`: the unit of `utime`/`stime` in `/proc/PID/stat` (100 on every Linux ABI that
/// Tickwire targets; the kernel converts to it whatever its internal `HZ` is).
pub const USER_HZ: f64 = 100.0;

/// A histogram of durations with fixed-width buckets, allocated once.
///
/// Samples at or above `width * buckets` land in the last bucket; the exact maximum is kept
/// separately. Quantiles answer the upper edge of the bucket that holds them, so they are never
/// optimistic by more than one bucket width.
#[derive(Clone, Debug)]
pub struct Histogram {
    width_ns: u64,
    counts: Vec<u64>,
    total: u64,
    max_ns: u64,
}

impl Histogram {
    /// A histogram of `buckets` buckets `width` wide (`width` at least 1 ns, `buckets` at
    /// least 1).
    pub fn new(width: Duration, buckets: usize) -> Histogram {
        Histogram {
            width_ns: (width.as_nanos() as u64).max(1),
            counts: vec![0; buckets.max(1)],
            total: 0,
            max_ns: 0,
        }
    }

    /// The benchmark's layout: 10 us buckets up to 100 ms (10,000 buckets, 80 KB).
    pub fn for_ticks() -> Histogram {
        Histogram::new(Duration::from_micros(10), 10_000)
    }

    /// Adds one sample.
    pub fn record(&mut self, d: Duration) {
        let ns = d.as_nanos().min(u128::from(u64::MAX)) as u64;
        let i = ((ns / self.width_ns) as usize).min(self.counts.len() - 1);
        self.counts[i] += 1;
        self.total += 1;
        self.max_ns = self.max_ns.max(ns);
    }

    /// Samples recorded.
    pub fn count(&self) -> u64 {
        self.total
    }

    /// Samples above `threshold`, counted by bucket: the bucket that holds `threshold` counts
    /// as above, so the answer errs on the pessimistic side by at most one bucket width.
    pub fn count_above(&self, threshold: Duration) -> u64 {
        let t = threshold.as_nanos().min(u128::from(u64::MAX)) as u64;
        let first = (t / self.width_ns) as usize;
        self.counts.iter().skip(first).sum()
    }

    /// The `q` quantile (0..=1) in milliseconds: the upper edge of its bucket, capped at the
    /// exact maximum. `None` without samples.
    pub fn quantile_ms(&self, q: f64) -> Option<f64> {
        if self.total == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                let upper = (i as u64 + 1) * self.width_ns;
                return Some(upper.min(self.max_ns) as f64 / 1e6);
            }
        }
        Some(self.max_ns as f64 / 1e6)
    }

    /// The largest sample in milliseconds (0 without samples).
    pub fn max_ms(&self) -> f64 {
        self.max_ns as f64 / 1e6
    }

    /// Forgets every sample (the end of the warm-up).
    pub fn clear(&mut self) {
        self.counts.iter_mut().for_each(|c| *c = 0);
        self.total = 0;
        self.max_ns = 0;
    }
}

/// Why `/proc/self/stat` could not be read.
#[derive(Debug)]
pub enum StatError {
    /// Reading the file failed (not Linux, no procfs).
    Io(io::Error),
    /// The file did not have the expected shape.
    Malformed,
}

impl fmt::Display for StatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StatError::Io(e) => write!(f, "reading /proc/self/stat: {e}"),
            StatError::Malformed => f.write_str("/proc/self/stat has an unexpected shape"),
        }
    }
}

impl std::error::Error for StatError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StatError::Io(e) => Some(e),
            StatError::Malformed => None,
        }
    }
}

/// User + system CPU seconds from the text of a `/proc/PID/stat` file (fields 14 and 15,
/// counted after the parenthesised command name, which may itself hold spaces or parentheses).
pub fn parse_cpu_seconds(stat: &str) -> Result<f64, StatError> {
    let after = stat.rfind(')').ok_or(StatError::Malformed)?;
    // Field 3 (state) is the first after the name; utime is field 14, stime field 15.
    let mut fields = stat[after + 1..].split_ascii_whitespace().skip(11);
    let mut next = || -> Result<u64, StatError> {
        fields
            .next()
            .and_then(|f| f.parse().ok())
            .ok_or(StatError::Malformed)
    };
    let utime = next()?;
    let stime = next()?;
    Ok((utime + stime) as f64 / USER_HZ)
}

/// This process' user + system CPU seconds so far.
pub fn cpu_seconds() -> Result<f64, StatError> {
    let text = std::fs::read_to_string("/proc/self/stat").map_err(StatError::Io)?;
    parse_cpu_seconds(&text)
}

/// Formats an optional float for a JSON line: `null` or the value with 4 decimals.
pub fn json_f64(v: Option<f64>) -> String {
    match v {
        Some(x) if x.is_finite() => format!("{x:.4}"),
        _ => "null".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_bucket_upper_edges_capped_at_max() {
        let mut h = Histogram::new(Duration::from_micros(10), 100);
        assert_eq!(h.quantile_ms(0.99), None);
        for us in 0..100u64 {
            h.record(Duration::from_micros(us * 5)); // 0..495 us
        }
        assert_eq!(h.count(), 100);
        // rank 99 is 490 us -> bucket [490, 500) -> upper edge 0.5 ms, capped at max 0.495.
        assert_eq!(h.quantile_ms(0.99), Some(0.495));
        // rank 50 is 245 us -> bucket [240, 250) -> 0.25 ms.
        assert_eq!(h.quantile_ms(0.5), Some(0.25));
        assert_eq!(h.max_ms(), 0.495);
    }

    #[test]
    fn overflow_lands_in_last_bucket_and_max_is_exact() {
        let mut h = Histogram::new(Duration::from_micros(10), 10);
        h.record(Duration::from_millis(7));
        assert_eq!(h.quantile_ms(1.0), Some(0.1));
        assert_eq!(h.max_ms(), 7.0);
        h.clear();
        assert_eq!(h.count(), 0);
        assert_eq!(h.max_ms(), 0.0);
    }

    #[test]
    fn count_above_a_bucket_edge() {
        let mut h = Histogram::for_ticks();
        for us in [100, 999, 1000, 1001, 5000] {
            h.record(Duration::from_micros(us));
        }
        // Bucket [1000, 1010) holds 1000 and 1001: "above 1 ms" counts it whole.
        assert_eq!(h.count_above(Duration::from_millis(1)), 3);
    }

    #[test]
    fn parses_proc_stat_with_odd_command_names() {
        let line = "1234 (a b) c)) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 1 0 \
                    5 100 200 18446744073709551615";
        assert_eq!(parse_cpu_seconds(line).unwrap(), 3.25);
        assert!(matches!(
            parse_cpu_seconds("1 (x) S 1"),
            Err(StatError::Malformed)
        ));
        assert!(matches!(
            parse_cpu_seconds("junk"),
            Err(StatError::Malformed)
        ));
        assert!(cpu_seconds().unwrap() >= 0.0);
    }

    #[test]
    fn json_floats() {
        assert_eq!(json_f64(Some(1.0)), "1.0000");
        assert_eq!(json_f64(None), "null");
        assert_eq!(json_f64(Some(f64::NAN)), "null");
    }
}
