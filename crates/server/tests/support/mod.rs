//! Test support: run the real `tickwire` binary on ephemeral loopback ports and drive bots
//! against it with the client library. Everything is bounded in time and stops by itself.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tickwire_client::{GameClient, GameEvent, Now};
use tickwire_netcode::{generate_connect_token, TokenParams, USER_DATA_BYTES};
use tickwire_stream::{ClientConn, Limits};

pub const PROTOCOL_ID: u64 = 0x7469_636b_7769_7265;

/// Hang guard for waits that normally end in milliseconds (a loaded machine may be far
/// slower). Never a measurement: no test asserts how long something took.
pub const GUARD: Duration = Duration::from_secs(120);

/// Polls `cond` until it holds; panics after [`GUARD`] naming `what`. For waiting on an
/// outcome, never for proving that something did not happen.
pub fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + GUARD;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A running `tickwire serve` child process.
pub struct ServerProc {
    pub child: Child,
    pub game_addr: SocketAddr,
    pub metrics_addr: Option<SocketAddr>,
    pub key: [u8; 32],
    pub dir: PathBuf,
    pub log: mpsc::Receiver<String>,
    /// The log lines read while waiting for the server to bind.
    pub startup_log: Vec<String>,
}

impl ServerProc {
    /// Starts the server with a fresh key file in a temp dir and waits for it to bind.
    pub fn start(extra: &[&str]) -> ServerProc {
        Self::start_with_env(extra, &[])
    }

    /// As [`ServerProc::start`], with extra environment variables for the child only.
    pub fn start_with_env(extra: &[&str], env: &[(&str, &std::ffi::OsStr)]) -> ServerProc {
        Self::start_under(&[], extra, env)
    }

    /// As [`ServerProc::start_with_env`], run through `wrapper` (a program that execs its
    /// arguments, such as `prlimit --as=N --`), so the child's PID is the server's.
    pub fn start_under(
        wrapper: &[&str],
        extra: &[&str],
        env: &[(&str, &std::ffi::OsStr)],
    ) -> ServerProc {
        let dir = std::env::temp_dir().join(format!(
            "tickwire-test-{}-{}",
            std::process::id(),
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let key_path = dir.join("test.key");
        let key = [0x5a; 32];
        std::fs::write(&key_path, key).unwrap();
        let mut cmd = match wrapper {
            [] => Command::new(env!("CARGO_BIN_EXE_tickwire")),
            [program, args @ ..] => {
                let mut cmd = Command::new(program);
                cmd.args(args).arg(env!("CARGO_BIN_EXE_tickwire"));
                cmd
            }
        };
        cmd.current_dir(&dir)
            .args([
                "serve",
                "--bind",
                "127.0.0.1:0",
                "--metrics-bind",
                "127.0.0.1:0",
            ])
            .args(["--key-file", key_path.to_str().unwrap()])
            .args(["--log-format", "json", "--log-level", "info"])
            .args(extra)
            .envs(env.iter().copied())
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn tickwire");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut game_addr = None;
        let mut metrics_addr = None;
        let mut startup_log = Vec::new();
        let deadline = Instant::now() + GUARD;
        while game_addr.is_none() || (metrics_addr.is_none() && !extra.contains(&"off")) {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = match rx.recv_timeout(left) {
                Ok(line) => line,
                Err(_) => {
                    let _ = child.kill();
                    panic!("server did not report its addresses in time");
                }
            };
            eprintln!("server: {line}");
            startup_log.push(line.clone());
            if let Some(addr) = field(&line, "game_addr") {
                game_addr = Some(addr.parse().unwrap());
            }
            if let Some(addr) = field(&line, "metrics_addr") {
                metrics_addr = Some(addr.parse().unwrap());
            }
        }
        ServerProc {
            child,
            game_addr: game_addr.unwrap(),
            metrics_addr,
            key,
            dir,
            log: rx,
            startup_log,
        }
    }

    /// GET /path on the admin endpoint; returns (status, body).
    pub fn http_get(&self, path: &str) -> (u16, String) {
        http_get(self.metrics_addr.expect("metrics on"), path)
    }

    /// The value of an unlabelled (or fully matching) sample in /metrics, summed over lines
    /// whose name and labels start with `prefix`.
    pub fn metric_sum(&self, prefix: &str) -> f64 {
        let (_, body) = self.http_get("/metrics");
        metric_sum(&body, prefix)
    }

    /// Sends SIGTERM and waits (bounded) for the exit status.
    pub fn terminate(&mut self, within: Duration) -> ExitStatus {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        self.wait(within)
    }

    pub fn wait(&mut self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("server did not exit within {within:?}");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn token(&self, client_id: u64) -> [u8; 2048] {
        generate_connect_token(&TokenParams {
            protocol_id: PROTOCOL_ID,
            client_id,
            create_unix_secs: unix_now(),
            expire_secs: 300,
            // How long either side waits for the other before giving up (the handshake
            // included): a hang guard here, not a figure. At 5 s, a debug-build server sharing
            // two busy cores with other tests could leave 100 handshakes unanswered that long.
            timeout_secs: 60,
            server_addrs: &[self.game_addr],
            user_data: [0; USER_DATA_BYTES],
            private_key: &self.key,
        })
        .unwrap()
    }
}

impl Drop for ServerProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Extracts `"name":"value"` from a JSON log line.
fn field<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    let key = format!("\"{name}\":\"");
    let start = line.find(&key)? + key.len();
    let end = line[start..].find('"')? + start;
    Some(&line[start..end])
}

pub fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let status = resp
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = resp
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

pub fn metric_sum(body: &str, prefix: &str) -> f64 {
    body.lines()
        .filter(|l| !l.starts_with('#') && l.starts_with(prefix))
        .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()))
        .sum()
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// How a bot reaches the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// Datagrams on the game port.
    Udp,
    /// Length-prefixed packets on the game port's TCP listener.
    Tcp,
    /// WebSocket binary messages on the same listener.
    Ws,
}

impl Transport {
    pub const ALL: [Transport; 3] = [Transport::Udp, Transport::Tcp, Transport::Ws];

    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
            Transport::Ws => "ws",
        }
    }
}

/// A bot's connection: its own UDP socket, or a TCP connection with the stream codec.
pub enum Link {
    Udp(UdpSocket),
    Stream {
        stream: TcpStream,
        codec: Box<ClientConn>,
        /// Framed bytes the socket has not taken yet.
        out: Vec<u8>,
        /// The server closed the connection (EOF, reset, or a close frame).
        closed: bool,
    },
}

impl Link {
    /// Opens a link to the server's game port.
    pub fn open(transport: Transport, server: SocketAddr) -> Link {
        match transport {
            Transport::Udp => {
                let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
                socket.set_nonblocking(true).unwrap();
                Link::Udp(socket)
            }
            Transport::Tcp | Transport::Ws => {
                let stream = TcpStream::connect_timeout(&server, GUARD).unwrap();
                stream.set_nodelay(true).unwrap();
                let mut out = Vec::new();
                let codec = if transport == Transport::Tcp {
                    ClientConn::tcp(Limits::default())
                } else {
                    let key = tickwire_stream::random_ws_key().unwrap();
                    out.extend_from_slice(&tickwire_stream::ws_client_request(
                        &server.to_string(),
                        "/",
                        key,
                    ));
                    ClientConn::websocket(key, Limits::default())
                };
                stream.set_nonblocking(true).unwrap();
                let mut link = Link::Stream {
                    stream,
                    codec: Box::new(codec),
                    out,
                    closed: false,
                };
                link.push_out();
                link
            }
        }
    }

    /// Sends one netcode packet (framed on streams; dropped before a WebSocket handshake is
    /// done, as a datagram could be: netcode resends).
    pub fn send(&mut self, to: SocketAddr, packet: &[u8]) {
        match self {
            Link::Udp(socket) => {
                let _ = socket.send_to(packet, to);
            }
            Link::Stream { codec, out, .. } => {
                if codec.encode(packet, out).is_ok() {
                    self.push_out();
                }
            }
        }
    }

    /// Writes what the socket takes of the pending bytes.
    pub fn push_out(&mut self) {
        if let Link::Stream {
            stream,
            out,
            closed,
            ..
        } = self
        {
            while !out.is_empty() && !*closed {
                match stream.write(out) {
                    Ok(0) => *closed = true,
                    Ok(n) => {
                        out.drain(..n);
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(_) => *closed = true,
                }
            }
        }
    }

    /// Receives what arrived: whole packets, into `packets` (cleared first).
    pub fn receive(&mut self, buf: &mut [u8], packets: &mut Vec<Vec<u8>>) {
        packets.clear();
        match self {
            Link::Udp(socket) => {
                while let Ok((len, _)) = socket.recv_from(buf) {
                    packets.push(buf[..len].to_vec());
                }
            }
            Link::Stream {
                stream,
                codec,
                out,
                closed,
            } => {
                while !*closed {
                    match stream.read(buf) {
                        Ok(0) => *closed = true,
                        Ok(n) => {
                            let mut reply = Vec::new();
                            let r = codec
                                .feed(&buf[..n], &mut reply, &mut |p| packets.push(p.to_vec()));
                            out.extend_from_slice(&reply);
                            if r.is_err() {
                                *closed = true;
                            }
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(_) => *closed = true,
                    }
                }
                self.push_out();
            }
        }
    }

    /// Whether the server closed this stream (always false for UDP).
    pub fn closed(&self) -> bool {
        matches!(self, Link::Stream { closed: true, .. })
    }
}

/// One bot: a GameClient on its own non-blocking loopback link.
pub struct Bot {
    pub link: Link,
    pub client: GameClient,
    pub snapshots: u64,
    pub last_seq_sent: u32,
    pub last_applied: u32,
    pub bye: bool,
    pub bye_reason: Option<tickwire_client::ByeReason>,
    pub disconnected: bool,
    pub first_pos: Option<(i32, i32)>,
    pub last_pos: Option<(i32, i32)>,
    /// Some snapshot showed the bot away from its first position.
    pub moved: bool,
    pub max_reply: usize,
    /// The game the welcome named.
    pub game: Option<String>,
    /// Reliable game events received (the arena's level, tag's hello and scores, ...).
    pub messages: u64,
    /// Reads what the server sends (false: a slow reader, which still sends its inputs).
    pub reading: bool,
}

/// Bot `i`'s input frame number `n` for `game`: even bots head one way, odd ones the other
/// (in tag, turning about every 32 frames, so a bot that starts against the field's edge
/// still moves).
pub fn input_frame(game: &str, i: usize, n: u32) -> Option<Vec<u8>> {
    let even = i % 2 == 0;
    match game {
        tickwire_arena::NAME => {
            let dir: i8 = if even { 100 } else { -100 };
            Some(tickwire_arena::encode_input(dir, dir / 2, 0).to_vec())
        }
        tickwire_tag::NAME => {
            let dir = if even ^ ((n / 32) % 2 == 1) {
                tickwire_tag::DIR_NE
            } else {
                tickwire_tag::DIR_SW
            };
            Some(tickwire_tag::encode_input(dir, false).to_vec())
        }
        _ => None,
    }
}

/// A bot's own position from its entity's fields, in `game`'s layout.
pub fn position(game: Option<&str>, fields: &[i32]) -> Option<(i32, i32)> {
    match game? {
        tickwire_arena::NAME => Some((fields[0], fields[1])),
        // kind, x, y, flags, stamina
        tickwire_tag::NAME => Some((fields[1], fields[2])),
        _ => None,
    }
}

/// A set of bots driven from one thread.
pub struct Swarm {
    pub bots: Vec<Bot>,
    start: Instant,
    buf: Vec<u8>,
    server: SocketAddr,
}

impl Swarm {
    pub fn new(server: &ServerProc, n: usize) -> Swarm {
        Self::with_first_id(server, n, 1)
    }

    /// Bots with client ids `first_id..first_id + n` (netcode refuses a second session for
    /// a client id that is already connected).
    pub fn with_first_id(server: &ServerProc, n: usize, first_id: u64) -> Swarm {
        Self::over(server, n, first_id, Transport::Udp)
    }

    /// Bots over `transport`, with client ids `first_id..first_id + n`.
    pub fn over(server: &ServerProc, n: usize, first_id: u64, transport: Transport) -> Swarm {
        let start = Instant::now();
        let mut bots = Vec::with_capacity(n);
        for i in 0..n {
            let link = Link::open(transport, server.game_addr);
            let token = server.token(first_id + i as u64);
            let client = GameClient::new(&token, now_since(start)).unwrap();
            bots.push(Bot {
                link,
                client,
                snapshots: 0,
                last_seq_sent: 0,
                last_applied: 0,
                bye: false,
                bye_reason: None,
                disconnected: false,
                first_pos: None,
                last_pos: None,
                moved: false,
                max_reply: 0,
                game: None,
                messages: 0,
                reading: true,
            });
        }
        Swarm {
            bots,
            start,
            buf: vec![0; 64 * 1024],
            server: server.game_addr,
        }
    }

    pub fn connected(&self) -> usize {
        self.bots.iter().filter(|b| b.client.is_connected()).count()
    }

    /// Runs the bots for `duration`: receive, upkeep, and (when `play`) one input per 16 ms.
    /// Stops early when `until` returns true.
    pub fn run(&mut self, duration: Duration, play: bool, until: &mut dyn FnMut(&Swarm) -> bool) {
        let end = Instant::now() + duration;
        let mut next_input = Instant::now();
        while Instant::now() < end {
            let now = now_since(self.start);
            let send_inputs = play && Instant::now() >= next_input;
            if send_inputs {
                next_input += Duration::from_millis(16);
            }
            let server = self.server;
            let mut packets = Vec::new();
            for (i, bot) in self.bots.iter_mut().enumerate() {
                if bot.reading {
                    bot.link.receive(&mut self.buf, &mut packets);
                } else {
                    packets.clear();
                    bot.link.push_out();
                }
                let link = &mut bot.link;
                let mut tx = |to: SocketAddr, b: &[u8]| link.send(to, b);
                for packet in &packets {
                    let mut events = Vec::new();
                    bot.client
                        .handle_packet(now, server, packet, &mut tx, &mut |e| events.push(e));
                    for e in events {
                        match e {
                            GameEvent::Snapshot(s) => {
                                bot.snapshots += 1;
                                assert!(s.last_input_seq <= bot.last_seq_sent);
                                assert!(s.last_input_seq >= bot.last_applied);
                                bot.last_applied = s.last_input_seq;
                                let game = bot.client.welcome().map(|w| w.game.as_str());
                                if let Some(pos) = s.find(s.you).and_then(|me| position(game, me)) {
                                    bot.moved |= *bot.first_pos.get_or_insert(pos) != pos;
                                    bot.last_pos = Some(pos);
                                }
                            }
                            GameEvent::Welcome(w) => bot.game = Some(w.game),
                            GameEvent::Message(_) => bot.messages += 1,
                            GameEvent::Bye(reason) => {
                                bot.bye = true;
                                bot.bye_reason = Some(reason);
                            }
                            GameEvent::Disconnected(_) => bot.disconnected = true,
                            _ => {}
                        }
                    }
                }
                bot.client.update(now, &mut tx, &mut |e| {
                    if let GameEvent::Disconnected(_) = e {
                        bot.disconnected = true;
                    }
                });
                // Inputs are in the game's encoding, which the welcome names: none before it.
                let frame = bot
                    .game
                    .as_deref()
                    .and_then(|g| input_frame(g, i, bot.client.next_input_seq()));
                if let (true, true, Some(frame)) = (send_inputs, bot.client.is_connected(), frame) {
                    if let Ok(seq) = bot.client.send_input(now, &frame, &mut tx) {
                        bot.last_seq_sent = seq;
                    }
                }
            }
            if until(self) {
                return;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

pub fn now_since(start: Instant) -> Now {
    Now {
        mono: start.elapsed(),
        unix_secs: unix_now(),
    }
}
