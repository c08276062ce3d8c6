// Tickwire client library: netcode.io 1.02 and the game protocol v2, in plain JavaScript.
//
// Byte for byte what docs/protocol.md describes and crates/netcode, crates/proto and
// crates/client implement. No DOM and no transport in the protocol classes: they take bytes
// and a time in milliseconds in, and hand bytes to a `send` callback, so the same code runs in
// the browser (over a WebSocket, `openWebSocket` below) and in Node (over UDP, the test harness
// in tests/udp-harness.mjs).
//
//   NetcodeClient  connect token -> request -> challenge/response -> connected; keep-alives,
//                  timeouts, replay window, payloads, disconnect.
//   GameClient     the welcome, snapshots, bye, input frames with redundancy, and the receive
//                  half of the reliable channel (reassembly and acks).
//
// Time is `performance.now()`-style milliseconds, passed in by the caller.

import { chacha20poly1305 } from './vendor/noble-ciphers/chacha.js';

// ---------------------------------------------------------------------------------------------
// netcode.io 1.02

export const CONNECT_TOKEN_BYTES = 2048;
const VERSION_INFO = new TextEncoder().encode('NETCODE 1.02\0'); // 13 bytes
const REQUEST_BYTES = 1078;
const CHALLENGE_BODY_BYTES = 308; // challenge sequence (8) + challenge token (300)
const MAC_BYTES = 16;
const MIN_ENCRYPTED_BYTES = 18;
const MAX_PACKET_BYTES = 1400;
const MAX_PAYLOAD_BYTES = 1200;
/** Handshake resends and idle keep-alives: 10 Hz, as the reference implementation. */
const SEND_INTERVAL_MS = 100;
const NUM_DISCONNECT_PACKETS = 10;
const REPLAY_WINDOW = 256;

const PACKET_REQUEST = 0;
const PACKET_DENIED = 1;
const PACKET_CHALLENGE = 2;
const PACKET_RESPONSE = 3;
const PACKET_KEEP_ALIVE = 4;
const PACKET_PAYLOAD = 5;
const PACKET_DISCONNECT = 6;

/** Client states, named as the standard names them (negative codes are errors). */
export const State = Object.freeze({
  CONNECT_TOKEN_EXPIRED: 'connect_token_expired',
  INVALID_CONNECT_TOKEN: 'invalid_connect_token',
  CONNECTION_TIMED_OUT: 'connection_timed_out',
  CONNECTION_RESPONSE_TIMED_OUT: 'connection_response_timed_out',
  CONNECTION_REQUEST_TIMED_OUT: 'connection_request_timed_out',
  CONNECTION_DENIED: 'connection_denied',
  DISCONNECTED: 'disconnected',
  SENDING_CONNECTION_REQUEST: 'sending_connection_request',
  SENDING_CHALLENGE_RESPONSE: 'sending_challenge_response',
  CONNECTED: 'connected',
});

/** Reads a standard 2048-byte connect token's public part; throws on an invalid token. */
export function parseConnectToken(bytes) {
  if (!(bytes instanceof Uint8Array) || bytes.length !== CONNECT_TOKEN_BYTES) {
    throw new Error(`connect token must be ${CONNECT_TOKEN_BYTES} bytes`);
  }
  for (let i = 0; i < VERSION_INFO.length; i++) {
    if (bytes[i] !== VERSION_INFO[i]) throw new Error('connect token version is not NETCODE 1.02');
  }
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const create = dv.getBigUint64(21, true);
  const expire = dv.getBigUint64(29, true);
  if (create > expire) throw new Error('connect token create timestamp is after its expire timestamp');
  const count = dv.getUint32(1089, true);
  if (count < 1 || count > 32) throw new Error(`connect token has ${count} server addresses`);
  const servers = [];
  let at = 1093;
  for (let i = 0; i < count; i++) {
    const type = bytes[at];
    if (type === 1) {
      servers.push({ host: bytes.slice(at + 1, at + 5).join('.'), port: dv.getUint16(at + 5, true) });
      at += 7;
    } else if (type === 2) {
      const groups = [];
      for (let g = 0; g < 8; g++) groups.push(dv.getUint16(at + 1 + 2 * g, true).toString(16));
      servers.push({ host: groups.join(':'), port: dv.getUint16(at + 17, true) });
      at += 19;
    } else {
      throw new Error(`connect token address type ${type} is not 1 (IPv4) or 2 (IPv6)`);
    }
  }
  return {
    protocolId: bytes.slice(13, 21), // raw little-endian u64: goes into requests and AAD as is
    createSecs: Number(create),
    expireSecs: Number(expire),
    expireBytes: bytes.slice(29, 37),
    nonce: bytes.slice(37, 61),
    privateData: bytes.slice(61, 1085),
    timeoutSecs: dv.getInt32(1085, true),
    servers,
    clientToServerKey: bytes.slice(at, at + 32),
    serverToClientKey: bytes.slice(at + 32, at + 64),
  };
}

/** The 12-byte IETF nonce: 4 zero bytes, then the sequence as u64 little-endian. */
function nonceFor(sequenceBytes) {
  const nonce = new Uint8Array(12);
  nonce.set(sequenceBytes, 4);
  return nonce;
}

/** AAD of an encrypted packet: version info (13) + protocol id (8) + prefix byte (1). */
function aadFor(protocolId, prefix) {
  const aad = new Uint8Array(22);
  aad.set(VERSION_INFO, 0);
  aad.set(protocolId, 13);
  aad[21] = prefix;
  return aad;
}

/** A sequence number (below 2^53) as little-endian bytes, high zero bytes dropped, at least 1. */
function sequenceBytes(sequence) {
  const out = [];
  let s = sequence;
  do {
    out.push(s % 256);
    s = Math.floor(s / 256);
  } while (s > 0);
  return Uint8Array.from(out);
}

/** Encrypts one packet: prefix | sequence | ciphertext | tag. */
export function sealPacket(type, sequence, body, protocolId, key) {
  const seq = sequenceBytes(sequence);
  const prefix = (seq.length << 4) | type;
  const sealed = chacha20poly1305(key, nonceFor(seq), aadFor(protocolId, prefix)).encrypt(body);
  const out = new Uint8Array(1 + seq.length + sealed.length);
  out[0] = prefix;
  out.set(seq, 1);
  out.set(sealed, 1 + seq.length);
  return out;
}

/**
 * Checks the framing of an encrypted packet and decrypts it. Returns `{type, sequence, body}`
 * or null (malformed, wrong size for its type, or failed authentication). `sequence` is a
 * Number: exact for session packets (they start at 0); challenge and denied packets carry
 * sequences from 2^63 that lose precision, which is harmless since they are not replay-checked
 * (the nonce is built from the raw bytes).
 */
export function openPacket(packet, protocolId, key) {
  if (packet.length > MAX_PACKET_BYTES || packet.length < MIN_ENCRYPTED_BYTES) return null;
  const prefix = packet[0];
  const type = prefix & 0x0f;
  const n = prefix >> 4;
  if (type === PACKET_REQUEST || type > PACKET_DISCONNECT || n < 1 || n > 8) return null;
  if (packet.length < 1 + n + MAC_BYTES) return null;
  const bodyLen = packet.length - 1 - n - MAC_BYTES;
  const sizeOk = {
    [PACKET_DENIED]: bodyLen === 0,
    [PACKET_DISCONNECT]: bodyLen === 0,
    [PACKET_CHALLENGE]: bodyLen === CHALLENGE_BODY_BYTES,
    [PACKET_RESPONSE]: bodyLen === CHALLENGE_BODY_BYTES,
    [PACKET_KEEP_ALIVE]: bodyLen === 8,
    [PACKET_PAYLOAD]: bodyLen >= 1 && bodyLen <= MAX_PAYLOAD_BYTES,
  }[type];
  if (!sizeOk) return null;
  const seq = packet.subarray(1, 1 + n);
  let sequence = 0;
  for (let i = n - 1; i >= 0; i--) sequence = sequence * 256 + seq[i];
  try {
    const body = chacha20poly1305(key, nonceFor(seq), aadFor(protocolId, prefix))
      .decrypt(packet.subarray(1 + n));
    return { type, sequence, body };
  } catch {
    return null; // authentication failed
  }
}

/** The standard's 256-entry replay window on session packet sequences. */
class ReplayWindow {
  constructor() {
    this.mostRecent = 0;
    this.received = new Array(REPLAY_WINDOW).fill(-1);
  }

  alreadyReceived(sequence) {
    if (sequence + REPLAY_WINDOW <= this.mostRecent) return true;
    const entry = this.received[sequence % REPLAY_WINDOW];
    return entry !== -1 && entry >= sequence;
  }

  /** Only after the packet authenticated, so forged packets cannot move the window. */
  advance(sequence) {
    if (sequence + REPLAY_WINDOW <= this.mostRecent) return;
    if (sequence > this.mostRecent) this.mostRecent = sequence;
    this.received[sequence % REPLAY_WINDOW] = sequence;
  }
}

/**
 * The netcode.io 1.02 client state machine for one server (the one the transport reaches: a
 * WebSocket URL, or the token's first address over UDP).
 *
 * Callbacks: `onState(state)`, `onConnected({clientIndex, maxClients})`, `onPayload(bytes)`.
 */
export class NetcodeClient {
  /**
   * @param token  a parsed connect token (`parseConnectToken`)
   * @param now    current time, ms
   * @param send   `(bytes: Uint8Array) => void`, hands one packet to the transport
   */
  constructor(token, now, send) {
    this.token = token;
    this.send = send;
    this.state = State.SENDING_CONNECTION_REQUEST;
    this.start = now;
    this.lifetimeMs = (token.expireSecs - token.createSecs) * 1000;
    this.timeoutMs = token.timeoutSecs > 0 ? token.timeoutSecs * 1000 : Infinity;
    this.lastRecv = now;
    this.lastSend = -Infinity;
    this.sequence = 0; // one counter for the challenge responses and every session packet
    this.replay = new ReplayWindow();
    this.challengeBody = null;
    this.clientIndex = 0;
    this.maxClients = 0;
    this.onState = () => {};
    this.onConnected = () => {};
    this.onPayload = () => {};
  }

  get connected() {
    return this.state === State.CONNECTED;
  }

  setState(state) {
    if (this.state !== state) {
      this.state = state;
      this.onState(state);
    }
  }

  /** Resends handshake packets, sends idle keep-alives, notices timeouts and token expiry. */
  update(now) {
    const timedOut = now >= this.lastRecv + this.timeoutMs;
    const due = now >= this.lastSend + SEND_INTERVAL_MS;
    switch (this.state) {
      case State.SENDING_CONNECTION_REQUEST:
      case State.SENDING_CHALLENGE_RESPONSE:
        if (now >= this.start + this.lifetimeMs) {
          this.setState(State.CONNECT_TOKEN_EXPIRED);
        } else if (timedOut) {
          this.setState(this.state === State.SENDING_CONNECTION_REQUEST
            ? State.CONNECTION_REQUEST_TIMED_OUT
            : State.CONNECTION_RESPONSE_TIMED_OUT);
        } else if (due) {
          this.sendHandshake(now);
        }
        break;
      case State.CONNECTED:
        if (timedOut) {
          this.setState(State.CONNECTION_TIMED_OUT);
        } else if (due) {
          // Our own index and count: the server ignores what a client puts here.
          const body = new Uint8Array(8);
          const dv = new DataView(body.buffer);
          dv.setUint32(0, this.clientIndex, true);
          dv.setUint32(4, this.maxClients, true);
          this.sendEncrypted(PACKET_KEEP_ALIVE, body, now);
        }
        break;
      default:
        break;
    }
  }

  sendEncrypted(type, body, now) {
    const packet = sealPacket(type, this.sequence, body, this.token.protocolId,
      this.token.clientToServerKey);
    this.sequence += 1;
    this.lastSend = now;
    this.send(packet);
  }

  sendHandshake(now) {
    if (this.state === State.SENDING_CONNECTION_REQUEST) {
      // Unencrypted, 1078 bytes: prefix 0, then fields copied from the token.
      const t = this.token;
      const req = new Uint8Array(REQUEST_BYTES);
      req.set(VERSION_INFO, 1);
      req.set(t.protocolId, 14);
      req.set(t.expireBytes, 22);
      req.set(t.nonce, 30);
      req.set(t.privateData, 54);
      this.lastSend = now;
      this.send(req);
    } else if (this.state === State.SENDING_CHALLENGE_RESPONSE) {
      // The challenge's 308 body bytes, echoed byte for byte.
      this.sendEncrypted(PACKET_RESPONSE, this.challengeBody, now);
    }
  }

  /** Handles one packet from the server. Anything unexpected in this state is ignored. */
  handlePacket(packet, now) {
    const s = this.state;
    if (s !== State.SENDING_CONNECTION_REQUEST && s !== State.SENDING_CHALLENGE_RESPONSE
      && s !== State.CONNECTED) return;
    if (packet.length < 1) return;
    const type = packet[0] & 0x0f;
    const expected = {
      [PACKET_DENIED]: s !== State.CONNECTED,
      [PACKET_CHALLENGE]: s === State.SENDING_CONNECTION_REQUEST,
      [PACKET_KEEP_ALIVE]: s !== State.SENDING_CONNECTION_REQUEST,
      [PACKET_PAYLOAD]: s === State.CONNECTED,
      [PACKET_DISCONNECT]: s === State.CONNECTED,
    }[type];
    if (!expected) return;
    const opened = openPacket(packet, this.token.protocolId, this.token.serverToClientKey);
    if (!opened) return;
    // Challenge and denied use server-global sequences: never fed to the session window.
    const session = type === PACKET_KEEP_ALIVE || type === PACKET_PAYLOAD
      || type === PACKET_DISCONNECT;
    if (session) {
      if (this.replay.alreadyReceived(opened.sequence)) return;
      this.replay.advance(opened.sequence);
    }
    this.lastRecv = now;
    const body = opened.body;
    switch (type) {
      case PACKET_DENIED:
        this.setState(State.CONNECTION_DENIED);
        break;
      case PACKET_CHALLENGE:
        this.challengeBody = body;
        this.setState(State.SENDING_CHALLENGE_RESPONSE);
        this.sendHandshake(now);
        break;
      case PACKET_KEEP_ALIVE:
        if (s === State.SENDING_CHALLENGE_RESPONSE) {
          const dv = new DataView(body.buffer, body.byteOffset, body.byteLength);
          this.clientIndex = dv.getUint32(0, true);
          this.maxClients = dv.getUint32(4, true);
          this.state = State.CONNECTED;
          this.onConnected({ clientIndex: this.clientIndex, maxClients: this.maxClients });
          this.onState(State.CONNECTED);
        }
        break;
      case PACKET_PAYLOAD:
        this.onPayload(body);
        break;
      case PACKET_DISCONNECT:
        this.setState(State.DISCONNECTED);
        break;
      default:
        break;
    }
  }

  /** Sends one payload (1..=1200 bytes) while connected; returns whether it was sent. */
  sendPayload(payload, now) {
    if (!this.connected || payload.length < 1 || payload.length > MAX_PAYLOAD_BYTES) return false;
    this.sendEncrypted(PACKET_PAYLOAD, payload, now);
    return true;
  }

  /** Leaves politely: 10 redundant disconnect packets when connected, then `disconnected`. */
  disconnect(now) {
    if (this.connected) {
      for (let i = 0; i < NUM_DISCONNECT_PACKETS; i++) {
        this.sendEncrypted(PACKET_DISCONNECT, new Uint8Array(0), now);
      }
    }
    if (!isError(this.state)) this.setState(State.DISCONNECTED);
  }
}

/** Whether `state` is one of the standard's error states. */
export function isError(state) {
  return state === State.CONNECT_TOKEN_EXPIRED || state === State.INVALID_CONNECT_TOKEN
    || state === State.CONNECTION_TIMED_OUT || state === State.CONNECTION_RESPONSE_TIMED_OUT
    || state === State.CONNECTION_REQUEST_TIMED_OUT || state === State.CONNECTION_DENIED;
}

// ---------------------------------------------------------------------------------------------
// Game protocol v2: bincode 2 `standard()` integers (varints, zigzag), hand-written.

export const PROTOCOL_VERSION = 2;
export const NO_ENTITY = 0xffffffff;
const MAX_INPUT_FRAMES = 8;
const MAX_INPUT_BYTES = 32;
const MAX_ENTITY_FIELDS = 16;
const MAX_GAME_NAME = 32;
const BYE_REASONS = ['server_shutdown', 'draining', 'kicked', 'server_full'];

const MSG_INPUT = 0; // client -> server
const MSG_CLIENT_RELIABLE = 1;
const MSG_WELCOME = 0; // server -> client
const MSG_SNAPSHOT = 1;
const MSG_BYE = 2;
const MSG_SERVER_RELIABLE = 3;

/** Most entities in one snapshot of a game with `fields` fields per entity. */
export function maxSnapshotEntities(fields) {
  return Math.min(250, Math.floor((MAX_PAYLOAD_BYTES - 17) / ((1 + fields) * 5)));
}

/** A bounds-checked reader over one message; every read throws past the end. */
class Reader {
  constructor(bytes) {
    this.bytes = bytes;
    this.at = 0;
  }

  u8() {
    if (this.at >= this.bytes.length) throw new Error('truncated');
    return this.bytes[this.at++];
  }

  take(n) {
    if (this.at + n > this.bytes.length) throw new Error('truncated');
    const out = this.bytes.subarray(this.at, this.at + n);
    this.at += n;
    return out;
  }

  /** An unsigned varint no larger than `max`: `< 251` one byte; 251/252/253 + u16/u32/u64 LE. */
  varint(max) {
    const b = this.u8();
    let v;
    if (b < 251) {
      v = b;
    } else if (b === 251) {
      const s = this.take(2);
      v = s[0] | (s[1] << 8);
    } else if (b === 252) {
      const s = this.take(4);
      v = (s[0] | (s[1] << 8) | (s[2] << 16)) + s[3] * 0x1000000;
    } else if (b === 253) {
      const s = this.take(8);
      v = Number(new DataView(s.buffer, s.byteOffset, 8).getBigUint64(0, true));
    } else {
      throw new Error('bad varint marker');
    }
    if (v > max) throw new Error('varint out of range');
    return v;
  }

  u16() {
    return this.varint(0xffff);
  }

  u32() {
    return this.varint(0xffffffff);
  }

  /** A zigzag i32. */
  i32() {
    const v = this.u32();
    return ((v >>> 1) ^ -(v & 1)) | 0;
  }

  finish() {
    if (this.at !== this.bytes.length) throw new Error('trailing bytes');
  }
}

/** Appends `v` (a u32) as a varint to the array `out`. */
function putVarint(out, v) {
  if (v < 251) {
    out.push(v);
  } else if (v <= 0xffff) {
    out.push(251, v & 0xff, v >>> 8);
  } else {
    out.push(252, v & 0xff, (v >>> 8) & 0xff, (v >>> 16) & 0xff, v >>> 24);
  }
}

function decodeWelcome(r) {
  const w = {
    playerId: r.u32(),
    tickMs: r.u16(),
    tick: r.u32(),
    protocolVersion: r.u16(),
    game: new TextDecoder('utf-8', { fatal: true }).decode(r.take(r.varint(MAX_GAME_NAME))),
    gameVersion: r.u16(),
    inputBytes: r.u8(),
    entityFields: r.u8(),
  };
  r.finish();
  if (w.inputBytes < 1 || w.inputBytes > MAX_INPUT_BYTES || w.entityFields > MAX_ENTITY_FIELDS) {
    throw new Error('welcome sizes out of range');
  }
  return w;
}

function decodeSnapshot(r, fields) {
  const snap = { tick: r.u32(), lastInputSeq: r.u32(), you: r.u32(), entities: [] };
  const count = r.varint(maxSnapshotEntities(fields));
  for (let i = 0; i < count; i++) {
    const id = r.u32();
    const values = new Array(fields);
    for (let f = 0; f < fields; f++) values[f] = r.i32();
    snap.entities.push({ id, fields: values });
  }
  r.finish();
  return snap;
}

/** Encodes an input message: `ack_tick`, then `frames` numbered from `firstSeq`. */
export function encodeInput(ackTick, firstSeq, frames) {
  const out = [MSG_INPUT];
  putVarint(out, ackTick);
  putVarint(out, frames.length);
  frames.forEach((frame, i) => {
    putVarint(out, (firstSeq + i) >>> 0);
    for (const b of frame) out.push(b);
  });
  return Uint8Array.from(out);
}

// ---------------------------------------------------------------------------------------------
// Reliable channel, receive half (crates/proto/src/reliable.rs): the client sends no events of
// its own, only acks, so `ack_next` from the server must stay at 0 (nothing of ours to ack).

const FRAGMENT_BYTES = 1024;
const MAX_MESSAGE_BYTES = 65536;
const MAX_FRAGMENTS = MAX_MESSAGE_BYTES / FRAGMENT_BYTES; // 64
const WINDOW = 64;
const MAX_BODY_BYTES = MAX_PAYLOAD_BYTES - 1;

/** What must follow fragment `index` of `count`: the next index, or a new message. */
function after(index, count) {
  return index + 1 < count ? { index: index + 1, count } : null; // null: a first fragment
}

function continues(expect, frag) {
  return expect === null ? frag.index === 0
    : frag.index === expect.index && frag.count === expect.count;
}

export class ReliableReceiver {
  constructor() {
    this.recvNext = 0; // u32: every fragment before it has been received
    this.slots = new Array(WINDOW).fill(null); // slot i: fragment recvNext + i
    this.expect = null; // what fragment recvNext must look like (null: index 0)
    this.parts = []; // in-order fragments of the message being reassembled
    this.ackOwed = false;
  }

  /**
   * Handles one packet body (after the type byte) and calls `deliver(message)` for every
   * completed message, in order. Returns false when the body is invalid (then ignored).
   */
  handle(body, deliver) {
    if (body.length < 12 || body.length > MAX_BODY_BYTES) return false;
    const dv = new DataView(body.buffer, body.byteOffset, body.byteLength);
    // We have sent no fragment: an ack_next ahead of 0 acknowledges something never sent.
    if ((dv.getUint32(0, true) | 0) > 0) return false;
    // Pass 1: validate every fragment without changing anything.
    const frags = [];
    for (let at = 12; at < body.length;) {
      if (at + 10 > body.length) return false;
      const len = dv.getUint16(at + 8, true);
      if (at + 10 + len > body.length) return false;
      const frag = {
        seq: dv.getUint32(at, true),
        index: dv.getUint16(at + 4, true),
        count: dv.getUint16(at + 6, true),
        payload: body.slice(at + 10, at + 10 + len),
      };
      if (frag.count === 0 || frag.index >= frag.count || frag.count > MAX_FRAGMENTS) return false;
      const last = frag.index + 1 === frag.count;
      if (last ? len > FRAGMENT_BYTES : len !== FRAGMENT_BYTES) return false;
      if ((frag.count - 1) * FRAGMENT_BYTES + len > MAX_MESSAGE_BYTES) return false;
      if (((frag.seq - this.recvNext) | 0) >= WINDOW) return false;
      frags.push(frag);
      at += 10 + len;
    }
    // Pass 2: store and deliver.
    let ok = true;
    for (const frag of frags) ok = this.receive(frag, deliver) && ok;
    if (frags.length > 0) this.ackOwed = true; // duplicates too: our last ack may be lost
    return ok;
  }

  receive(frag, deliver) {
    const off = (frag.seq - this.recvNext) | 0;
    if (off < 0 || off >= WINDOW || this.slots[off]) return true; // duplicate / out of window
    // It must continue its predecessor and be continued by its successor, when known.
    const before = off === 0 ? { known: true, expect: this.expect }
      : this.slots[off - 1] ? { known: true, expect: after(this.slots[off - 1].index,
        this.slots[off - 1].count) } : { known: false };
    if (before.known && !continues(before.expect, frag)) return false;
    const next = this.slots[off + 1];
    if (next && !continues(after(frag.index, frag.count), next)) return false;
    this.slots[off] = frag;
    if (off === 0) this.drain(deliver);
    return true;
  }

  drain(deliver) {
    while (this.slots[0]) {
      const frag = this.slots.shift();
      this.slots.push(null);
      this.recvNext = (this.recvNext + 1) >>> 0;
      this.expect = after(frag.index, frag.count);
      this.parts.push(frag.payload);
      if (this.expect === null) {
        const size = this.parts.reduce((n, p) => n + p.length, 0);
        const msg = new Uint8Array(size);
        let at = 0;
        for (const p of this.parts) {
          msg.set(p, at);
          at += p.length;
        }
        this.parts = [];
        deliver(msg);
      }
    }
  }

  /** A 12-byte pure-ack body when an ack is owed, else null. */
  pollAck() {
    if (!this.ackOwed) return null;
    this.ackOwed = false;
    const body = new Uint8Array(12);
    const dv = new DataView(body.buffer);
    dv.setUint32(0, this.recvNext, true);
    let lo = 0;
    let hi = 0; // ack_bits: bit i = fragment recvNext + 1 + i is buffered
    for (let i = 1; i < WINDOW; i++) {
      if (!this.slots[i]) continue;
      if (i - 1 < 32) lo |= 1 << (i - 1);
      else hi |= 1 << (i - 33);
    }
    dv.setUint32(4, lo >>> 0, true);
    dv.setUint32(8, hi >>> 0, true);
    return body;
  }
}

// ---------------------------------------------------------------------------------------------
// GameClient: netcode + game messages.

/**
 * One player's session. Callbacks (all optional): `onState(state)`, `onConnected(info)`,
 * `onWelcome(welcome)`, `onSnapshot(snapshot)`, `onMessage(bytes)` (a reliable game event),
 * `onBye(reason)`.
 *
 * A snapshot is `{tick, lastInputSeq, you, entities: [{id, fields}]}`; one that arrives before
 * the welcome, or is not newer than the newest, is dropped.
 */
export class GameClient {
  constructor(tokenBytes, now, send) {
    this.netcode = new NetcodeClient(parseConnectToken(tokenBytes), now, send);
    this.welcome = null;
    this.newestTick = null;
    this.nextSeq = 1; // the first input is 1: 0 means "none applied yet"
    this.history = []; // newest frames sent, oldest first, at most 8
    this.reliable = new ReliableReceiver();
    this.stats = { snapshots: 0, snapshotsEarly: 0, snapshotsStale: 0, messages: 0,
      malformed: 0, inputsSent: 0, acksSent: 0 };
    this.onWelcome = () => {};
    this.onSnapshot = () => {};
    this.onMessage = () => {};
    this.onBye = () => {};
    this.netcode.onState = (state) => this.onState?.(state);
    this.netcode.onConnected = (info) => this.onConnected?.(info);
    this.netcode.onPayload = (payload) => this.handlePayload(payload);
  }

  get state() {
    return this.netcode.state;
  }

  get connected() {
    return this.netcode.connected;
  }

  /** Drives the session; call it every tick or so. */
  update(now) {
    this.netcode.update(now);
    this.flushAcks(now);
  }

  /** Handles one packet from the server. */
  handlePacket(packet, now) {
    this.netcode.handlePacket(packet, now);
    this.flushAcks(now); // acknowledge within the tick, or the server resends
  }

  handlePayload(payload) {
    // Decode first, then hand over: an exception in a callback is the caller's bug, not a
    // malformed payload.
    let event;
    try {
      event = this.decode(payload);
    } catch {
      this.stats.malformed += 1;
      return;
    }
    switch (event?.kind) {
      case 'welcome':
        this.onWelcome(event.welcome);
        break;
      case 'snapshot':
        this.onSnapshot(event.snapshot);
        break;
      case 'bye':
        this.onBye(event.reason);
        break;
      case 'messages':
        for (const msg of event.messages) this.onMessage(msg);
        break;
      default:
        break;
    }
  }

  /** Decodes one server message and updates the session; throws when malformed. */
  decode(payload) {
    const r = new Reader(payload);
    switch (r.u8()) {
      case MSG_WELCOME:
        this.welcome = decodeWelcome(r);
        return { kind: 'welcome', welcome: this.welcome };
      case MSG_SNAPSHOT: {
        if (!this.welcome) {
          this.stats.snapshotsEarly += 1; // undecodable: keep ack_tick 0 so it is resent
          return null;
        }
        const snapshot = decodeSnapshot(r, this.welcome.entityFields);
        if (this.newestTick !== null && snapshot.tick <= this.newestTick) {
          this.stats.snapshotsStale += 1;
          return null;
        }
        this.newestTick = snapshot.tick;
        this.stats.snapshots += 1;
        return { kind: 'snapshot', snapshot };
      }
      case MSG_BYE: {
        const reason = r.u32();
        r.finish();
        return { kind: 'bye', reason: BYE_REASONS[reason] ?? `unknown_${reason}` };
      }
      case MSG_SERVER_RELIABLE: {
        const messages = [];
        const ok = this.reliable.handle(payload.subarray(1), (msg) => messages.push(msg));
        this.stats.messages += messages.length;
        // Messages completed before an inconsistent fragment are still delivered.
        if (!ok) this.stats.malformed += 1;
        return { kind: 'messages', messages };
      }
      default:
        throw new Error('unknown message type');
    }
  }

  flushAcks(now) {
    if (!this.connected) return;
    const ack = this.reliable.pollAck();
    if (!ack) return;
    const payload = new Uint8Array(1 + ack.length);
    payload[0] = MSG_CLIENT_RELIABLE;
    payload.set(ack, 1);
    if (this.netcode.sendPayload(payload, now)) this.stats.acksSent += 1;
  }

  /**
   * Sends one input frame in the game's encoding (`welcome.inputBytes` bytes) with up to 7
   * earlier ones; returns its sequence number, or null when not connected or before the
   * welcome.
   */
  sendInput(frame, now) {
    if (!this.connected || !this.welcome || frame.length !== this.welcome.inputBytes) return null;
    const seq = this.nextSeq;
    this.nextSeq = (this.nextSeq + 1) >>> 0;
    this.history.push(Uint8Array.from(frame));
    if (this.history.length > MAX_INPUT_FRAMES) this.history.shift();
    const first = (seq - (this.history.length - 1)) >>> 0;
    this.netcode.sendPayload(encodeInput(this.newestTick ?? 0, first, this.history), now);
    this.stats.inputsSent += 1;
    return seq;
  }

  disconnect(now) {
    this.netcode.disconnect(now);
  }
}

// ---------------------------------------------------------------------------------------------
// Browser transport: one netcode packet per binary WebSocket message.

/** The WebSocket subprotocol the server's game port speaks. */
export const WS_SUBPROTOCOL = 'tickwire.netcode';

/**
 * Connects a GameClient over a WebSocket (browser, or any runtime with a WHATWG WebSocket).
 * `setup(client)` is called before the first packet, to attach callbacks. Returns
 * `{client, socket, close()}`; `onClose(reason)` is called once when the socket ends.
 * The client's upkeep runs every `upkeepMs` from a timer (not from animation frames, which
 * stop in background tabs).
 */
export function openWebSocket(url, tokenBytes, setup, onClose = () => {}, upkeepMs = 10) {
  const socket = new WebSocket(url, WS_SUBPROTOCOL);
  socket.binaryType = 'arraybuffer';
  const send = (bytes) => {
    if (socket.readyState === WebSocket.OPEN) socket.send(bytes);
  };
  let client = null;
  let timer = null;
  let closed = false;
  let opened = false;
  const finish = (reason) => {
    if (closed) return;
    closed = true;
    clearInterval(timer);
    onClose(reason);
  };
  socket.onopen = () => {
    opened = true;
    client = new GameClient(tokenBytes, performance.now(), send);
    setup(client);
    client.update(performance.now()); // the first request goes out at once
    timer = setInterval(() => client.update(performance.now()), upkeepMs);
  };
  socket.onmessage = (event) => {
    if (client && event.data instanceof ArrayBuffer) {
      client.handlePacket(new Uint8Array(event.data), performance.now());
    }
  };
  socket.onerror = () => finish(opened ? 'websocket error' : `cannot open ${url}`);
  socket.onclose = (event) => finish(`websocket closed (code ${event.code})`);
  return {
    get client() {
      return client;
    },
    socket,
    close() {
      if (client) client.disconnect(performance.now());
      socket.close();
    },
  };
}
