//! Shared test harness: fixed keys, token builders and an in-memory server + clients pair
//! that steps virtual time and delivers datagrams with optional loss.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;

use tickwire_netcode::*;

pub const PROTOCOL_ID: u64 = 0x1122_3344_5566_7788;
pub const PRIVATE_KEY: Key = [0x42; 32];
pub const C2S_KEY: Key = [0xC2; 32];
pub const S2C_KEY: Key = [0x5C; 32];
pub const NONCE: [u8; 24] = [0x07; 24];
pub const UNIX_START: u64 = 1_700_000_000;

pub fn addr(s: &str) -> SocketAddr {
    s.parse().expect("test address")
}

pub fn server_addr() -> SocketAddr {
    addr("127.0.0.1:40000")
}

pub fn client_addr(i: usize) -> SocketAddr {
    addr(&format!("127.0.0.1:{}", 50000 + i))
}

pub fn user_data(seed: u8) -> [u8; USER_DATA_BYTES] {
    let mut u = [0u8; USER_DATA_BYTES];
    for (i, b) in u.iter_mut().enumerate() {
        *b = seed.wrapping_add(i as u8);
    }
    u
}

pub struct TokenSpec<'a> {
    pub client_id: u64,
    pub create: u64,
    pub expire_secs: u64,
    pub timeout_secs: i32,
    pub addrs: &'a [SocketAddr],
    pub key: Key,
    pub protocol_id: u64,
}

impl Default for TokenSpec<'_> {
    fn default() -> Self {
        Self {
            client_id: 1,
            create: UNIX_START,
            expire_secs: 30,
            timeout_secs: 5,
            addrs: &[],
            key: PRIVATE_KEY,
            protocol_id: PROTOCOL_ID,
        }
    }
}

/// Builds a token with the fixed nonce and keys (per-client nonce varies with the client id
/// so that tokens differ).
pub fn token(spec: &TokenSpec<'_>) -> [u8; CONNECT_TOKEN_BYTES] {
    let default_addrs = [server_addr()];
    let addrs = if spec.addrs.is_empty() {
        &default_addrs[..]
    } else {
        spec.addrs
    };
    let mut nonce = NONCE;
    nonce[..8].copy_from_slice(&spec.client_id.to_le_bytes());
    build_connect_token(
        &TokenParams {
            protocol_id: spec.protocol_id,
            client_id: spec.client_id,
            create_unix_secs: spec.create,
            expire_secs: spec.expire_secs,
            timeout_secs: spec.timeout_secs,
            server_addrs: addrs,
            user_data: user_data(spec.client_id as u8),
            private_key: &spec.key,
        },
        nonce,
        C2S_KEY,
        S2C_KEY,
    )
    .expect("token builds")
}

pub fn server_config(max_clients: usize) -> ServerConfig {
    ServerConfig {
        protocol_id: PROTOCOL_ID,
        private_key: PRIVATE_KEY,
        max_clients,
        public_addrs: vec![server_addr()],
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SEv {
    Connected {
        client: usize,
        client_id: u64,
        addr: SocketAddr,
        user_data: Vec<u8>,
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

pub fn own_server_event(e: ServerEvent<'_>) -> SEv {
    match e {
        ServerEvent::Connected {
            client,
            client_id,
            peer,
            user_data,
        } => SEv::Connected {
            client,
            client_id,
            addr: peer.addr,
            user_data: user_data.to_vec(),
        },
        ServerEvent::Payload { client, data } => SEv::Payload {
            client,
            data: data.to_vec(),
        },
        ServerEvent::Disconnected { client, reason } => SEv::Disconnected { client, reason },
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CEv {
    Connected { client_index: u32, max_clients: u32 },
    Payload(Vec<u8>),
    State(ClientState),
}

pub fn own_client_event(e: ClientEvent<'_>) -> CEv {
    match e {
        ClientEvent::Connected {
            client_index,
            max_clients,
        } => CEv::Connected {
            client_index,
            max_clients,
        },
        ClientEvent::Payload(d) => CEv::Payload(d.to_vec()),
        ClientEvent::StateChanged(s) => CEv::State(s),
    }
}

pub struct Peer {
    pub addr: SocketAddr,
    pub client: Client,
    pub events: Vec<CEv>,
    pub inbox: VecDeque<(SocketAddr, Vec<u8>)>,
}

/// In-memory network: one server at `server_addr()`, any number of clients.
pub struct Pair {
    pub now: Now,
    pub server: Server,
    pub server_events: Vec<SEv>,
    pub server_inbox: VecDeque<(SocketAddr, Vec<u8>)>,
    pub peers: Vec<Peer>,
    /// Drop everything clients send.
    pub block_c2s: bool,
    /// Drop everything the server sends.
    pub block_s2c: bool,
    /// Drop the next server datagram of exactly this length (then clear).
    pub drop_next_s2c_len: Option<usize>,
    /// Every datagram the server sent: (to, len, in reply to a packet of len).
    pub server_sent: Vec<(SocketAddr, usize)>,
}

pub fn start_now() -> Now {
    Now {
        mono: Duration::from_secs(1),
        unix_secs: UNIX_START,
    }
}

impl Pair {
    pub fn new(max_clients: usize) -> Self {
        Self {
            now: start_now(),
            server: Server::new(server_config(max_clients)),
            server_events: Vec::new(),
            server_inbox: VecDeque::new(),
            peers: Vec::new(),
            block_c2s: false,
            block_s2c: false,
            server_sent: Vec::new(),
            drop_next_s2c_len: None,
        }
    }

    pub fn add_client(&mut self, token: &[u8]) -> usize {
        let i = self.peers.len();
        let client = Client::new(token, self.now).expect("client from token");
        self.peers.push(Peer {
            addr: client_addr(i),
            client,
            events: Vec::new(),
            inbox: VecDeque::new(),
        });
        i
    }

    fn route_from_server(&mut self, to: tickwire_netcode::Peer, bytes: &[u8]) {
        let to = to.addr;
        self.server_sent.push((to, bytes.len()));
        if self.block_s2c {
            return;
        }
        if self.drop_next_s2c_len == Some(bytes.len()) {
            self.drop_next_s2c_len = None;
            return;
        }
        if let Some(p) = self.peers.iter_mut().find(|p| p.addr == to) {
            p.inbox.push_back((server_addr(), bytes.to_vec()));
        }
    }

    /// Delivers queued datagrams until the network is quiet.
    pub fn deliver(&mut self) {
        for _ in 0..64 {
            let mut moved = false;
            while let Some((from, bytes)) = self.server_inbox.pop_front() {
                moved = true;
                let mut out = Vec::new();
                let mut evs = Vec::new();
                self.server.handle_packet(
                    self.now,
                    from.into(),
                    &bytes,
                    &mut |to, b| {
                        assert!(b.len() <= bytes.len(), "reply larger than the request");
                        out.push((to, b.to_vec()));
                    },
                    &mut |e| evs.push(own_server_event(e)),
                );
                self.server_events.extend(evs);
                for (to, b) in out {
                    self.route_from_server(to, &b);
                }
            }
            for i in 0..self.peers.len() {
                while let Some((from, bytes)) = self.peers[i].inbox.pop_front() {
                    moved = true;
                    let mut out = Vec::new();
                    let p = &mut self.peers[i];
                    let now = self.now;
                    let evs = &mut p.events;
                    p.client.handle_packet(
                        now,
                        from,
                        &bytes,
                        &mut |to, b| out.push((to, b.to_vec())),
                        &mut |e| evs.push(own_client_event(e)),
                    );
                    self.send_from_client(i, out);
                }
            }
            if !moved {
                return;
            }
        }
    }

    fn send_from_client(&mut self, i: usize, out: Vec<(SocketAddr, Vec<u8>)>) {
        for (to, b) in out {
            if !self.block_c2s && to == server_addr() {
                self.server_inbox.push_back((self.peers[i].addr, b));
            }
        }
    }

    /// Advances time by `dt`, runs every `update`, delivers.
    pub fn step(&mut self, dt: Duration) {
        self.now.mono += dt;
        self.now.unix_secs = UNIX_START + (self.now.mono.as_secs() - 1);
        for i in 0..self.peers.len() {
            let mut out = Vec::new();
            let p = &mut self.peers[i];
            let evs = &mut p.events;
            p.client.update(
                self.now,
                &mut |to, b| out.push((to, b.to_vec())),
                &mut |e| evs.push(own_client_event(e)),
            );
            self.send_from_client(i, out);
        }
        let mut out = Vec::new();
        let mut evs = Vec::new();
        self.server.update(
            self.now,
            &mut |to, b| out.push((to, b.to_vec())),
            &mut |e| evs.push(own_server_event(e)),
        );
        self.server_events.extend(evs);
        for (to, b) in out {
            self.route_from_server(to, &b);
        }
        self.deliver();
    }

    /// Steps 10 ms at a time until `cond` holds; panics after `max` steps.
    pub fn step_until(&mut self, max: usize, mut cond: impl FnMut(&Pair) -> bool) {
        for _ in 0..max {
            if cond(self) {
                return;
            }
            self.step(Duration::from_millis(10));
        }
        assert!(cond(self), "condition not reached in {max} steps");
    }

    pub fn connect_one(&mut self, client_id: u64) -> usize {
        let t = token(&TokenSpec {
            client_id,
            ..TokenSpec::default()
        });
        let i = self.add_client(&t);
        self.step_until(100, |p| p.peers[i].client.state() == ClientState::Connected);
        i
    }

    pub fn client_send(&mut self, i: usize, payload: &[u8]) -> Result<(), SendError> {
        let mut out = Vec::new();
        let now = self.now;
        let r = self.peers[i]
            .client
            .send_payload(now, payload, &mut |to, b| out.push((to, b.to_vec())));
        self.send_from_client(i, out);
        r
    }

    pub fn server_send(&mut self, client: usize, payload: &[u8]) -> Result<usize, SendError> {
        let mut out = Vec::new();
        let now = self.now;
        let r = self
            .server
            .send_payload(now, client, payload, &mut |to, b| {
                out.push((to, b.to_vec()))
            });
        let n = out.len();
        for (to, b) in out {
            self.route_from_server(to, &b);
        }
        r.map(|_| n)
    }

    pub fn drops(&self, r: DropReason) -> u64 {
        self.server.stats().drops[r.index()]
    }
}
