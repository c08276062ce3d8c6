//! The stream transports' limits, end to end on the real binary: hostile or broken TCP
//! clients are closed with a counted reason while bots keep playing, and descriptor
//! exhaustion sheds connections without hurting the players the server has.
//!
//! Every wait is for an outcome (a close, a counter), under a hang guard; nothing here
//! measures time. How much CPU a flood costs is a benchmark figure (docs/benchmarks.md).

mod support;

use std::ffi::OsStr;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::{Duration, Instant};

use support::{eventually, ServerProc, Swarm, Transport, GUARD};

/// Reads until the server closes the connection (EOF or reset); returns what arrived.
fn read_until_closed(stream: &mut TcpStream) -> Vec<u8> {
    stream.set_read_timeout(Some(GUARD)).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::TimedOut => {
                panic!("the server did not close the connection within {GUARD:?}")
            }
            // A reset is a close too.
            Err(_) => return got,
        }
    }
}

fn closed_count(server: &ServerProc, reason: &str) -> f64 {
    server.metric_sum(&format!(
        "stream_connections_closed_total{{reason=\"{reason}\"}}"
    ))
}

/// Plays the swarm until every bot got `more` snapshots beyond what it had.
fn keeps_playing(swarm: &mut Swarm, more: u64, what: &str) {
    let before: Vec<u64> = swarm.bots.iter().map(|b| b.snapshots).collect();
    swarm.run(GUARD, true, &mut |s| {
        s.bots
            .iter()
            .zip(&before)
            .all(|(b, was)| b.snapshots >= was + more)
    });
    for (i, (bot, was)) in swarm.bots.iter().zip(&before).enumerate() {
        assert!(
            bot.snapshots >= was + more,
            "{what}: bot {i} got {} snapshots, wanted {more} more than {was}",
            bot.snapshots
        );
        assert!(bot.client.is_connected(), "{what}: bot {i} still connected");
    }
}

#[test]
fn garbage_oversized_and_plain_http_are_closed_while_bots_play() {
    let server = ServerProc::start(&["--max-players", "64"]);
    let mut swarm = Swarm::over(&server, 20, 1, Transport::Tcp);
    swarm.run(GUARD, true, &mut |s| s.connected() == 20);
    assert_eq!(swarm.connected(), 20);

    // A length prefix over the largest frame.
    let mut oversized = TcpStream::connect(server.game_addr).unwrap();
    oversized.write_all(&[0xff, 0xff, 1, 2, 3]).unwrap();
    // A WebSocket client that does not mask its frames (RFC 6455: the server must close).
    // First a valid handshake, then an unmasked binary frame.
    let mut unmasked = TcpStream::connect(server.game_addr).unwrap();
    let key = [7u8; 16];
    unmasked
        .write_all(&tickwire_stream::ws_client_request(
            &server.game_addr.to_string(),
            "/",
            key,
        ))
        .unwrap();
    // A plain HTTP request: answered with an error, then closed.
    let mut http = TcpStream::connect(server.game_addr).unwrap();
    http.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();

    swarm.run(Duration::from_millis(50), true, &mut |_| false);
    // The unmasked frame after the 101 (read the response first so both are in order).
    let mut head = [0u8; 12];
    unmasked.read_exact(&mut head).unwrap();
    assert_eq!(&head, b"HTTP/1.1 101");
    unmasked.write_all(&[0x82, 0x02, 0xaa, 0xbb]).unwrap();

    let answer = read_until_closed(&mut http);
    assert!(
        answer.starts_with(b"HTTP/1.1 4"),
        "plain HTTP gets a 4xx: {:?}",
        String::from_utf8_lossy(&answer)
    );
    read_until_closed(&mut oversized);
    read_until_closed(&mut unmasked);
    keeps_playing(&mut swarm, 20, "after the hostile clients");
    eventually("the closes counted", || {
        swarm.run(Duration::from_millis(20), true, &mut |_| false);
        closed_count(&server, "oversized_frame") == 1.0
            && closed_count(&server, "unmasked_frame") == 1.0
            && closed_count(&server, "bad_handshake") >= 1.0
    });
}

#[test]
fn a_connection_that_never_authenticates_is_closed_on_time() {
    let server = ServerProc::start_with_env(
        &[],
        &[("TICKWIRE_SERVER_AUTH_TIMEOUT_MS", OsStr::new("300"))],
    );
    let mut swarm = Swarm::over(&server, 10, 1, Transport::Tcp);
    swarm.run(GUARD, true, &mut |s| s.connected() == 10);
    assert_eq!(swarm.connected(), 10);
    // Connects and says nothing; another sends a short, meaningless frame (dropped by
    // netcode, not a framing violation): neither ever has a session.
    let mut silent = TcpStream::connect(server.game_addr).unwrap();
    let mut chatter = TcpStream::connect(server.game_addr).unwrap();
    chatter.write_all(&[3, 0, 1, 2, 3]).unwrap();
    let opened = Instant::now();
    // Keep the bots playing while the server decides (the session of a bot that stops
    // sending would time out too).
    let waiter = std::thread::spawn(move || {
        read_until_closed(&mut silent);
        read_until_closed(&mut chatter);
    });
    while !waiter.is_finished() {
        assert!(
            opened.elapsed() < GUARD,
            "never-authenticating clients not closed"
        );
        swarm.run(Duration::from_millis(20), true, &mut |_| false);
    }
    waiter.join().unwrap();
    // Closed by the auth timeout, not before it: a lower bound, which a slow machine cannot
    // break.
    assert!(opened.elapsed() >= Duration::from_millis(300));
    eventually("auth_timeout counted", || {
        swarm.run(Duration::from_millis(20), true, &mut |_| false);
        closed_count(&server, "auth_timeout") == 2.0
    });
    keeps_playing(&mut swarm, 10, "after the auth timeouts");
}

#[test]
fn a_slow_reader_is_disconnected_and_the_others_keep_their_snapshots() {
    // The smallest send buffer, and a world with many entities so that snapshots are large.
    let server = ServerProc::start_with_env(
        &["--game", "tag", "--max-players", "64"],
        &[("TICKWIRE_IO_STREAM_SEND_BYTES", OsStr::new("4096"))],
    );
    let mut swarm = Swarm::over(&server, 10, 1, Transport::Tcp);
    let mut slow = Swarm::over(&server, 1, 100, Transport::Tcp);
    swarm.run(GUARD, true, &mut |s| s.connected() == 10);
    slow.run(GUARD, true, &mut |s| s.connected() == 1);
    assert_eq!((swarm.connected(), slow.connected()), (10, 1));
    // The slow client stops reading but keeps sending its inputs (so its session stays
    // alive). Snapshots pile up in the kernel's buffers, then in its 4 KiB send buffer; the
    // next one that does not fit closes the connection.
    slow.bots[0].reading = false;
    let started = Instant::now();
    eventually("the slow reader disconnected", || {
        swarm.run(Duration::from_millis(25), true, &mut |_| false);
        slow.run(Duration::from_millis(25), true, &mut |_| false);
        closed_count(&server, "slow_reader") == 1.0
    });
    eprintln!("slow reader closed after {:?}", started.elapsed());
    keeps_playing(&mut swarm, 20, "after the slow reader was dropped");
    let queued = server.metric_sum("stream_send_queued_bytes");
    assert!(
        queued <= 11.0 * 4096.0,
        "send buffers stay bounded: {queued} bytes queued"
    );
    // The slow reader finds its connection closed once it reads again.
    if let support::Link::Stream { stream, .. } = &mut slow.bots[0].link {
        stream.set_nonblocking(false).unwrap();
        let _ = stream.shutdown(Shutdown::Write);
        read_until_closed(stream);
    }
}

/// With the descriptor limit of the server process lowered, a flood of idle connections
/// beyond it is shed (counted, never a busy loop), and the players already connected keep
/// playing, new UDP players included.
#[test]
fn descriptor_exhaustion_sheds_connections_and_keeps_serving() {
    if std::process::Command::new("prlimit")
        .arg("--version")
        .output()
        .is_err()
    {
        panic!("prlimit (util-linux) is needed to lower the server's descriptor limit");
    }
    let mut server = ServerProc::start_under(
        &["prlimit", "--nofile=96", "--"],
        &["--max-players", "64"],
        &[("TICKWIRE_SERVER_AUTH_TIMEOUT_MS", OsStr::new("60000"))],
    );
    let mut udp = Swarm::over(&server, 10, 1, Transport::Udp);
    let mut tcp = Swarm::over(&server, 10, 100, Transport::Tcp);
    udp.run(GUARD, true, &mut |s| s.connected() == 10);
    tcp.run(GUARD, true, &mut |s| s.connected() == 10);
    // The flood: far more idle connections than descriptors are left.
    let mut flood = Vec::new();
    for _ in 0..200 {
        flood.push(TcpStream::connect(server.game_addr).unwrap());
    }
    eventually("connections shed", || {
        udp.run(Duration::from_millis(10), true, &mut |_| false);
        tcp.run(Duration::from_millis(10), true, &mut |_| false);
        server.metric_sum("stream_accepts_shed_total") > 0.0
    });
    keeps_playing(&mut udp, 20, "UDP bots during the flood");
    keeps_playing(&mut tcp, 20, "TCP bots during the flood");
    let mut late = Swarm::over(&server, 5, 200, Transport::Udp);
    late.run(GUARD, true, &mut |s| s.connected() == 5);
    assert_eq!(late.connected(), 5, "new UDP players join during the flood");
    drop(flood);
    let status = server.terminate(GUARD);
    assert!(status.success(), "exit status {status:?}");
}
