//! The stream (TCP) half of the io contract, written once and run against every model this
//! platform build can open (`available_models()`), like the datagram suite in `backends.rs`.
//!
//! A model whose [`Backend::listen`] answers `ErrorKind::Unsupported` (its stream half is not
//! built yet) is skipped with a line on stderr; any other error fails the test. Waits are hang
//! guards ([`PATIENCE`]), never measurements, and no test sleeps to prove that something did not
//! happen. Only 127.0.0.1 with ephemeral ports.
//!
//! Tests that count or exhaust descriptors run alone in a child process (this binary re-executed
//! with `--exact`, see [`in_child`]), so that the other tests of this binary, running on other
//! threads, cannot disturb them and a lowered `RLIMIT_NOFILE` stays in that process.

// Some helpers serve only the unix tests.
#![cfg_attr(not(unix), allow(dead_code))]

mod common;

use std::collections::{HashMap, HashSet};
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

#[cfg(any(target_os = "linux", windows))]
use common::open_fds;
use common::{localhost, models, open_model};
use tickwire_io::{
    Backend, CloseReason, Config, ConnId, Event, IoStats, Model, PollReport, SendError, SocketId,
};

/// Hang guard for waits that normally end in microseconds (a loaded machine may be far
/// slower). Never a measurement.
const PATIENCE: Duration = Duration::from_secs(60);

/// A poll deadline far beyond anything a test waits for.
const FAR: Duration = Duration::from_secs(3600);

/// Set (to the test's name) in the child process of [`in_child`].
const CHILD_ENV: &str = "TICKWIRE_IO_STREAMS_CHILD";

/// Everything a backend delivered, with the contract's invariants checked on every event: at
/// most `max_events` events per poll, stream chunks of 1..=`stream_read_bytes` bytes, nothing
/// after a connection's `Closed` (or after the test closed it), one `Closed` per connection.
struct Rec {
    model: Model,
    max_events: usize,
    read_bytes: usize,
    accepted: Vec<(SocketId, ConnId, SocketAddr)>,
    data: HashMap<ConnId, Vec<u8>>,
    closed: Vec<(ConnId, CloseReason)>,
    /// Connections the test closed with `Backend::close`.
    closed_by_us: HashSet<ConnId>,
    datagrams: usize,
    /// Polls that delivered no event and no wake-up although their deadline had not passed.
    early_empty_polls: usize,
}

impl Rec {
    fn new(model: Model, cfg: &Config) -> Rec {
        Rec {
            model,
            max_events: cfg.max_events,
            read_bytes: cfg.stream_read_bytes,
            accepted: Vec::new(),
            data: HashMap::new(),
            closed: Vec::new(),
            closed_by_us: HashSet::new(),
            datagrams: 0,
            early_empty_polls: 0,
        }
    }

    fn is_closed(&self, conn: ConnId) -> bool {
        self.closed.iter().any(|c| c.0 == conn)
    }

    fn closes_of(&self, conn: ConnId) -> Vec<CloseReason> {
        self.closed
            .iter()
            .filter(|c| c.0 == conn)
            .map(|c| c.1)
            .collect()
    }

    fn bytes(&self, conn: ConnId) -> &[u8] {
        self.data.get(&conn).map(|v| v.as_slice()).unwrap_or(&[])
    }

    /// One poll; returns its report and how many events it delivered.
    fn poll(&mut self, io: &mut dyn Backend, deadline: Instant) -> (PollReport, usize) {
        let model = self.model;
        let read_bytes = self.read_bytes;
        let mut delivered = 0;
        let accepted = &mut self.accepted;
        let data = &mut self.data;
        let closed = &mut self.closed;
        let closed_by_us = &self.closed_by_us;
        let datagrams = &mut self.datagrams;
        let report = io
            .poll(deadline, &mut |event| {
                delivered += 1;
                let conn = match event {
                    Event::Datagram { .. } => {
                        *datagrams += 1;
                        return;
                    }
                    Event::Accepted {
                        listener,
                        conn,
                        from,
                    } => {
                        assert!(
                            !data.contains_key(&conn) && !accepted.iter().any(|a| a.1 == conn),
                            "{}: {} accepted twice",
                            model,
                            conn
                        );
                        accepted.push((listener, conn, from));
                        conn
                    }
                    Event::Stream { conn, data: bytes } => {
                        assert!(
                            !bytes.is_empty() && bytes.len() <= read_bytes,
                            "{}: {} bytes in one stream event (stream_read_bytes {})",
                            model,
                            bytes.len(),
                            read_bytes
                        );
                        data.entry(conn).or_default().extend_from_slice(bytes);
                        conn
                    }
                    Event::Closed { conn, reason } => {
                        closed.push((conn, reason));
                        assert_eq!(
                            closed.iter().filter(|c| c.0 == conn).count(),
                            1,
                            "{}: {} closed twice: {:?}",
                            model,
                            conn,
                            closed
                        );
                        return assert!(
                            !closed_by_us.contains(&conn),
                            "{}: Closed for {}, which the caller closed",
                            model,
                            conn
                        );
                    }
                };
                assert!(
                    !closed.iter().any(|c| c.0 == conn),
                    "{}: event for {} after its Closed",
                    model,
                    conn
                );
                assert!(
                    !closed_by_us.contains(&conn),
                    "{}: event for {} after the caller closed it",
                    model,
                    conn
                );
            })
            .unwrap_or_else(|e| panic!("{}: poll: {}", model, e));
        assert!(
            delivered <= self.max_events,
            "{}: {} events in one poll (max_events {})",
            model,
            delivered,
            self.max_events
        );
        assert!(
            report.events >= delivered,
            "{}: {:?} but {} events delivered",
            model,
            report,
            delivered
        );
        if report.events == 0 && Instant::now() < deadline {
            self.early_empty_polls += 1;
        }
        (report, delivered)
    }

    /// Polls until `done` holds, for things that come as events: every poll's deadline is the
    /// hang guard's ([`PATIENCE`]), so a poll that sits on work it already has (a budget cut,
    /// an edge it consumed) fails instead of being rescued by a short timeout.
    fn until(&mut self, io: &mut dyn Backend, what: &str, mut done: impl FnMut(&Rec) -> bool) {
        let end = Instant::now() + PATIENCE;
        while !done(self) {
            assert!(
                Instant::now() < end,
                "{}: hung waiting for {}",
                self.model,
                what
            );
            self.poll(io, end);
            assert!(
                Instant::now() < end,
                "{}: a poll sat until the hang guard waiting for {}",
                self.model,
                what
            );
        }
    }

    /// Polls until the next `Accepted`, returns it.
    fn accept(&mut self, io: &mut dyn Backend) -> (SocketId, ConnId, SocketAddr) {
        let before = self.accepted.len();
        self.until(io, "a connection", |r| r.accepted.len() > before);
        self.accepted[before]
    }

    /// `Backend::close`, remembered so that a later event for `conn` fails the test.
    fn close(&mut self, io: &mut dyn Backend, conn: ConnId) {
        io.close(conn);
        self.closed_by_us.insert(conn);
    }
}

/// Models whose stream half is built: for them `Unsupported` from `listen` is a failure, not
/// a skip. Add yours when it lands.
const SERVE_STREAMS: &[Model] = &[
    Model::Epoll,
    Model::IoUring,
    Model::Kqueue,
    Model::Select,
    Model::Blocking,
    Model::Iocp,
];

/// `listen` on 127.0.0.1: the listener's id, or `None` (with a line on stderr) when the
/// model's stream half is not built yet (`Unsupported`, and only that). Any other failure
/// fails the test.
fn try_listen(io: &mut dyn Backend, model: Model) -> Option<SocketId> {
    match io.listen(localhost()) {
        Ok(id) => Some(id),
        Err(e) if e.kind() == io::ErrorKind::Unsupported && !SERVE_STREAMS.contains(&model) => {
            eprintln!("{}: streams not built ({}); skipped", model, e);
            None
        }
        Err(e) => panic!("{}: listen: {}", model, e),
    }
}

/// Opens `model` with a listener on 127.0.0.1 (see [`try_listen`] for `None`).
fn open_listening(model: Model, cfg: &Config) -> Option<(Box<dyn Backend>, SocketId, SocketAddr)> {
    let mut io = open_model(model, cfg);
    let id = try_listen(&mut *io, model)?;
    let addr = io
        .local_addr(id)
        .unwrap_or_else(|e| panic!("{}: local_addr of a listener: {}", model, e));
    assert_ne!(addr.port(), 0, "{}", model);
    Some((io, id, addr))
}

/// A std client connected to `addr`, with a read timeout as a hang guard.
fn client(addr: SocketAddr) -> TcpStream {
    let c = TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(PATIENCE)).unwrap();
    c.set_write_timeout(Some(PATIENCE)).unwrap();
    c
}

/// Bytes `start..start + len` of the test streams: a position-dependent pattern, so a lost,
/// repeated or reordered chunk shows.
fn pattern_at(start: usize, len: usize) -> Vec<u8> {
    (start..start + len)
        .map(|i| (i % 251) as u8 ^ (i >> 16) as u8)
        .collect()
}

fn pattern(len: usize) -> Vec<u8> {
    pattern_at(0, len)
}

/// Polls (without waiting for events: what is awaited may be internal work, such as a shed
/// connection) until the backend's counters satisfy `ok`; returns them.
fn wait_stats(
    io: &mut dyn Backend,
    rec: &mut Rec,
    what: &str,
    ok: impl Fn(&IoStats) -> bool,
) -> IoStats {
    let end = Instant::now() + PATIENCE;
    loop {
        let stats = io.stats();
        if ok(&stats) {
            return stats;
        }
        assert!(
            Instant::now() < end,
            "{}: hung waiting for {}: {:?}",
            rec.model,
            what,
            stats
        );
        rec.poll(io, Instant::now() + Duration::from_millis(5));
    }
}

/// Reads exactly `want` bytes from a std client, polling `io` between reads so that the
/// backend can write what it has queued (and io_uring submit it). `client` is made
/// non-blocking.
fn client_read(
    io: &mut dyn Backend,
    rec: &mut Rec,
    client: &mut TcpStream,
    want: usize,
) -> Vec<u8> {
    client.set_nonblocking(true).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let end = Instant::now() + PATIENCE;
    while got.len() < want {
        assert!(
            Instant::now() < end,
            "{}: hung reading {} bytes (got {})",
            rec.model,
            want,
            got.len()
        );
        match client.read(&mut buf[..(want - got.len()).min(4096)]) {
            Ok(0) => panic!("{}: EOF after {} of {} bytes", rec.model, got.len(), want),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                rec.poll(io, Instant::now() + Duration::from_millis(5));
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => panic!("{}: client read: {}", rec.model, e),
        }
    }
    got
}

/// Polls `io` until the std client sees the connection end (EOF or reset); returns what it
/// read before that. `client` is made non-blocking.
fn client_read_to_end(io: &mut dyn Backend, rec: &mut Rec, client: &mut TcpStream) -> Vec<u8> {
    client.set_nonblocking(true).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let end = Instant::now() + PATIENCE;
    loop {
        assert!(
            Instant::now() < end,
            "{}: hung waiting for the connection to end",
            rec.model
        );
        match client.read(&mut buf) {
            Ok(0) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                rec.poll(io, Instant::now() + Duration::from_millis(5));
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return got,
            Err(e) => panic!("{}: client read: {}", rec.model, e),
        }
    }
}

/// Runs the calling test alone in a child process: this test binary re-executed with `--exact
/// name` and [`CHILD_ENV`] set. Returns true in the child (which then runs the body), false in
/// the parent once the child passed (its output is echoed; its failure fails the parent).
fn in_child(name: &str) -> bool {
    if std::env::var(CHILD_ENV).map(|v| v == name).unwrap_or(false) {
        return true;
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, name)
        .output()
        .expect("re-execute the test binary");
    let stdout = String::from_utf8_lossy(&out.stdout);
    print!("{}", stdout);
    eprint!("{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        out.status.success(),
        "child {} failed: {}",
        name,
        out.status
    );
    assert!(
        stdout.contains("1 passed"),
        "child {} did not run exactly one test",
        name
    );
    false
}

#[test]
fn accept_and_echo_with_a_std_client() {
    for model in models() {
        let cfg = Config::default();
        let mut io = open_model(model, &cfg);
        // Listeners share the id space of UDP sockets.
        let udp = io.bind(localhost()).unwrap();
        let listener = match try_listen(&mut *io, model) {
            Some(id) => id,
            None => continue,
        };
        assert_ne!(listener, udp, "{}", model);
        let udp2 = io.bind(localhost()).unwrap();
        assert!(udp2 != listener && udp2 != udp, "{}", model);
        let addr = io.local_addr(listener).unwrap();
        assert_ne!(addr.port(), 0, "{}", model);
        let mut rec = Rec::new(model, &cfg);

        let mut c = client(addr);
        let (l, conn, from) = rec.accept(&mut *io);
        assert_eq!(l, listener, "{}", model);
        assert_eq!(from, c.local_addr().unwrap(), "{}", model);
        assert_eq!(io.connections(), 1, "{}", model);
        assert_eq!(io.stats().accepted, 1, "{}", model);
        assert_eq!(
            io.send_capacity(conn),
            Some(cfg.stream_send_bytes),
            "{}",
            model
        );

        // Client to server.
        c.write_all(b"hello").unwrap();
        rec.until(&mut *io, "hello", |r| r.bytes(conn).len() >= 5);
        assert_eq!(rec.bytes(conn), b"hello", "{}", model);

        // Server to client: nothing is written before the flush.
        io.send_stream(conn, b"wor").unwrap();
        io.send_stream(conn, b"ld").unwrap();
        assert_eq!(io.stream_queued(), 5, "{}", model);
        assert_eq!(
            io.send_capacity(conn),
            Some(cfg.stream_send_bytes - 5),
            "{}",
            model
        );
        let report = io.flush().unwrap();
        assert_eq!(report.stream_bytes, 5, "{}", model);
        assert_eq!((report.sent, report.failed), (0, 0), "{}", model);
        assert_eq!(
            client_read(&mut *io, &mut rec, &mut c, 5),
            b"world",
            "{}",
            model
        );
        let end = Instant::now() + PATIENCE;
        while io.stream_queued() != 0 {
            assert!(Instant::now() < end, "{}: send buffer never emptied", model);
            rec.poll(&mut *io, Instant::now() + Duration::from_millis(5));
        }
        assert_eq!(
            io.send_capacity(conn),
            Some(cfg.stream_send_bytes),
            "{}",
            model
        );

        // Datagrams still work beside the streams.
        let to = io.local_addr(udp2).unwrap();
        io.send(udp, to, b"dgram").unwrap();
        assert_eq!(io.flush().unwrap().sent, 1, "{}", model);
        rec.until(&mut *io, "the datagram", |r| r.datagrams == 1);

        let stats = io.stats();
        assert_eq!(
            (
                stats.accepts_over_limit,
                stats.accepts_shed,
                stats.accept_errors
            ),
            (0, 0, 0),
            "{}",
            model
        );
        assert!(rec.closed.is_empty(), "{}: {:?}", model, rec.closed);
    }
}

#[test]
fn backend_connects_to_a_backend_listener() {
    for model in models() {
        let cfg = Config::default();
        let (mut server, _listener, addr) = match open_listening(model, &cfg) {
            Some(x) => x,
            None => continue,
        };
        let mut client = open_model(model, &cfg);
        let mut srec = Rec::new(model, &cfg);
        let mut crec = Rec::new(model, &cfg);

        let c = client.connect(addr, PATIENCE).unwrap();
        assert_eq!(client.connections(), 1, "{}", model);
        assert_eq!(
            client.send_capacity(c),
            Some(cfg.stream_send_bytes),
            "{}",
            model
        );
        let (_, s, _) = srec.accept(&mut *server);

        client.send_stream(c, b"ping").unwrap();
        assert_eq!(client.flush().unwrap().stream_bytes, 4, "{}", model);
        let end = Instant::now() + PATIENCE;
        while srec.bytes(s).len() < 4 {
            assert!(Instant::now() < end, "{}: ping never arrived", model);
            crec.poll(&mut *client, Instant::now());
            srec.poll(&mut *server, Instant::now() + Duration::from_millis(5));
        }
        assert_eq!(srec.bytes(s), b"ping", "{}", model);

        server.send_stream(s, b"pong").unwrap();
        assert_eq!(server.flush().unwrap().stream_bytes, 4, "{}", model);
        while crec.bytes(c).len() < 4 {
            assert!(Instant::now() < end, "{}: pong never arrived", model);
            srec.poll(&mut *server, Instant::now());
            crec.poll(&mut *client, Instant::now() + Duration::from_millis(5));
        }
        assert_eq!(crec.bytes(c), b"pong", "{}", model);
        // A connected (not accepted) connection has no Accepted event and is not counted.
        assert!(crec.accepted.is_empty(), "{}", model);
        assert_eq!(client.stats().accepted, 0, "{}", model);

        // The client closes: the server sees one Eof, the client nothing.
        crec.close(&mut *client, c);
        assert_eq!(client.connections(), 0, "{}", model);
        assert_eq!(
            client.send_stream(c, b"x"),
            Err(SendError::Closed),
            "{}",
            model
        );
        // Both are polled meanwhile: a completion backend may finish the close in its poll.
        let end = Instant::now() + PATIENCE;
        while !srec.is_closed(s) {
            assert!(Instant::now() < end, "{}: the close never arrived", model);
            crec.poll(&mut *client, Instant::now());
            srec.poll(&mut *server, Instant::now() + Duration::from_millis(5));
        }
        assert_eq!(srec.closes_of(s), vec![CloseReason::Eof], "{}", model);
        assert_eq!(server.connections(), 0, "{}", model);
        crec.poll(&mut *client, Instant::now());
        assert!(crec.closed.is_empty(), "{}: {:?}", model, crec.closed);

        // Connecting to a port nobody listens on fails, and leaves nothing behind.
        let gone = TcpListener::bind(localhost()).unwrap();
        let gone_addr = gone.local_addr().unwrap();
        drop(gone);
        assert!(client.connect(gone_addr, PATIENCE).is_err(), "{}", model);
        assert_eq!(client.connections(), 0, "{}", model);
    }
}

#[test]
fn a_megabyte_each_way_with_partial_writes() {
    const TOTAL: usize = 1 << 20;
    for model in models() {
        let cfg = Config {
            max_events: 16,
            stream_send_bytes: 16 * 1024,
            stream_read_bytes: 4096,
            ..Config::default()
        };
        let (mut io, _, addr) = match open_listening(model, &cfg) {
            Some(x) => x,
            None => continue,
        };
        let mut rec = Rec::new(model, &cfg);
        let mut c = small_window_client(addr);
        let (_, conn, _) = rec.accept(&mut *io);
        let data = pattern(TOTAL);

        // Client to server: the client writes as fast as the kernel takes it, the backend
        // reads at most `max_events` chunks of `stream_read_bytes` per poll.
        c.set_nonblocking(true).unwrap();
        let mut written = 0;
        let end = Instant::now() + PATIENCE;
        while rec.bytes(conn).len() < TOTAL {
            assert!(
                Instant::now() < end,
                "{}: hung at {} of {} bytes in",
                model,
                rec.bytes(conn).len(),
                TOTAL
            );
            if written < TOTAL {
                match c.write(&data[written..TOTAL.min(written + 64 * 1024)]) {
                    Ok(n) => written += n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => panic!("{}: client write: {}", model, e),
                }
            }
            rec.poll(&mut *io, Instant::now() + Duration::from_millis(2));
        }
        assert!(
            rec.bytes(conn) == &data[..],
            "{}: client->server corrupted",
            model
        );

        // Server to client: the server queues what fits and flushes every round. The client
        // does not read until a flush left bytes queued (the kernel took only part of them:
        // its buffers are small, see `small_window_client`), then reads at most 4 KiB per
        // round, so the backend keeps meeting a full socket.
        let mut queued = 0;
        let mut flushed = 0;
        let mut partial_flushes = 0;
        let mut reading = false;
        let mut got = Vec::with_capacity(TOTAL);
        let mut buf = [0u8; 4096];
        let end = Instant::now() + PATIENCE;
        while got.len() < TOTAL {
            assert!(
                Instant::now() < end,
                "{}: hung at {} of {} bytes out",
                model,
                got.len(),
                TOTAL
            );
            while queued < TOTAL {
                let room = io.send_capacity(conn).expect("connection open");
                if room == 0 {
                    break;
                }
                let n = room.min(TOTAL - queued).min(5000);
                io.send_stream(conn, &data[queued..queued + n]).unwrap();
                queued += n;
            }
            assert!(io.stream_queued() <= cfg.stream_send_bytes, "{}", model);
            flushed += io.flush().unwrap().stream_bytes;
            if io.stream_queued() > 0 {
                partial_flushes += 1;
                reading = true;
            }
            reading |= queued == TOTAL;
            rec.poll(&mut *io, Instant::now() + Duration::from_millis(1));
            if !reading {
                continue;
            }
            match c.read(&mut buf) {
                Ok(0) => panic!("{}: EOF after {} bytes", model, got.len()),
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("{}: client read: {}", model, e),
            }
        }
        assert!(got == data, "{}: server->client corrupted", model);
        assert!(flushed <= TOTAL, "{}: {} bytes flushed", model, flushed);
        eprintln!(
            "{}: {} flushes left bytes queued; {} of {} bytes handed over by flush()",
            model, partial_flushes, flushed, TOTAL
        );
        // Where the client's small window is certain to hold (Linux), the kernel must have
        // refused part of the megabyte.
        if cfg!(target_os = "linux") {
            assert!(partial_flushes > 0, "{}: no partial write happened", model);
        }
        let end = Instant::now() + PATIENCE;
        while io.stream_queued() != 0 {
            assert!(Instant::now() < end, "{}: send buffer never emptied", model);
            rec.poll(&mut *io, Instant::now() + Duration::from_millis(5));
        }
        assert!(rec.closed.is_empty(), "{}: {:?}", model, rec.closed);
    }
}

#[test]
fn many_connections_under_a_small_budget_arrive_over_several_polls() {
    const CONNS: usize = 50;
    const BUDGET: usize = 8;
    for model in models() {
        let cfg = Config {
            max_events: BUDGET,
            ..Config::default()
        };
        let (mut io, _, addr) = match open_listening(model, &cfg) {
            Some(x) => x,
            None => continue,
        };
        let mut rec = Rec::new(model, &cfg);
        // Every client connects before the first poll: the listener's backlog is larger than
        // the budget, and nothing new arrives while the backend works through it.
        let mut clients: Vec<TcpStream> = (0..CONNS).map(|_| client(addr)).collect();
        let mut polls = 0;
        rec.until(&mut *io, "every connection", |r| {
            polls += 1;
            r.accepted.len() == CONNS
        });
        assert!(polls > CONNS / BUDGET, "{}: {} polls", model, polls);
        assert_eq!(io.connections(), CONNS, "{}", model);
        let by_addr: HashMap<SocketAddr, ConnId> =
            rec.accepted.iter().map(|a| (a.2, a.1)).collect();

        // Every client sends once; nothing more arrives after that, so a connection the
        // budget cut must be served from the backend's own backlog, not by a new edge.
        let msg = |i: usize| format!("client {:02} says hello", i).into_bytes();
        for (i, c) in clients.iter_mut().enumerate() {
            c.write_all(&msg(i)).unwrap();
        }
        let complete = |r: &Rec| {
            clients
                .iter()
                .enumerate()
                .all(|(i, c)| r.bytes(by_addr[&c.local_addr().unwrap()]).len() >= msg(i).len())
        };
        // A poll right after one the budget cut must not wait for news: its deadline is the
        // hang guard's, so sitting on the work it has fails the test.
        let end = Instant::now() + PATIENCE;
        let mut full_polls = 0;
        while !complete(&rec) {
            assert!(Instant::now() < end, "{}: hung", model);
            if rec.poll(&mut *io, end).1 == BUDGET {
                full_polls += 1;
            }
            assert!(
                Instant::now() < end,
                "{}: a poll sat on ready work until the hang guard",
                model
            );
        }
        for (i, c) in clients.iter().enumerate() {
            let conn = by_addr[&c.local_addr().unwrap()];
            assert_eq!(rec.bytes(conn), &msg(i)[..], "{}", model);
        }
        eprintln!("{}: {} polls filled the budget", model, full_polls);
        assert!(rec.closed.is_empty(), "{}: {:?}", model, rec.closed);
    }
}

#[test]
fn peer_fin_is_one_eof() {
    for model in models() {
        let cfg = Config::default();
        let (mut io, _, addr) = match open_listening(model, &cfg) {
            Some(x) => x,
            None => continue,
        };
        let mut rec = Rec::new(model, &cfg);

        // A half-close: the server still reads what came before the FIN.
        let mut c = client(addr);
        let (_, conn, _) = rec.accept(&mut *io);
        c.write_all(b"last words").unwrap();
        c.shutdown(Shutdown::Write).unwrap();
        rec.until(&mut *io, "the FIN", |r| r.is_closed(conn));
        assert_eq!(rec.bytes(conn), b"last words", "{}", model);
        assert_eq!(rec.closes_of(conn), vec![CloseReason::Eof], "{}", model);
        assert_eq!(io.connections(), 0, "{}", model);
        assert_eq!(
            io.send_stream(conn, b"x"),
            Err(SendError::Closed),
            "{}",
            model
        );
        assert_eq!(io.send_capacity(conn), None, "{}", model);
        // The backend closed its socket: the client reads EOF.
        let rest = client_read_to_end(&mut *io, &mut rec, &mut c);
        assert!(rest.is_empty(), "{}", model);

        // A full close (drop), with a second connection open beside it.
        let stay = client(addr);
        let (_, stay_conn, _) = rec.accept(&mut *io);
        let c2 = client(addr);
        let (_, conn2, _) = rec.accept(&mut *io);
        drop(c2);
        rec.until(&mut *io, "the second FIN", |r| r.is_closed(conn2));
        assert_eq!(rec.closes_of(conn2), vec![CloseReason::Eof], "{}", model);
        assert_eq!(io.connections(), 1, "{}", model);
        assert!(!rec.is_closed(stay_conn), "{}", model);
        // Closing an already-closed handle does nothing.
        io.close(conn2);
        assert_eq!(io.connections(), 1, "{}", model);
        drop(stay);
        rec.until(&mut *io, "the third FIN", |r| r.is_closed(stay_conn));
        assert_eq!(rec.closed.len(), 3, "{}: {:?}", model, rec.closed);
    }
}

/// Makes the std client's close send a RST (`SO_LINGER` on with a zero timeout).
#[cfg(unix)]
fn reset_on_close(s: &TcpStream) {
    use std::os::unix::io::AsRawFd;
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: `linger` is a valid struct linger that outlives the call, and its size is passed.
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            &linger as *const libc::linger as *const libc::c_void,
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "SO_LINGER: {}", io::Error::last_os_error());
}

/// Makes the std client's close send a RST (`SO_LINGER` on with a zero timeout).
#[cfg(windows)]
fn reset_on_close(s: &TcpStream) {
    use std::os::windows::io::AsRawSocket;
    use windows_sys::Win32::Networking::WinSock as ws;
    let linger = ws::LINGER {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: `linger` is a valid LINGER that outlives the call, and its size is passed.
    let rc = unsafe {
        ws::setsockopt(
            s.as_raw_socket() as ws::SOCKET,
            ws::SOL_SOCKET,
            ws::SO_LINGER,
            &linger as *const ws::LINGER as *const u8,
            std::mem::size_of::<ws::LINGER>() as i32,
        )
    };
    assert_eq!(rc, 0, "SO_LINGER: {}", io::Error::last_os_error());
}

/// One `Closed` with an error: a reset. Under Wine a read of a reset connection answers 0
/// bytes (Windows answers `WSAECONNRESET`), so there `Eof` is what a reset looks like.
#[cfg(any(unix, windows))]
fn is_reset(reasons: &[CloseReason]) -> bool {
    #[cfg(windows)]
    let wine_eof = common::under_wine() && reasons[..] == [CloseReason::Eof];
    #[cfg(not(windows))]
    let wine_eof = false;
    matches!(reasons[..], [CloseReason::Error(_)]) || wine_eof
}

#[cfg(any(unix, windows))]
#[test]
fn peer_reset_is_one_error() {
    for model in models() {
        let cfg = Config::default();
        let (mut io, _, addr) = match open_listening(model, &cfg) {
            Some(x) => x,
            None => continue,
        };
        let mut rec = Rec::new(model, &cfg);

        // Seen by the read side.
        let c = client(addr);
        let (_, conn, _) = rec.accept(&mut *io);
        reset_on_close(&c);
        drop(c);
        rec.until(&mut *io, "the reset", |r| r.is_closed(conn));
        let reasons = rec.closes_of(conn);
        assert!(is_reset(&reasons), "{}: {:?}", model, reasons);
        eprintln!("{}: reset seen as {:?}", model, reasons[0]);
        assert_eq!(io.connections(), 0, "{}", model);
        assert_eq!(
            io.send_stream(conn, b"x"),
            Err(SendError::Closed),
            "{}",
            model
        );
        assert_eq!(io.send_capacity(conn), None, "{}", model);

        // Seen by a write (or by the read, whichever comes first): still exactly one Closed,
        // an error, delivered by a poll.
        let c = client(addr);
        let (_, conn, _) = rec.accept(&mut *io);
        reset_on_close(&c);
        drop(c);
        if io.send_stream(conn, b"into the void").is_ok() {
            io.flush().unwrap();
        }
        rec.until(&mut *io, "the reset on write", |r| r.is_closed(conn));
        let reasons = rec.closes_of(conn);
        assert!(is_reset(&reasons), "{}: {:?}", model, reasons);
        assert_eq!(io.connections(), 0, "{}", model);
        assert_eq!(io.stream_queued(), 0, "{}", model);
    }
}

#[test]
fn a_slow_reader_fills_its_bounded_send_buffer() {
    const CAP: usize = 64 * 1024;
    const CHUNK: usize = 4096;
    for model in models() {
        let cfg = Config {
            stream_send_bytes: CAP,
            ..Config::default()
        };
        let (mut io, _, addr) = match open_listening(model, &cfg) {
            Some(x) => x,
            None => continue,
        };
        let mut rec = Rec::new(model, &cfg);
        let mut c = client(addr);
        let (_, conn, _) = rec.accept(&mut *io);

        // The client never reads: queue, flush, poll until the kernel's buffers are full too
        // and a flush leaves the send buffer full.
        const LIMIT: usize = 256 << 20;
        let mut queued = 0;
        let mut fulls = 0;
        let end = Instant::now() + PATIENCE;
        loop {
            assert!(
                Instant::now() < end,
                "{}: the kernel never filled up",
                model
            );
            assert!(queued < LIMIT, "{}: the kernel took 256 MiB", model);
            let room = io.send_capacity(conn).expect("connection open");
            if room > 0 {
                let n = room.min(CHUNK);
                io.send_stream(conn, &pattern_at(queued, n)).unwrap();
                queued += n;
                assert!(io.stream_queued() <= CAP, "{}", model);
                continue;
            }
            // Full: a send that does not fit is refused whole and counted.
            assert_eq!(io.stream_queued(), CAP, "{}", model);
            assert_eq!(
                io.send_stream(conn, &pattern_at(queued, 1)),
                Err(SendError::Full),
                "{}",
                model
            );
            fulls += 1;
            assert_eq!(io.stats().stream_send_full, fulls, "{}", model);
            io.flush().unwrap();
            rec.poll(&mut *io, Instant::now());
            if io.send_capacity(conn) == Some(0) {
                break; // the kernel took nothing more
            }
        }
        assert_eq!(io.stream_queued(), CAP, "{}", model);
        assert_eq!(
            io.send_stream(conn, b"no room"),
            Err(SendError::Full),
            "{}",
            model
        );
        assert_eq!(io.stats().stream_send_full, fulls + 1, "{}", model);
        eprintln!(
            "{}: {} bytes accepted before the buffer stayed full ({} in the kernel)",
            model,
            queued,
            queued - CAP
        );

        // Now the client reads everything. No more flush() calls: what was queued is written
        // as the socket becomes writable again, during polls.
        let got = client_read(&mut *io, &mut rec, &mut c, queued);
        assert!(got == pattern(queued), "{}: lost or reordered", model);
        let end = Instant::now() + PATIENCE;
        while io.stream_queued() != 0 {
            assert!(Instant::now() < end, "{}: send buffer never emptied", model);
            rec.poll(&mut *io, Instant::now() + Duration::from_millis(5));
        }
        assert_eq!(io.send_capacity(conn), Some(CAP), "{}", model);
        assert!(rec.closed.is_empty(), "{}: {:?}", model, rec.closed);
    }
}

#[test]
fn close_is_silent_and_the_old_handle_stays_stale() {
    for model in models() {
        let cfg = Config::default();
        let (mut io, _, addr) = match open_listening(model, &cfg) {
            Some(x) => x,
            None => continue,
        };
        let mut rec = Rec::new(model, &cfg);

        let mut a = client(addr);
        let (_, old, _) = rec.accept(&mut *io);
        // Queued but not flushed: close() tries one write before closing.
        io.send_stream(old, b"bye").unwrap();
        rec.close(&mut *io, old);
        assert_eq!(io.connections(), 0, "{}", model);
        assert_eq!(io.stream_queued(), 0, "{}", model);
        assert_eq!(
            io.send_stream(old, b"x"),
            Err(SendError::Closed),
            "{}",
            model
        );
        assert_eq!(io.send_capacity(old), None, "{}", model);
        io.close(old); // twice: nothing
        let got = client_read_to_end(&mut *io, &mut rec, &mut a);
        assert_eq!(got, b"bye", "{}", model);

        // A new connection probably takes the old slot; the old handle never reaches it.
        let mut b = client(addr);
        let (_, new, _) = rec.accept(&mut *io);
        assert_ne!(new, old, "{}", model);
        assert_eq!(
            io.send_stream(old, b"x"),
            Err(SendError::Closed),
            "{}",
            model
        );
        io.close(old);
        assert_eq!(io.connections(), 1, "{}", model);
        io.send_stream(new, b"y").unwrap();
        assert_eq!(
            io.send_stream(old, b"x"),
            Err(SendError::Closed),
            "{}",
            model
        );
        io.send_stream(new, b"z").unwrap();
        io.flush().unwrap();
        assert_eq!(
            client_read(&mut *io, &mut rec, &mut b, 2),
            b"yz",
            "{}",
            model
        );
        b.write_all(b"still here").unwrap();
        rec.until(&mut *io, "the new connection's bytes", |r| {
            r.bytes(new).len() >= 10
        });
        assert_eq!(rec.bytes(new), b"still here", "{}", model);
        assert!(rec.closed.is_empty(), "{}: {:?}", model, rec.closed);
    }
}

#[test]
fn connections_beyond_the_limit_are_closed_and_counted() {
    for model in models() {
        let cfg = Config {
            max_connections: 2,
            ..Config::default()
        };
        let (mut io, _, addr) = match open_listening(model, &cfg) {
            Some(x) => x,
            None => continue,
        };
        let mut rec = Rec::new(model, &cfg);
        let c1 = client(addr);
        let (_, conn1, _) = rec.accept(&mut *io);
        let _c2 = client(addr);
        rec.accept(&mut *io);
        assert_eq!(io.connections(), 2, "{}", model);

        // The third is accepted and closed at once: its client reads EOF, nothing is handed
        // up, it is counted.
        let mut c3 = client(addr);
        let got = client_read_to_end(&mut *io, &mut rec, &mut c3);
        assert!(got.is_empty(), "{}", model);
        let stats = wait_stats(&mut *io, &mut rec, "the count", |s| {
            s.accepts_over_limit > 0
        });
        assert_eq!(stats.accepts_over_limit, 1, "{}: {:?}", model, stats);
        assert_eq!(stats.accepted, 2, "{}: {:?}", model, stats);
        assert_eq!(rec.accepted.len(), 2, "{}", model);
        assert_eq!(io.connections(), 2, "{}", model);

        // connect() beyond the limit fails too.
        let other = TcpListener::bind(localhost()).unwrap();
        assert!(
            io.connect(other.local_addr().unwrap(), PATIENCE).is_err(),
            "{}",
            model
        );
        assert_eq!(io.connections(), 2, "{}", model);

        // One leaves: there is room again.
        drop(c1);
        rec.until(&mut *io, "the first client's close", |r| r.is_closed(conn1));
        let c4 = client(addr);
        let (_, _, from) = rec.accept(&mut *io);
        assert_eq!(from, c4.local_addr().unwrap(), "{}", model);
        assert_eq!(io.connections(), 2, "{}", model);
        assert_eq!(io.stats().accepts_over_limit, 1, "{}", model);
    }
}

#[test]
fn waker_ends_a_poll_blocked_on_streams() {
    for model in models() {
        let cfg = Config::default();
        let (mut io, _, addr) = match open_listening(model, &cfg) {
            Some(x) => x,
            None => continue,
        };
        let mut rec = Rec::new(model, &cfg);
        let _c = client(addr);
        rec.accept(&mut *io);
        let waker = io.waker();
        let deadline = Instant::now() + FAR;
        let t = thread::spawn(move || {
            thread::sleep(Duration::from_millis(50));
            waker.wake().unwrap();
        });
        let (report, delivered) = rec.poll(&mut *io, deadline);
        t.join().unwrap();
        assert!(Instant::now() < deadline, "{}: not woken", model);
        assert_eq!((delivered, report.events), (0, 1), "{}", model);
    }
}

/// The descriptor (handle) count once it has been the same twice in a row.
#[cfg(any(target_os = "linux", windows))]
fn settled_fds() -> usize {
    let mut last = open_fds();
    for _ in 0..50 {
        thread::sleep(Duration::from_millis(10));
        let now = open_fds();
        if now == last {
            return now;
        }
        last = now;
    }
    last
}

/// 200 connections opened and closed every way (peer close, `close()`, backend-to-backend),
/// then the backend dropped with some still open: every descriptor (Windows: handle) is back.
#[cfg(any(target_os = "linux", windows))]
#[test]
fn no_descriptor_leaks_with_streams() {
    if !in_child("no_descriptor_leaks_with_streams") {
        return;
    }
    const CONNS: usize = 200;
    for model in models() {
        let cfg = Config::default();
        let before = settled_fds();
        {
            let (mut io, _, addr) = match open_listening(model, &cfg) {
                Some(x) => x,
                None => continue,
            };
            let mut rec = Rec::new(model, &cfg);
            let mut clients = Vec::new();
            for _ in 0..CONNS {
                clients.push(client(addr));
            }
            rec.until(&mut *io, "every connection", |r| r.accepted.len() == CONNS);
            let conns: Vec<ConnId> = rec.accepted.iter().map(|a| a.1).collect();
            let open = open_fds();
            assert!(
                open + common::fd_noise() >= before + 2 * CONNS,
                "{}: {} -> {}",
                model,
                before,
                open
            );
            // A third closed by their peer, a third by the backend, a third left open.
            for c in clients.drain(..CONNS / 3) {
                drop(c);
            }
            rec.until(&mut *io, "the peers' closes", |r| {
                r.closed.len() == CONNS / 3
            });
            for &conn in &conns[CONNS / 3..2 * CONNS / 3] {
                if !rec.is_closed(conn) {
                    rec.close(&mut *io, conn);
                }
            }
            // Backend-to-backend, both ends in one backend.
            let out = io.connect(addr, PATIENCE).unwrap();
            let (_, inn, _) = rec.accept(&mut *io);
            io.send_stream(out, b"x").unwrap();
            io.send_stream(inn, b"y").unwrap();
            io.flush().unwrap();
            rec.until(&mut *io, "both bytes", |r| {
                r.bytes(out).len() == 1 && r.bytes(inn).len() == 1
            });
            io.close(out);
            let waker = io.waker();
            waker.wake().unwrap();
            drop(waker);
            io.poll(Instant::now(), &mut |_| {}).unwrap();
        }
        common::assert_no_fd_leak(model, before, settled_fds());
    }
}

/// Descriptor exhaustion (`EMFILE`) while connections flood in: the backend sheds them with
/// its reserve descriptor (`accepts_shed`), its poll does not spin, the connection it already
/// has keeps working, and it accepts again once descriptors are free.
#[cfg(unix)]
#[test]
fn descriptor_exhaustion_sheds_without_spinning() {
    use std::fs::File;
    if !in_child("descriptor_exhaustion_sheds_without_spinning") {
        return;
    }
    const FLOOD: usize = 20;
    // Low enough to fill quickly, high enough for the backends' own descriptors.
    set_nofile_soft_limit(256);
    for model in models() {
        let cfg = Config::default();
        let (mut io, _, addr) = match open_listening(model, &cfg) {
            Some(x) => x,
            None => continue,
        };
        let mut rec = Rec::new(model, &cfg);
        let mut keeper = client(addr);
        let (_, keep, _) = rec.accept(&mut *io);

        // The flood's sockets are created first (they need descriptors), then every free
        // descriptor is taken, then they connect (which needs none): the backend's accepts
        // meet EMFILE.
        let mut flood: Vec<TcpStream> = (0..FLOOD).map(|_| raw_tcp_socket()).collect();
        let mut fill = Vec::new();
        loop {
            match File::open("/dev/null") {
                Ok(f) => fill.push(f),
                Err(e) if e.raw_os_error() == Some(libc::EMFILE) => break,
                Err(e) => panic!("open /dev/null: {}", e),
            }
        }
        for s in &flood {
            raw_connect(s, addr);
        }

        // Every flood connection ends (shed) without a single Accepted, and polls that return
        // early with nothing to show stay few: a backend that spins on the ready listener
        // would run up thousands of them.
        for s in &flood {
            s.set_nonblocking(true).unwrap();
        }
        let mut ended = [false; FLOOD];
        let end = Instant::now() + PATIENCE;
        rec.early_empty_polls = 0;
        let mut polls = 0;
        while ended.iter().any(|e| !e) {
            assert!(
                Instant::now() < end,
                "{}: {} of {} flood connections never shed ({:?}, {} polls, {} empty)",
                model,
                ended.iter().filter(|e| !**e).count(),
                FLOOD,
                io.stats(),
                polls,
                rec.early_empty_polls
            );
            rec.poll(&mut *io, Instant::now() + Duration::from_secs(1));
            polls += 1;
            for (s, e) in flood.iter_mut().zip(ended.iter_mut()) {
                let mut buf = [0u8; 1];
                match s.read(&mut buf) {
                    Ok(0) => *e = true,
                    Err(err) if err.kind() == io::ErrorKind::ConnectionReset => *e = true,
                    Ok(_) => panic!("{}: a shed connection got bytes", model),
                    Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
                    Err(err) => panic!("{}: flood read: {}", model, err),
                }
            }
        }
        let stats = wait_stats(&mut *io, &mut rec, "the count", |s| {
            s.accepts_shed >= FLOOD as u64
        });
        eprintln!(
            "{}: flood shed in {} polls ({} returned early with nothing): {:?}",
            model, polls, rec.early_empty_polls, stats
        );
        assert!(
            rec.early_empty_polls <= FLOOD + 5,
            "{}: {} empty polls: spinning",
            model,
            rec.early_empty_polls
        );
        assert!(stats.accepts_shed >= FLOOD as u64, "{}: {:?}", model, stats);
        assert_eq!(stats.accepted, 1, "{}: {:?}", model, stats);
        assert_eq!(rec.accepted.len(), 1, "{}", model);
        assert_eq!(io.connections(), 1, "{}", model);

        // The connection it had still works, with the descriptors still exhausted.
        keeper.write_all(b"still").unwrap();
        rec.until(&mut *io, "the keeper's bytes", |r| r.bytes(keep).len() >= 5);
        io.send_stream(keep, b"served").unwrap();
        io.flush().unwrap();
        assert_eq!(
            client_read(&mut *io, &mut rec, &mut keeper, 6),
            b"served",
            "{}",
            model
        );

        // Descriptors free again: connections are accepted again.
        drop(fill);
        drop(flood);
        let fresh = client(addr);
        let (_, _, from) = rec.accept(&mut *io);
        assert_eq!(from, fresh.local_addr().unwrap(), "{}", model);
        assert_eq!(io.stats().accepted, 2, "{}", model);
    }
}

/// A new, unconnected IPv4 TCP socket (owning its descriptor).
#[cfg(unix)]
fn raw_tcp_socket() -> TcpStream {
    use std::os::unix::io::FromRawFd;
    // SAFETY: no pointers are passed.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) };
    assert!(fd >= 0, "socket: {}", io::Error::last_os_error());
    // SAFETY: `fd` was just created and is owned by nothing else.
    unsafe { TcpStream::from_raw_fd(fd) }
}

/// Connects a socket made by [`raw_tcp_socket`] to an IPv4 `addr` (blocking).
#[cfg(unix)]
fn raw_connect(s: &TcpStream, addr: SocketAddr) {
    use std::os::unix::io::AsRawFd;
    let v4 = match addr {
        SocketAddr::V4(v4) => v4,
        SocketAddr::V6(_) => panic!("IPv4 only"),
    };
    // SAFETY: sockaddr_in is a plain C struct for which all-zero bytes are valid.
    let mut sin: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    sin.sin_family = libc::AF_INET as libc::sa_family_t;
    sin.sin_port = v4.port().to_be();
    sin.sin_addr.s_addr = u32::from_ne_bytes(v4.ip().octets());
    // SAFETY: `sin` is a valid sockaddr_in that outlives the call, its size is passed with it.
    let rc = unsafe {
        libc::connect(
            s.as_raw_fd(),
            &sin as *const libc::sockaddr_in as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "connect: {}", io::Error::last_os_error());
}

/// An int socket option, asserted to be accepted.
#[cfg(unix)]
fn set_int_option(
    s: &TcpStream,
    level: std::os::raw::c_int,
    name: std::os::raw::c_int,
    value: std::os::raw::c_int,
) {
    use std::os::unix::io::AsRawFd;
    // SAFETY: `value` is a c_int that outlives the call and its size is passed with it.
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            level,
            name,
            &value as *const std::os::raw::c_int as *const libc::c_void,
            std::mem::size_of::<std::os::raw::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "setsockopt: {}", io::Error::last_os_error());
}

/// A std client whose connection keeps the kernel's buffers small: on loopback (MSS 64 KiB)
/// a sender's socket otherwise takes several MiB before it answers `EAGAIN`. A 1000-byte MSS
/// and a 16 KiB receive buffer, both set before connecting, bring that to about 100 KiB.
#[cfg(unix)]
fn small_window_client(addr: SocketAddr) -> TcpStream {
    let s = raw_tcp_socket();
    set_int_option(&s, libc::IPPROTO_TCP, libc::TCP_MAXSEG, 1000);
    set_int_option(&s, libc::SOL_SOCKET, libc::SO_RCVBUF, 16 * 1024);
    raw_connect(&s, addr);
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    s.set_write_timeout(Some(PATIENCE)).unwrap();
    s
}

#[cfg(not(unix))]
fn small_window_client(addr: SocketAddr) -> TcpStream {
    client(addr)
}

/// Lowers (never raises) this process's soft `RLIMIT_NOFILE` to `limit`.
#[cfg(unix)]
fn set_nofile_soft_limit(limit: u64) {
    // SAFETY: `lim` is a valid rlimit that outlives both calls.
    unsafe {
        let mut lim: libc::rlimit = std::mem::zeroed();
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        if (lim.rlim_cur as u64) > limit {
            lim.rlim_cur = limit as libc::rlim_t;
            assert_eq!(
                libc::setrlimit(libc::RLIMIT_NOFILE, &lim),
                0,
                "setrlimit: {}",
                io::Error::last_os_error()
            );
        }
    }
}
