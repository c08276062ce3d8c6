//! Starting under an address-space limit (`RLIMIT_AS`: `ulimit -v`, `prlimit --as`, systemd
//! `LimitAS=`): bound what the server reserves, and refuse to start with a clear message, rather
//! than abort mid-start ("memory allocation of N bytes failed", exit 134), when the limit is
//! below what the configuration needs.
//!
//! What `serve` reserves (virtual address space, not resident memory; docs/operations.md,
//! "Memory and address space"):
//!
//! * the binary, its libraries and the main thread's stack (measured at start: `VmSize`);
//! * the send slab, `io.send_queue` x 1500 bytes (12 MB at the default 8192);
//! * per-player tables, about [`PER_PLAYER_BYTES`] x `server.max_players`;
//! * the I/O backend: io_uring rings and buffers (`auto`, `io_uring`), the blocking backend's
//!   receive batch and helper thread;
//! * helper threads (admin accept and upkeep, signals, Agones, one per admin connection), each
//!   with a [`crate::admin::HELPER_STACK_BYTES`] stack;
//! * glibc malloc arenas: every thread that allocates gets an arena of its own, and each
//!   reserves 64 MiB of address space. Under a limit those reservations crowd out the main
//!   thread's tables (the abort above), so [`cap_malloc_arenas`] re-executes the server once
//!   with `MALLOC_ARENA_MAX=1` (all threads share the main arena; the helper threads allocate
//!   little) whenever a limit is set and the environment does not already choose an arena
//!   count.
//!
//! The server crate forbids `unsafe`, so the limit is read from `/proc/self/limits` and the
//! arena count is set through glibc's environment variable rather than `mallopt`.

use std::ffi::OsString;

use crate::config::{Config, IoModel};

/// Address space per `server.max_players` slot (measured: 4.6 KiB per player, epoll, from
/// 8 to 16384 players).
pub const PER_PLAYER_BYTES: u64 = 5 * 1024;
/// Bytes per send slab slot (the largest datagram).
pub const SEND_SLOT_BYTES: u64 = 1500;
/// What glibc reserves for each malloc arena beyond the main one (64-bit).
pub const ARENA_BYTES: u64 = 64 * MIB;
/// Extra room kept for allocations the estimate does not itemise.
pub const HEADROOM_BYTES: u64 = 6 * MIB;
/// The environment variable glibc reads for the arena count.
pub const ARENA_ENV: &str = "MALLOC_ARENA_MAX";

const MIB: u64 = 1024 * 1024;

/// The soft address-space limit in bytes, `None` when unlimited or unknown.
pub fn limit() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    parse_limits(&text)
}

fn parse_limits(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("Max address space"))?;
    let soft = line["Max address space".len()..]
        .split_whitespace()
        .next()?;
    soft.parse().ok()
}

/// The process's current virtual size (`VmSize`) in bytes.
fn vm_size() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = text.lines().find(|l| l.starts_with("VmSize:"))?;
    let kib: u64 = line["VmSize:".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(kib * 1024)
}

/// The malloc arena limit the environment sets, if any (`MALLOC_ARENA_MAX`, or
/// `glibc.malloc.arena_max` in `GLIBC_TUNABLES`).
fn arena_max(env: &dyn Fn(&str) -> Option<OsString>) -> Option<u64> {
    if let Some(v) = env(ARENA_ENV) {
        return v.to_str()?.trim().parse().ok();
    }
    let tunables = env("GLIBC_TUNABLES")?;
    tunables.to_str()?.split(':').find_map(|t| {
        t.strip_prefix("glibc.malloc.arena_max=")
            .and_then(|v| v.trim().parse().ok())
    })
}

/// Under an address-space limit, makes sure glibc's malloc uses one arena: when the
/// environment does not choose an arena count, re-executes this binary (same arguments, same
/// PID) with `MALLOC_ARENA_MAX=1`. Call first thing in `serve`, before any thread exists.
/// Returns only when nothing had to be done, or with the reason the re-exec failed.
pub fn cap_malloc_arenas() -> Result<(), String> {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        use std::os::unix::process::CommandExt;
        if limit().is_none() || arena_max(&|k| std::env::var_os(k)).is_some() {
            return Ok(());
        }
        let mut args = std::env::args_os();
        let arg0 = args.next().unwrap_or_else(|| "tickwire".into());
        let e = std::process::Command::new("/proc/self/exe")
            .arg0(arg0)
            .args(args)
            .env(ARENA_ENV, "1")
            .exec();
        Err(format!(
            "cannot re-execute with {ARENA_ENV}=1 ({e}); every thread may reserve a 64 MiB \
             malloc arena"
        ))
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    Ok(())
}

/// The address space `serve` will reserve with `cfg`, itemised.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Estimate {
    /// (what, bytes), in start order.
    pub items: Vec<(&'static str, u64)>,
}

impl Estimate {
    /// The total in bytes.
    pub fn total(&self) -> u64 {
        self.items.iter().map(|(_, b)| b).sum()
    }
}

/// Estimates what `serve` reserves with `cfg`, given the size of the process so far and the
/// malloc arena limit in effect (`None`: glibc's default, one arena per thread).
pub fn estimate(cfg: &Config, vm_now: u64, arenas: Option<u64>) -> Estimate {
    let stack = crate::admin::HELPER_STACK_BYTES as u64 + 4096;
    let metrics_on = cfg.metrics.bind.is_some();
    // Helper threads: signals, plus admin accept + upkeep + 4 concurrent scrapes when the
    // endpoint is on, plus Agones, plus the blocking backend's receiver.
    let backend_threads = u64::from(cfg.io.model == IoModel::Blocking);
    let threads =
        1 + if metrics_on { 2 + 4 } else { 0 } + u64::from(cfg.agones.enabled) + backend_threads;
    let backend = match cfg.io.model {
        IoModel::Auto | IoModel::IoUring => 10 * MIB,
        IoModel::Blocking => 8 * MIB,
        _ => MIB,
    };
    let mut items = vec![
        ("binary, libraries and start-up heap", vm_now),
        (
            "send slab (io.send_queue x 1500 B)",
            cfg.io.send_queue as u64 * SEND_SLOT_BYTES,
        ),
        (
            "player tables (server.max_players)",
            cfg.server.max_players as u64 * PER_PLAYER_BYTES,
        ),
        ("I/O backend", backend),
        ("helper thread stacks", threads * stack),
    ];
    if cfg!(target_env = "gnu") {
        // Arenas beyond the main one: one per allocating thread, up to the limit.
        let extra = match arenas {
            Some(n) => n.saturating_sub(1).min(threads),
            None => threads,
        };
        if extra > 0 {
            items.push(("glibc malloc arenas (64 MiB each)", extra * ARENA_BYTES));
        }
    }
    items.push(("headroom", HEADROOM_BYTES));
    Estimate { items }
}

fn mib(bytes: u64) -> String {
    format!("{} MiB", bytes.div_ceil(MIB))
}

/// Checks the address-space limit against what `cfg` needs: `Ok` (with a note to log) when
/// there is no limit or it suffices, else a message naming the limit, the estimate and the
/// remedies.
pub fn check(cfg: &Config) -> Result<Option<String>, String> {
    let Some(limit) = limit() else {
        return Ok(None);
    };
    let arenas = arena_max(&|k| std::env::var_os(k));
    let est = estimate(cfg, vm_size().unwrap_or(0), arenas);
    let need = est.total();
    let items = est
        .items
        .iter()
        .map(|(what, b)| format!("{what} {}", mib(*b)))
        .collect::<Vec<_>>()
        .join(", ");
    if limit < need {
        return Err(format!(
            "the address-space limit (RLIMIT_AS, ulimit -v) is {}, below the about {} this \
             configuration reserves ({items}); raise the limit (prlimit --as, systemd \
             LimitAS=, ulimit -v) or lower server.max_players / io.send_queue \
             (docs/operations.md, \"Memory and address space\")",
            mib(limit),
            mib(need)
        ));
    }
    Ok(Some(format!(
        "address-space limit {}; this configuration reserves about {} ({items})",
        mib(limit),
        mib(need)
    )))
}

/// `serve`'s start-up step after logging is up: logs why arenas could not be capped (the
/// result of [`cap_malloc_arenas`]) and the limit, and fails when the limit is too low.
pub fn startup_check(cfg: &Config, arenas_capped: Result<(), String>) -> anyhow::Result<()> {
    if let Err(why) = arenas_capped {
        tracing::warn!("{why}");
    }
    match check(cfg) {
        Ok(Some(note)) => {
            tracing::info!("{note}");
            Ok(())
        }
        Ok(None) => Ok(()),
        Err(msg) => Err(anyhow::anyhow!(msg)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_limits() {
        let text = "Limit                     Soft Limit           Hard Limit           Units     \n\
                    Max stack size            8388608              unlimited            bytes     \n\
                    Max address space         150994944            unlimited            bytes     \n";
        assert_eq!(parse_limits(text), Some(150_994_944));
        let text = "Max address space         unlimited            unlimited            bytes\n";
        assert_eq!(parse_limits(text), None);
        assert_eq!(parse_limits(""), None);
    }

    #[test]
    fn arena_setting_from_either_variable() {
        let none = |_: &str| None;
        assert_eq!(arena_max(&none), None);
        let plain = |k: &str| (k == ARENA_ENV).then(|| OsString::from("2"));
        assert_eq!(arena_max(&plain), Some(2));
        let tun = |k: &str| {
            (k == "GLIBC_TUNABLES")
                .then(|| OsString::from("glibc.malloc.check=0:glibc.malloc.arena_max=1"))
        };
        assert_eq!(arena_max(&tun), Some(1));
    }

    #[test]
    fn estimate_scales_with_players_and_counts_arenas() {
        let mut cfg = Config::default();
        cfg.io.model = IoModel::Epoll;
        let capped = estimate(&cfg, 20 * MIB, Some(1));
        assert!(!capped.items.iter().any(|(w, _)| w.contains("arenas")));
        let uncapped = estimate(&cfg, 20 * MIB, None);
        assert!(uncapped.total() >= capped.total() + 3 * ARENA_BYTES);
        cfg.server.max_players = 16384;
        let big = estimate(&cfg, 20 * MIB, Some(1));
        assert_eq!(
            big.total() - capped.total(),
            (16384 - 2048) * PER_PLAYER_BYTES
        );
    }
}
