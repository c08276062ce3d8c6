//! The server's transports over one [`tickwire_io::Backend`]: the UDP game socket and the
//! stream listener on the same port number, where each connection speaks TCP (netcode packets
//! behind a 2-byte length) or WebSocket (one packet per binary message), told apart by its
//! first bytes ([`tickwire_stream::StreamConn`]).
//!
//! Every transport feeds the same [`GameServer`]: a packet's origin is a [`Peer`] (address
//! plus link: 0 for the UDP socket, `1 + ConnId` for a stream), and replies and snapshots are
//! routed back by it. This is the only place that knows which link is which.
//!
//! Bounds (docs/operations.md, "Stream transports"):
//! * at most `server.max_connections` connections (beyond it: closed at accept, counted);
//! * each connection's send buffer holds `io.stream_send_bytes`; a packet that does not fit
//!   closes the connection as a slow reader (the others keep their snapshots);
//! * a connection without a netcode session after `server.auth_timeout_ms` is closed;
//! * reassembly holds one maximum frame per connection; an oversized or malformed frame closes
//!   the connection with the violation's reason;
//! * when the session on a connection ends (timeout, disconnect, kick), the connection closes.

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tickwire_core::{GameServer, Now, Peer};
use tickwire_io::{Backend, CloseReason, ConnId, Event, SendError, SocketId};
use tickwire_stream::{Limits, StreamConn, Transport};

/// Why a stream connection closed (the `reason` label of `stream_connections_closed_total`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CloseWhy {
    /// The client closed it (FIN).
    Eof,
    /// It failed (reset, or a read/write error).
    Error,
    /// A framing or handshake violation; the string is the codec's reason.
    Violation(&'static str),
    /// Its send buffer could not take the next packet.
    SlowReader,
    /// No netcode session within `server.auth_timeout_ms`.
    AuthTimeout,
    /// Its netcode session ended (timed out, disconnected or refused).
    SessionEnded,
    /// The server is stopping.
    Shutdown,
}

impl CloseWhy {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            CloseWhy::Eof => "eof",
            CloseWhy::Error => "error",
            CloseWhy::Violation(r) => r,
            CloseWhy::SlowReader => "slow_reader",
            CloseWhy::AuthTimeout => "auth_timeout",
            CloseWhy::SessionEnded => "session_ended",
            CloseWhy::Shutdown => "shutdown",
        }
    }
}

/// The stream limits the loop enforces.
#[derive(Clone, Copy, Debug)]
pub(crate) struct StreamLimits {
    /// Close a connection without a session after this long.
    pub auth_timeout: Duration,
}

/// One stream connection.
struct Conn {
    id: ConnId,
    addr: SocketAddr,
    codec: StreamConn,
    /// When it was accepted (monotonic, the core's clock).
    opened: Duration,
    /// A netcode session was seen on it.
    authed: bool,
}

/// Something to send once the backend is free again (replies produced while `poll` lends
/// its buffers).
#[derive(Clone, Copy)]
enum Target {
    /// A netcode packet for a peer (framed for its link when sent).
    Packet(Peer),
    /// Bytes the stream codec produced for a connection (handshake response, pong, close).
    Raw(ConnId),
}

/// Replies produced during a poll, sent after it returns. Bounded: beyond it, replies are
/// dropped and counted (a client resends its handshake).
struct Outbox {
    bytes: Vec<u8>,
    items: Vec<(Target, usize, usize)>,
    dropped: u64,
}

impl Outbox {
    const MAX_ITEMS: usize = 4096;
    const MAX_BYTES: usize = 4096 * 1500;

    fn new() -> Self {
        Outbox {
            bytes: Vec::with_capacity(64 * 1024),
            items: Vec::with_capacity(256),
            dropped: 0,
        }
    }

    fn push(&mut self, to: Target, data: &[u8]) {
        if self.items.len() >= Self::MAX_ITEMS || self.bytes.len() + data.len() > Self::MAX_BYTES {
            self.dropped += 1;
            return;
        }
        let start = self.bytes.len();
        self.bytes.extend_from_slice(data);
        self.items.push((to, start, data.len()));
    }
}

/// Counters the loop exports (monotonic unless noted).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct NetStats {
    /// Stream connections accepted (handed up by the backend).
    pub accepted: u64,
    /// Sends refused (datagram slab full, or a stream send to a closed connection).
    pub send_failed: u64,
    /// Replies dropped because the outbox was full.
    pub outbox_dropped: u64,
    /// Packets and payload bytes in and out over TCP and WebSocket (netcode packets, not
    /// framing).
    pub tcp: TransportCounts,
    /// The same for WebSocket.
    pub ws: TransportCounts,
}

/// Packets and bytes over one stream transport.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct TransportCounts {
    pub packets_in: u64,
    pub packets_out: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
}

/// Players and connections by transport, now (gauges).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Census {
    pub tcp_players: usize,
    pub ws_players: usize,
    pub open: usize,
}

/// The transports: the backend, the UDP socket, the listener and the connections on it.
pub(crate) struct Net {
    backend: Box<dyn Backend>,
    streams: Streams,
}

/// Everything but the backend, so that the poll callback can use it while the backend lends
/// its buffers.
struct Streams {
    udp: SocketId,
    /// By `ConnId::index`; the entry's own id carries the generation.
    conns: Vec<Option<Conn>>,
    limits: Limits,
    stream_limits: StreamLimits,
    outbox: Outbox,
    /// Connections to close once the backend is free, with why.
    doomed: Vec<(ConnId, CloseWhy)>,
    /// Closed connections and why, for the exporter (drained by it).
    closed: Vec<(CloseWhy, u64)>,
    reply: Vec<u8>,
    frame: Vec<u8>,
    stats: NetStats,
    /// Players by transport as of the last upkeep.
    census: Census,
}

impl Net {
    /// Wraps an opened backend with its bound UDP socket (and, when stream transports are
    /// on, a listener: its connections arrive as events).
    pub(crate) fn new(
        backend: Box<dyn Backend>,
        udp: SocketId,
        stream_limits: StreamLimits,
    ) -> Net {
        Net {
            backend,
            streams: Streams {
                udp,
                conns: Vec::new(),
                limits: Limits::default(),
                stream_limits,
                outbox: Outbox::new(),
                doomed: Vec::new(),
                closed: Vec::new(),
                reply: Vec::with_capacity(512),
                frame: Vec::with_capacity(2048),
                stats: NetStats::default(),
                census: Census::default(),
            },
        }
    }

    pub(crate) fn backend(&self) -> &dyn Backend {
        self.backend.as_ref()
    }

    pub(crate) fn backend_mut(&mut self) -> &mut dyn Backend {
        self.backend.as_mut()
    }

    pub(crate) fn stats(&self) -> &NetStats {
        &self.streams.stats
    }

    /// Closed connections by reason since the last call.
    pub(crate) fn take_closed(&mut self, into: &mut dyn FnMut(CloseWhy, u64)) {
        for (why, n) in self.streams.closed.drain(..) {
            into(why, n);
        }
    }

    /// Sends one netcode packet to `to` on its link. A stream packet that does not fit the
    /// connection's send buffer dooms the connection (slow reader); it is closed by the next
    /// [`Net::settle`]. Returns whether the packet was queued.
    pub(crate) fn send(&mut self, to: Peer, bytes: &[u8]) -> bool {
        self.streams.send(self.backend.as_mut(), to, bytes)
    }

    /// Blocks in the backend until something arrives or `until`, handles what arrived, and
    /// returns the time spent blocked (the `io_wait_duration_ms` sample) and the events.
    pub(crate) fn wait(
        &mut self,
        until: Instant,
        server: &mut GameServer,
        clock: &dyn Fn(Instant) -> Now,
    ) -> io::Result<(Duration, usize)> {
        let report = self.poll_once(until, server, clock(Instant::now()))?;
        Ok((report.waited, report.events))
    }

    /// One poll of the backend until `deadline`, every event handed to the core at `now`,
    /// then [`Net::settle`].
    fn poll_once(
        &mut self,
        deadline: Instant,
        server: &mut GameServer,
        now: Now,
    ) -> io::Result<tickwire_io::PollReport> {
        let Net { backend, streams } = self;
        let report = backend.poll(deadline, &mut |event| streams.on_event(event, server, now))?;
        self.settle(server, now);
        Ok(report)
    }

    /// Takes everything queued on the backend without blocking, in polls of up to
    /// `max_events`; stops when a poll comes back short or after `MAX_DRAIN_POLLS` polls,
    /// leaving the rest for the next drain. Returns the events handled.
    pub(crate) fn drain(
        &mut self,
        server: &mut GameServer,
        clock: &dyn Fn(Instant) -> Now,
        max_events: usize,
    ) -> io::Result<usize> {
        const MAX_DRAIN_POLLS: usize = 16;
        let mut events = 0;
        let past = Instant::now();
        for _ in 0..MAX_DRAIN_POLLS {
            let report = self.poll_once(past, server, clock(Instant::now()))?;
            events += report.events;
            if report.events < max_events {
                break;
            }
        }
        Ok(events)
    }

    /// Sends what the last poll produced, then closes doomed connections (telling the core,
    /// so their players leave at once).
    pub(crate) fn settle(&mut self, server: &mut GameServer, now: Now) {
        let Net { backend, streams } = self;
        let mut items = std::mem::take(&mut streams.outbox.items);
        let mut bytes = std::mem::take(&mut streams.outbox.bytes);
        for &(target, start, len) in &items {
            let data = &bytes[start..start + len];
            match target {
                Target::Packet(peer) => {
                    streams.send(backend.as_mut(), peer, data);
                }
                Target::Raw(id) => {
                    if backend.send_stream(id, data).is_err() {
                        streams.doom(id, CloseWhy::SlowReader);
                    }
                }
            }
        }
        items.clear();
        bytes.clear();
        streams.outbox.items = items;
        streams.outbox.bytes = bytes;
        streams.stats.outbox_dropped += std::mem::take(&mut streams.outbox.dropped);
        streams.close_doomed(backend.as_mut(), server, now);
    }

    /// Once a tick, after the core's tick: notes which connections now carry a session, and
    /// closes those past the auth timeout and those whose session ended.
    pub(crate) fn upkeep(&mut self, server: &mut GameServer, now: Now) {
        let Net { backend, streams } = self;
        let timeout = streams.stream_limits.auth_timeout;
        let mut census = Census::default();
        for conn in streams.conns.iter_mut().flatten() {
            let peer = link_peer(conn.id, conn.addr);
            let in_session = server.client_on(peer).is_some();
            if conn.authed && !in_session {
                streams.doomed.push((conn.id, CloseWhy::SessionEnded));
                continue;
            }
            if in_session {
                conn.authed = true;
                match conn.codec.transport() {
                    Some(Transport::WebSocket) => census.ws_players += 1,
                    _ => census.tcp_players += 1,
                }
            } else if now.mono.saturating_sub(conn.opened) >= timeout {
                streams.doomed.push((conn.id, CloseWhy::AuthTimeout));
            }
        }
        streams.close_doomed(backend.as_mut(), server, now);
        census.open = backend.connections();
        streams.census = census;
    }

    /// Players and connections by transport as of the last [`Net::upkeep`] (one pass over
    /// the connections a tick serves both).
    pub(crate) fn census(&self) -> Census {
        self.streams.census
    }

    /// Closes every stream connection (the server is stopping), after what is queued was
    /// flushed by the caller.
    pub(crate) fn close_all(&mut self, server: &mut GameServer, now: Now) {
        let Net { backend, streams } = self;
        for conn in streams.conns.iter().flatten() {
            streams.doomed.push((conn.id, CloseWhy::Shutdown));
        }
        streams.close_doomed(backend.as_mut(), server, now);
    }
}

/// The peer of a stream connection: link `1 + ConnId` (0 is the UDP socket).
fn link_peer(id: ConnId, addr: SocketAddr) -> Peer {
    Peer {
        addr,
        link: id.to_u64() + 1,
    }
}

impl Streams {
    fn remove(&mut self, id: ConnId) -> Option<Conn> {
        let slot = self.conns.get_mut(id.index as usize)?;
        if slot.as_ref().map(|c| c.id) != Some(id) {
            return None;
        }
        slot.take()
    }

    fn doom(&mut self, id: ConnId, why: CloseWhy) {
        self.doomed.push((id, why));
    }

    fn count_closed(&mut self, why: CloseWhy) {
        match self.closed.iter_mut().find(|(w, _)| *w == why) {
            Some((_, n)) => *n += 1,
            None => self.closed.push((why, 1)),
        }
    }

    fn send(&mut self, backend: &mut dyn Backend, to: Peer, bytes: &[u8]) -> bool {
        if to.is_datagram() {
            let ok = backend.send(self.udp, to.addr, bytes).is_ok();
            if !ok {
                self.stats.send_failed += 1;
            }
            return ok;
        }
        let id = ConnId::from_u64(to.link - 1);
        let Streams {
            conns,
            frame,
            stats,
            ..
        } = self;
        let conn = match conns.get(id.index as usize) {
            Some(Some(c)) if c.id == id => c,
            _ => {
                stats.send_failed += 1;
                return false;
            }
        };
        let transport = conn.codec.transport();
        frame.clear();
        if conn.codec.encode(bytes, frame).is_err() {
            // Not established (no handshake yet) or larger than a frame: nothing to send.
            stats.send_failed += 1;
            return false;
        }
        match backend.send_stream(id, &self.frame) {
            Ok(()) => {
                let counts = match transport {
                    Some(Transport::WebSocket) => &mut self.stats.ws,
                    _ => &mut self.stats.tcp,
                };
                counts.packets_out += 1;
                counts.bytes_out += bytes.len() as u64;
                true
            }
            Err(SendError::Full) => {
                self.stats.send_failed += 1;
                self.doom(id, CloseWhy::SlowReader);
                false
            }
            Err(_) => {
                self.stats.send_failed += 1;
                false
            }
        }
    }

    fn on_event(&mut self, event: Event<'_>, server: &mut GameServer, now: Now) {
        match event {
            Event::Datagram { from, data, .. } => {
                let outbox = &mut self.outbox;
                server.handle_packet(now, Peer::udp(from), data, &mut |to, reply| {
                    outbox.push(Target::Packet(to), reply)
                });
            }
            Event::Accepted { conn, from, .. } => {
                self.stats.accepted += 1;
                let index = conn.index as usize;
                if self.conns.len() <= index {
                    self.conns.resize_with(index + 1, || None);
                }
                self.conns[index] = Some(Conn {
                    id: conn,
                    addr: from,
                    codec: StreamConn::new(self.limits),
                    opened: now.mono,
                    authed: false,
                });
            }
            Event::Stream { conn, data } => {
                let Streams {
                    conns,
                    outbox,
                    reply,
                    doomed,
                    stats,
                    ..
                } = self;
                let Some(Some(c)) = conns.get_mut(conn.index as usize) else {
                    return;
                };
                if c.id != conn {
                    return;
                }
                let peer = link_peer(conn, c.addr);
                reply.clear();
                let mut packets = 0u64;
                let mut bytes_in = 0u64;
                let result = c.codec.feed(data, reply, &mut |packet| {
                    packets += 1;
                    bytes_in += packet.len() as u64;
                    server.handle_packet(now, peer, packet, &mut |to, out| {
                        outbox.push(Target::Packet(to), out)
                    });
                });
                let counts = match c.codec.transport() {
                    Some(Transport::WebSocket) => &mut stats.ws,
                    _ => &mut stats.tcp,
                };
                counts.packets_in += packets;
                counts.bytes_in += bytes_in;
                if !reply.is_empty() {
                    outbox.push(Target::Raw(conn), reply);
                }
                if let Err(violation) = result {
                    doomed.push((conn, CloseWhy::Violation(violation.as_str())));
                }
            }
            Event::Closed { conn, reason } => {
                if let Some(c) = self.remove(conn) {
                    server.link_closed(now, link_peer(conn, c.addr));
                    self.count_closed(match reason {
                        CloseReason::Eof => CloseWhy::Eof,
                        CloseReason::Error(_) => CloseWhy::Error,
                    });
                }
            }
        }
    }

    fn close_doomed(&mut self, backend: &mut dyn Backend, server: &mut GameServer, now: Now) {
        while let Some((id, why)) = self.doomed.pop() {
            if let Some(c) = self.remove(id) {
                backend.close(id);
                server.link_closed(now, link_peer(id, c.addr));
                self.count_closed(why);
                if why != CloseWhy::Shutdown && why != CloseWhy::SessionEnded {
                    tracing::debug!(addr = %c.addr, reason = why.as_str(), "stream connection closed");
                }
            }
        }
    }
}
