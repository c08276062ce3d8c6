//! `broadcast-load`: the load generator of the broadcast-N benchmark.
//!
//! N UDP sockets on 127.0.0.1 (one per client) in one `tickwire-io` epoll backend. The tick is
//! cut into 8 slots of 2 ms; client `i` sends one 32-byte input at slot `i % 8` of every tick, so
//! N/8 inputs leave every 2 ms on a fixed, open-loop schedule. Between slots it waits on the
//! backend (woken by every arrival, which is fine for a load generator) and counts the 600-byte
//! snapshots received during the window. When it falls more than a tick behind its schedule the
//! missed slots are skipped and counted as `schedule_slips`: then the load generator, not the
//! server, was short of CPU.
//!
//! ```text
//! broadcast-load --server ADDR --clients N --duration-secs D [--warmup-secs 3] [--tick-ms 16]
//! ```
//!
//! Prints one JSON line on stdout: snapshots received and expected (N x window / tick),
//! `delivery_ratio`, this process' CPU cores over the window (`/proc/self/stat`), schedule slips
//! and `kept_up` (no slips and under 0.85 core).

#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use tickwire_bench::{cpu_seconds, json_f64, INPUT_BYTES, SNAPSHOT_BYTES};
use tickwire_io::{on_datagrams, open, Config, Model, SocketId};

/// Command line.
#[derive(Parser, Debug)]
#[command(about = "broadcast-N benchmark load generator")]
struct Args {
    /// The server's UDP address.
    #[arg(long)]
    server: SocketAddr,
    /// Clients (one UDP socket each).
    #[arg(long)]
    clients: usize,
    /// Measurement window in seconds, after the warm-up.
    #[arg(long)]
    duration_secs: f64,
    /// Seconds of load before the window starts.
    #[arg(long, default_value_t = 3.0)]
    warmup_secs: f64,
    /// The server's tick in ms (inputs are spread over it in 8 slots).
    #[arg(long, default_value_t = 16)]
    tick_ms: u64,
}

/// Slots per tick.
const SLOTS: u64 = 8;
/// Most CPU a process may use for a cell to count.
const MAX_CORES: f64 = 0.85;

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(
        (1..=100_000).contains(&args.clients),
        "--clients must be 1..=100000"
    );
    anyhow::ensure!(
        args.duration_secs > 0.0 && args.duration_secs.is_finite(),
        "--duration-secs must be positive"
    );
    anyhow::ensure!(
        (1..=1000).contains(&args.tick_ms),
        "--tick-ms must be 1..=1000"
    );
    let n = args.clients;
    let cfg = Config {
        send_queue: n.max(64),
        socket_buffer_bytes: 256 * 1024,
        ..Config::default()
    };
    let mut io = open(Model::Epoll, &cfg).context("opening the epoll backend")?;
    let bind: SocketAddr = if args.server.is_ipv4() {
        "127.0.0.1:0".parse()?
    } else {
        "[::1]:0".parse()?
    };
    let mut socks = Vec::with_capacity(n);
    for i in 0..n {
        let id = io
            .bind(bind)
            .with_context(|| format!("binding socket {} of {n} (is ulimit -n above N?)", i + 1))?;
        socks.push(id);
    }

    let tick = Duration::from_millis(args.tick_ms);
    let slot = tick / SLOTS as u32;
    let slot_ns = slot.as_nanos() as u64;
    let start = Instant::now();
    let warm_end = start + Duration::from_secs_f64(args.warmup_secs.max(0.0));
    let window = Duration::from_secs_f64(args.duration_secs);
    let end = warm_end + window;

    let mut per_client = vec![0u32; n];
    let mut received: u64 = 0;
    let mut other: u64 = 0;
    let (mut inputs_sent, mut send_refused, mut flush_failed) = (0u64, 0u64, 0u64);
    let mut slips: u64 = 0;
    let mut worst_slot_late = Duration::ZERO;
    let mut seqs = vec![0u32; n];
    let mut input = [0u8; INPUT_BYTES];
    let mut cpu_start = None;

    let mut j: u64 = 0;
    loop {
        let slot_time = start + Duration::from_nanos(slot_ns.saturating_mul(j));
        if slot_time >= end {
            break;
        }
        // Receive until the slot's time.
        loop {
            let now = Instant::now();
            if cpu_start.is_none() && now >= warm_end {
                cpu_start = Some((now, cpu_seconds()?));
            }
            if now >= slot_time {
                break;
            }
            let counting = now >= warm_end;
            io.poll(
                slot_time,
                &mut on_datagrams(|id: SocketId, _peer, bytes: &[u8]| {
                    if bytes.len() == SNAPSHOT_BYTES {
                        if counting {
                            received += 1;
                            per_client[id.0 as usize] += 1;
                        }
                    } else {
                        other += 1;
                    }
                }),
            )?;
        }
        let now = Instant::now();
        let late = now - slot_time;
        if late > tick {
            // More than a tick behind: skip the missed slots.
            let skipped = (late.as_nanos() / slot.as_nanos()) as u64;
            slips += skipped;
            j += skipped;
            continue;
        }
        if now >= warm_end {
            worst_slot_late = worst_slot_late.max(late);
        }
        let s = (j % SLOTS) as usize;
        for i in (s..n).step_by(SLOTS as usize) {
            seqs[i] = seqs[i].wrapping_add(1);
            input[..4].copy_from_slice(&(i as u32).to_le_bytes());
            input[4..8].copy_from_slice(&seqs[i].to_le_bytes());
            match io.send(socks[i], args.server, &input) {
                Ok(()) => inputs_sent += 1,
                Err(_) => send_refused += 1,
            }
        }
        flush_failed += io.flush()?.failed as u64;
        j += 1;
    }
    let finished = Instant::now();
    let cpu_end = cpu_seconds()?;
    let (cpu_t0, cpu_s0) = cpu_start.unwrap_or((warm_end, cpu_end));
    let wall = finished.saturating_duration_since(cpu_t0).as_secs_f64();
    let cores = if wall > 0.0 {
        Some((cpu_end - cpu_s0) / wall)
    } else {
        None
    };
    let expected = n as f64 * window.as_secs_f64() / tick.as_secs_f64();
    let delivery = received as f64 / expected;
    let per_tick_window = window.as_secs_f64() / tick.as_secs_f64();
    let starved = per_client
        .iter()
        .filter(|&&r| f64::from(r) < 0.9 * per_tick_window)
        .count();
    let kept_up = slips == 0 && cores.is_some_and(|c| c < MAX_CORES);
    println!(
        "{{\"clients\":{n},\"window_s\":{:.3},\"snapshots_received\":{received},\
         \"snapshots_expected\":{:.0},\"delivery_ratio\":{},\"clients_under_90pct\":{starved},\
         \"load_cpu_cores\":{},\"schedule_slips\":{slips},\"worst_slot_lateness_ms\":{},\
         \"kept_up\":{kept_up},\"inputs_sent\":{inputs_sent},\"send_refused\":{send_refused},\
         \"flush_failed\":{flush_failed},\"other_datagrams\":{other}}}",
        window.as_secs_f64(),
        expected,
        json_f64(Some(delivery)),
        json_f64(cores),
        json_f64(Some(worst_slot_late.as_secs_f64() * 1e3)),
    );
    Ok(())
}
