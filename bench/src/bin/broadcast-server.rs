//! `broadcast-server`: the broadcast-N workload on one `tickwire-io` backend.
//!
//! The tick loop of the real server without the game: a fixed tick (deadline = start + k x
//! tick); between ticks it sleeps to the next drain point (half-way through the tick and the
//! deadline, the real server's default wake policy) and drains the backend with non-blocking
//! polls; at each deadline it sends every known client (learned from the source address of its
//! inputs) one 600-byte snapshot: `send` per client, one `flush`, then one non-blocking `poll`
//! so that io_uring submits the batch at once. Overruns skip ahead like the real server.
//!
//! ```text
//! broadcast-server --model M --clients-expected N [--tick-ms 16] --bind 127.0.0.1:0
//!                  [--warmup-secs 3] --duration-secs S [--drain-ms 8] [--stop-on-stdin-eof]
//! broadcast-server --list-models      # tickwire_io::available_models(), one a line
//! ```
//!
//! It prints `listening ADDR` on stderr once bound, and at the end one JSON line on stdout with
//! the figures of the window after the warm-up: ticks, late ticks (started more than 1 ms after
//! their deadline), overruns, tick duration and lateness percentiles, datagrams in and out.

#![forbid(unsafe_code)]

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use tickwire_bench::{json_f64, Histogram, INPUT_BYTES, SNAPSHOT_BYTES};
use tickwire_io::{on_datagrams, open, Backend, Config, Model, SocketId};

/// Command line.
#[derive(Parser, Debug)]
#[command(about = "broadcast-N benchmark server on one tickwire-io backend")]
struct Args {
    /// io model: io_uring, epoll, select, blocking (or auto).
    #[arg(long, required_unless_present = "list_models")]
    model: Option<Model>,
    /// Clients the run expects (sizes the client table; clients beyond it are still served).
    #[arg(long, default_value_t = 1000)]
    clients_expected: usize,
    /// Tick length in ms.
    #[arg(long, default_value_t = 16)]
    tick_ms: u64,
    /// UDP address to bind.
    #[arg(long, default_value = "127.0.0.1:0")]
    bind: SocketAddr,
    /// Seconds before the figures start counting.
    #[arg(long, default_value_t = 3.0)]
    warmup_secs: f64,
    /// Total run time in seconds (warm-up included), then print the report and exit.
    #[arg(long, required_unless_present = "list_models")]
    duration_secs: Option<f64>,
    /// Longest sleep between drains in ms (the real server: min(io.timeout_ms, tick / 2));
    /// a value >= tick-ms drains only at the deadline.
    #[arg(long)]
    drain_ms: Option<u64>,
    /// Also stop when stdin reaches end of file (for a parent that holds a pipe open).
    #[arg(long)]
    stop_on_stdin_eof: bool,
    /// Print the models `tickwire_io::available_models()` offers here, one a line, and exit.
    #[arg(long)]
    list_models: bool,
}

/// Window figures.
#[derive(Default)]
struct Counters {
    inputs: u64,
    other_datagrams: u64,
    snapshots_queued: u64,
    send_refused: u64,
    flush_failed: u64,
}

/// The clients seen so far, in first-seen order.
struct Clients {
    seen: HashSet<SocketAddr>,
    order: Vec<SocketAddr>,
}

/// Most non-blocking polls one drain makes (the real server's cap); the rest waits for the
/// next drain point.
const MAX_DRAIN_POLLS: usize = 16;

fn drain(
    io: &mut dyn Backend,
    max_events: usize,
    clients: &mut Clients,
    c: &mut Counters,
) -> anyhow::Result<()> {
    let past = Instant::now();
    for _ in 0..MAX_DRAIN_POLLS {
        let report = io.poll(
            past,
            &mut on_datagrams(|_sock, peer, bytes| {
                if bytes.len() == INPUT_BYTES {
                    c.inputs += 1;
                    if clients.seen.insert(peer) {
                        clients.order.push(peer);
                    }
                } else {
                    c.other_datagrams += 1;
                }
            }),
        )?;
        if report.datagrams < max_events {
            break;
        }
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.list_models {
        for m in tickwire_io::available_models() {
            println!("{m}");
        }
        return Ok(());
    }
    let (Some(model), Some(duration_secs)) = (args.model, args.duration_secs) else {
        anyhow::bail!("--model and --duration-secs are required");
    };
    anyhow::ensure!(
        (1..=1000).contains(&args.tick_ms),
        "--tick-ms must be 1..=1000"
    );
    anyhow::ensure!(
        duration_secs > 0.0 && duration_secs.is_finite(),
        "--duration-secs must be positive"
    );
    let tick = Duration::from_millis(args.tick_ms);
    let drain_every = args
        .drain_ms
        .map(Duration::from_millis)
        .unwrap_or(tick / 2)
        .max(Duration::from_micros(100));
    let cfg = Config {
        send_queue: Config::default().send_queue.max(args.clients_expected + 64),
        ..Config::default()
    };
    let max_events = cfg.max_events;
    let mut io = open(model, &cfg).with_context(|| format!("opening {model}"))?;
    let sock: SocketId = io.bind(args.bind).context("binding")?;
    eprintln!("listening {}", io.local_addr(sock)?);

    let stop = Arc::new(AtomicBool::new(false));
    if args.stop_on_stdin_eof {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut std::io::stdin().lock(), &mut std::io::sink());
            stop.store(true, Ordering::Relaxed);
        });
    }

    let snapshot = [0x5au8; SNAPSHOT_BYTES];
    let mut clients = Clients {
        seen: HashSet::with_capacity(args.clients_expected * 2),
        order: Vec::with_capacity(args.clients_expected),
    };
    let mut c = Counters::default();
    let mut tick_hist = Histogram::for_ticks();
    let mut late_hist = Histogram::for_ticks();
    let (mut ticks, mut overruns) = (0u64, 0u64);

    let t0 = Instant::now();
    let warm_end = t0 + Duration::from_secs_f64(args.warmup_secs.max(0.0));
    let end = t0 + Duration::from_secs_f64(duration_secs);
    let mut warm = args.warmup_secs <= 0.0;
    let tick_ns = tick.as_nanos() as u64;
    let mut k: u64 = 1;
    loop {
        let deadline = t0 + Duration::from_nanos(tick_ns * k);
        if deadline > end || stop.load(Ordering::Relaxed) {
            break;
        }
        // Sleep to the next drain point, drain, until the deadline has come.
        let woke = loop {
            let now = Instant::now();
            let until = deadline.min(now + drain_every);
            if until > now {
                std::thread::sleep(until - now);
            }
            let woke = Instant::now();
            drain(io.as_mut(), max_events, &mut clients, &mut c)?;
            if woke >= deadline {
                break woke;
            }
        };
        if !warm && woke >= warm_end {
            // The window starts with this tick.
            warm = true;
            c = Counters::default();
            tick_hist.clear();
            late_hist.clear();
            ticks = 0;
            overruns = 0;
        }
        // The tick: one snapshot per known client, one flush, one service pass.
        for &peer in &clients.order {
            match io.send(sock, peer, &snapshot) {
                Ok(()) => c.snapshots_queued += 1,
                Err(_) => c.send_refused += 1,
            }
        }
        let flush = io.flush()?;
        c.flush_failed += flush.failed as u64;
        drain(io.as_mut(), max_events, &mut clients, &mut c)?;
        let finished = Instant::now();
        late_hist.record(woke.saturating_duration_since(deadline));
        tick_hist.record(finished - woke);
        ticks += 1;

        k += 1;
        let next = t0 + Duration::from_nanos(tick_ns * k);
        if finished > next {
            let skipped = ((finished - next).as_nanos() / u128::from(tick_ns)) as u64 + 1;
            k += skipped;
            overruns += skipped;
        }
    }
    // io_uring: hand over anything still queued before the backend goes.
    drain(io.as_mut(), max_events, &mut clients, &mut c)?;
    let stats = io.stats();
    let window_s = end
        .min(Instant::now())
        .saturating_duration_since(warm_end)
        .as_secs_f64();
    println!(
        "{{\"server\":\"{}\",\"clients_known\":{},\"window_s\":{:.3},\"ticks\":{},\
         \"late_ticks\":{},\"overruns\":{},\"tick_ms_p50\":{},\"tick_ms_p99\":{},\
         \"tick_ms_max\":{},\"lateness_ms_p50\":{},\"lateness_ms_p99\":{},\
         \"lateness_ms_max\":{},\"inputs\":{},\"other_datagrams\":{},\"snapshots_queued\":{},\
         \"send_refused\":{},\"flush_failed\":{},\"io_send_errors\":{},\"io_recv_errors\":{}}}",
        io.model(),
        clients.order.len(),
        window_s,
        ticks,
        late_hist.count_above(Duration::from_millis(1)),
        overruns,
        json_f64(tick_hist.quantile_ms(0.5)),
        json_f64(tick_hist.quantile_ms(0.99)),
        json_f64(Some(tick_hist.max_ms())),
        json_f64(late_hist.quantile_ms(0.5)),
        json_f64(late_hist.quantile_ms(0.99)),
        json_f64(Some(late_hist.max_ms())),
        c.inputs,
        c.other_datagrams,
        c.snapshots_queued,
        c.send_refused,
        c.flush_failed,
        stats.send_errors,
        stats.recv_errors,
    );
    Ok(())
}
