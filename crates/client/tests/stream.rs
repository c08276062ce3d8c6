//! TcpClient and WsClient against a small in-test server on 127.0.0.1: a real netcode
//! `Server` behind `tickwire_stream::StreamConn`, one thread, non-blocking sockets. (The
//! Tickwire server's own stream listener is tested end to end in crates/server.)
//!
//! No timing assertions: every wait is a hang guard of 60 s on an outcome.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tickwire_client::{
    ClientError, ClientState, GameEvent, TcpClient, Violation, Welcome, WsClient,
};
use tickwire_netcode::{
    generate_connect_token, DisconnectReason, Key, Now, Server, ServerConfig, ServerEvent,
    TokenParams, USER_DATA_BYTES,
};
use tickwire_stream::{Limits, StreamConn, Transport};

const PROTOCOL_ID: u64 = 0x7469_636b_7769_7265;
const KEY: Key = [0x42; 32];
const GUARD: Duration = Duration::from_secs(60);

/// What the fake server saw.
#[derive(Debug)]
enum Seen {
    Connected {
        client: usize,
        transport: Transport,
    },
    Payload {
        client: usize,
        data: Vec<u8>,
    },
    Disconnected {
        client: usize,
        reason: DisconnectReason,
    },
}

enum Cmd {
    /// netcode's disconnect, then close the TCP connection.
    Kick(usize),
}

struct FakeServer {
    addr: SocketAddr,
    seen: Receiver<Seen>,
    cmd: Sender<Cmd>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl FakeServer {
    fn next(&self) -> Seen {
        self.seen
            .recv_timeout(GUARD)
            .expect("server event (hang guard)")
    }

    fn token(&self, client_id: u64) -> [u8; 2048] {
        token_for(&[self.addr], client_id)
    }
}

fn token_for(addrs: &[SocketAddr], client_id: u64) -> [u8; 2048] {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    generate_connect_token(&TokenParams {
        protocol_id: PROTOCOL_ID,
        client_id,
        create_unix_secs: now,
        expire_secs: 120,
        timeout_secs: 60,
        server_addrs: addrs,
        user_data: [0; USER_DATA_BYTES],
        private_key: &KEY,
    })
    .unwrap()
}

fn welcome() -> Welcome {
    Welcome {
        player_id: 7,
        tick_ms: 16,
        tick: 100,
        protocol_version: tickwire_proto::PROTOCOL_VERSION,
        game: "arena".into(),
        game_version: 1,
        input_bytes: 3,
        entity_fields: 2,
    }
}

struct Conn {
    stream: TcpStream,
    peer: SocketAddr,
    codec: StreamConn,
    closed: bool,
}

fn write_all(stream: &mut TcpStream, mut bytes: &[u8]) {
    let guard = Instant::now() + GUARD;
    while !bytes.is_empty() && Instant::now() < guard {
        match stream.write(bytes) {
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => thread::yield_now(),
            Err(_) => return,
        }
    }
}

fn spawn(max_clients: usize) -> FakeServer {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    let (seen_tx, seen) = mpsc::channel();
    let (cmd, cmd_rx) = mpsc::channel::<Cmd>();
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    let thread = thread::spawn(move || {
        let start = Instant::now();
        let now = || Now {
            mono: start.elapsed(),
            unix_secs: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_secs(),
        };
        let mut netcode = Server::new(ServerConfig {
            protocol_id: PROTOCOL_ID,
            private_key: KEY,
            max_clients,
            public_addrs: vec![addr],
        });
        let mut conns: Vec<Conn> = Vec::new();
        let mut buf = vec![0u8; 4096];
        let mut outgoing: Vec<(SocketAddr, Vec<u8>)> = Vec::new();
        let mut events: Vec<(usize, Option<Vec<u8>>, Option<DisconnectReason>)> = Vec::new();
        while !stop2.load(Ordering::Relaxed) {
            while let Ok((stream, peer)) = listener.accept() {
                stream.set_nonblocking(true).unwrap();
                stream.set_nodelay(true).unwrap();
                conns.push(Conn {
                    stream,
                    peer,
                    codec: StreamConn::new(Limits::default()),
                    closed: false,
                });
            }
            for c in conns.iter_mut().filter(|c| !c.closed) {
                loop {
                    match c.stream.read(&mut buf) {
                        Ok(0) => c.closed = true,
                        Ok(n) => {
                            let mut reply = Vec::new();
                            let mut packets = Vec::new();
                            let r = c
                                .codec
                                .feed(&buf[..n], &mut reply, &mut |p| packets.push(p.to_vec()));
                            write_all(&mut c.stream, &reply);
                            for p in packets {
                                netcode.handle_packet(
                                    now(),
                                    c.peer.into(),
                                    &p,
                                    &mut |to, b| outgoing.push((to.addr, b.to_vec())),
                                    &mut |e| match e {
                                        ServerEvent::Connected { client, .. } => {
                                            events.push((client, None, None))
                                        }
                                        ServerEvent::Payload { client, data } => {
                                            events.push((client, Some(data.to_vec()), None))
                                        }
                                        ServerEvent::Disconnected { client, reason } => {
                                            events.push((client, None, Some(reason)))
                                        }
                                    },
                                );
                            }
                            if r.is_err() {
                                c.closed = true;
                            }
                        }
                        Err(_) => break,
                    }
                    if c.closed {
                        break;
                    }
                }
            }
            netcode.update(
                now(),
                &mut |to, b| outgoing.push((to.addr, b.to_vec())),
                &mut |e| {
                    if let ServerEvent::Disconnected { client, reason } = e {
                        events.push((client, None, Some(reason)));
                    }
                },
            );
            for (client, payload, reason) in events.drain(..) {
                let seen = match (payload, reason) {
                    (Some(data), _) => Seen::Payload { client, data },
                    (None, Some(reason)) => Seen::Disconnected { client, reason },
                    (None, None) => {
                        // Welcome the new client at once.
                        let mut w = [0u8; 1200];
                        let n = tickwire_proto::encode_welcome(&welcome(), &mut w).unwrap();
                        let _ = netcode.send_payload(now(), client, &w[..n], &mut |to, b| {
                            outgoing.push((to.addr, b.to_vec()))
                        });
                        let peer = netcode.client_peer(client).unwrap().addr;
                        let conn = conns.iter().find(|c| c.peer == peer).unwrap();
                        Seen::Connected {
                            client,
                            transport: conn.codec.transport().unwrap(),
                        }
                    }
                };
                let _ = seen_tx.send(seen);
            }
            while let Ok(Cmd::Kick(client)) = cmd_rx.try_recv() {
                let peer = netcode.client_peer(client).unwrap().addr;
                netcode.disconnect(client, &mut |to, b| outgoing.push((to.addr, b.to_vec())));
                for (to, p) in outgoing.drain(..) {
                    if let Some(c) = conns.iter_mut().find(|c| c.peer == to && !c.closed) {
                        let mut framed = Vec::new();
                        c.codec.encode(&p, &mut framed).unwrap();
                        write_all(&mut c.stream, &framed);
                    }
                }
                // A WebSocket close frame, then our end of the stream; the socket stays open
                // for reading (so no reset) until the client hangs up.
                let c = conns.iter_mut().find(|c| c.peer == peer).unwrap();
                let mut close = Vec::new();
                c.codec.close(1001, &mut close);
                write_all(&mut c.stream, &close);
                let _ = c.stream.shutdown(std::net::Shutdown::Write);
            }
            for (to, p) in outgoing.drain(..) {
                if let Some(c) = conns.iter_mut().find(|c| c.peer == to && !c.closed) {
                    let mut framed = Vec::new();
                    if c.codec.encode(&p, &mut framed).is_ok() {
                        write_all(&mut c.stream, &framed);
                    }
                }
            }
            // A polling loop, not a wait for an outcome.
            thread::sleep(Duration::from_millis(1));
        }
    });
    FakeServer {
        addr,
        seen,
        cmd,
        stop,
        thread: Some(thread),
    }
}

/// Polls until `pick` returns something from an event (hang guard).
fn poll_until<T, C, F>(
    client: &mut C,
    mut poll: F,
    mut pick: impl FnMut(&GameEvent) -> Option<T>,
) -> T
where
    F: FnMut(&mut C, &mut dyn FnMut(GameEvent)) -> Result<(), ClientError>,
{
    let guard = Instant::now() + GUARD;
    let mut found = None;
    while found.is_none() {
        assert!(Instant::now() < guard, "hang guard");
        poll(client, &mut |e| {
            if found.is_none() {
                found = pick(&e);
            }
        })
        .expect("poll");
    }
    found.unwrap()
}

fn expect_connected(server: &FakeServer, want: Transport) -> usize {
    match server.next() {
        Seen::Connected { client, transport } => {
            assert_eq!(transport, want);
            client
        }
        other => panic!("expected a connection, got {other:?}"),
    }
}

/// The next payload the server received from `client` that is an input, decoded.
fn next_input(server: &FakeServer) -> Vec<u8> {
    loop {
        if let Seen::Payload { data, .. } = server.next() {
            if let Ok(tickwire_proto::ClientMessage::Input(inputs)) =
                tickwire_proto::decode_client(&data, 3)
            {
                return inputs.frames().last().unwrap().1.to_vec();
            }
        }
    }
}

#[test]
fn tcp_client_connects_gets_the_welcome_and_sends_inputs_and_messages() {
    let server = spawn(4);
    let mut client = TcpClient::connect(&server.token(1), GUARD).expect("connect");
    assert_eq!(client.state(), ClientState::Connected);
    assert_eq!(client.game().server_addr(), server.addr);
    let slot = expect_connected(&server, Transport::Tcp);

    // The welcome may have come with the handshake; otherwise it comes now.
    if client.game().welcome().is_none() {
        poll_until(
            &mut client,
            |c, f| c.poll(Duration::from_millis(20), f),
            |e| matches!(e, GameEvent::Welcome(_)).then_some(()),
        );
    }
    assert_eq!(client.game().welcome(), Some(&welcome()));

    client.send_input(&[1, 2, 3]).unwrap();
    assert_eq!(next_input(&server), [1, 2, 3]);

    client.send_message(b"hello server").unwrap();
    client.poll(Duration::from_millis(1), &mut |_| {}).unwrap();
    loop {
        if let Seen::Payload { client: c, data } = server.next() {
            if data[0] == tickwire_proto::tag::CLIENT_RELIABLE {
                assert_eq!(c, slot);
                break;
            }
        }
    }

    client.disconnect();
    loop {
        if let Seen::Disconnected { client, reason } = server.next() {
            assert_eq!(client, slot);
            assert_eq!(reason, DisconnectReason::ClientDisconnected);
            break;
        }
    }
}

#[test]
fn ws_client_connects_gets_the_welcome_and_sends_inputs() {
    let server = spawn(4);
    let mut client = WsClient::connect(&server.token(2), GUARD).expect("connect");
    assert_eq!(client.state(), ClientState::Connected);
    let slot = expect_connected(&server, Transport::WebSocket);
    if client.game().welcome().is_none() {
        poll_until(
            &mut client,
            |c, f| c.poll(Duration::from_millis(20), f),
            |e| matches!(e, GameEvent::Welcome(_)).then_some(()),
        );
    }
    for i in 0..20u8 {
        client.send_input(&[i, 0, 0]).unwrap();
        assert_eq!(next_input(&server), [i, 0, 0]);
    }
    client.disconnect();
    loop {
        if let Seen::Disconnected { client, reason } = server.next() {
            assert_eq!(client, slot);
            assert_eq!(reason, DisconnectReason::ClientDisconnected);
            break;
        }
    }
}

type PollFn<C> = fn(&mut C, &mut dyn FnMut(GameEvent)) -> Result<(), ClientError>;

/// The server disconnects `client` (netcode's disconnect packets, a WebSocket close, then the
/// end of its stream); the client sees `Disconnected`, and then polls quietly.
fn kicked<C>(server: &FakeServer, mut client: C, want: Transport, poll: PollFn<C>) {
    let slot = expect_connected(server, want);
    server.cmd.send(Cmd::Kick(slot)).unwrap();
    let state = poll_until(&mut client, poll, |e| match e {
        GameEvent::Disconnected(s) => Some(*s),
        _ => None,
    });
    assert_eq!(state, ClientState::Disconnected);
    // The stream is over too, and that is no error once the session has ended.
    for _ in 0..3 {
        poll(&mut client, &mut |_| {}).expect("quiet after the end");
    }
}

#[test]
fn server_disconnect_then_close_ends_the_session_without_an_error() {
    let server = spawn(4);
    let tcp = TcpClient::connect(&server.token(10), GUARD).expect("connect");
    kicked(&server, tcp, Transport::Tcp, |c, f| {
        c.poll(Duration::from_millis(20), f)
    });
    let ws = WsClient::connect(&server.token(11), GUARD).expect("connect");
    kicked(&server, ws, Transport::WebSocket, |c, f| {
        c.poll(Duration::from_millis(20), f)
    });
}

#[test]
fn a_server_that_closes_at_once_is_reported() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let t = thread::spawn(move || {
        for _ in 0..2 {
            let (s, _) = listener.accept().unwrap();
            drop(s);
        }
    });
    let token = token_for(&[addr], 3);
    match TcpClient::connect(&token, GUARD) {
        Err(ClientError::Closed) | Err(ClientError::Io(_)) => {}
        other => panic!("{other:?}"),
    }
    match WsClient::connect(&token, GUARD) {
        Err(ClientError::Closed) | Err(ClientError::Io(_)) => {}
        other => panic!("{other:?}"),
    }
    t.join().unwrap();
}

#[test]
fn ws_upgrade_refused_with_426_is_rejected() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let t = thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        // Read the request head, answer 426 as a server speaking another version would.
        let mut head = Vec::new();
        let mut b = [0u8; 512];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = s.read(&mut b).unwrap();
            assert!(n > 0);
            head.extend_from_slice(&b[..n]);
        }
        let head = String::from_utf8(head).unwrap();
        assert!(head.starts_with("GET / HTTP/1.1\r\n"), "{head}");
        assert!(head.contains(&format!("\r\nHost: {addr}\r\n")), "{head}");
        assert!(head.contains("\r\nSec-WebSocket-Protocol: tickwire.netcode\r\n"));
        s.write_all(b"HTTP/1.1 426 Upgrade Required\r\nSec-WebSocket-Version: 14\r\n\r\n")
            .unwrap();
    });
    match WsClient::connect(&token_for(&[addr], 4), GUARD) {
        Err(ClientError::Rejected(426)) => {}
        other => panic!("{other:?}"),
    }
    t.join().unwrap();
}

#[test]
fn garbage_from_the_server_is_a_stream_violation() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let t = thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        // A TCP length far over any packet.
        s.write_all(&[0xff, 0xff, 0, 0]).unwrap();
        let mut b = [0u8; 2048];
        // Wait for the client to hang up.
        while matches!(s.read(&mut b), Ok(n) if n > 0) {}
    });
    match TcpClient::connect(&token_for(&[addr], 5), GUARD) {
        Err(ClientError::Stream(Violation::OversizedFrame)) => {}
        other => panic!("{other:?}"),
    }
    t.join().unwrap();
}

#[test]
fn a_denial_on_the_first_server_ends_the_handshake_instead_of_moving_on() {
    // One slot, taken: the second client is denied; its token names a second server that a
    // UDP client would try next, but a stream client reports the denial.
    let server = spawn(1);
    let _first = TcpClient::connect(&server.token(20), GUARD).expect("connect");
    expect_connected(&server, Transport::Tcp);
    let elsewhere: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let token = token_for(&[server.addr, elsewhere], 21);
    match TcpClient::connect(&token, GUARD) {
        Err(ClientError::Failed(ClientState::ConnectionDenied)) => {}
        other => panic!("{other:?}"),
    }
}
