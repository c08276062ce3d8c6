// Unit tests of ../tickwire.js on the golden bytes of docs/protocol.md, and its netcode state
// machine against an in-memory fake server. Run: `node --test` in this directory (the Rust test
// crates/server/tests/browser.rs runs it too).

import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  GameClient, NetcodeClient, ReliableReceiver, State, encodeInput, maxSnapshotEntities,
  openPacket, parseConnectToken, sealPacket,
} from '../tickwire.js';

const hex = (s) => Uint8Array.from(s.trim().split(/\s+/), (b) => parseInt(b, 16));
const PROTOCOL_ID = hex('65 72 69 77 6b 63 69 74'); // 0x7469636b77697265, little-endian
const C2S = new Uint8Array(32).fill(1);
const S2C = new Uint8Array(32).fill(2);

/** A connect token (public part) as the server mints it; the private part is opaque filler. */
function token({ addrs = [hex('01 7f 00 00 01 40 9c')], timeout = 10 } = {}) {
  const t = new Uint8Array(2048);
  const dv = new DataView(t.buffer);
  t.set(new TextEncoder().encode('NETCODE 1.02\0'), 0);
  t.set(PROTOCOL_ID, 13);
  dv.setBigUint64(21, 1000n, true); // create
  dv.setBigUint64(29, 1030n, true); // expire
  t.fill(0xaa, 37, 61); // nonce
  t.fill(0xbb, 61, 1085); // encrypted private part
  dv.setInt32(1085, timeout, true);
  dv.setUint32(1089, addrs.length, true);
  let at = 1093;
  for (const a of addrs) {
    t.set(a, at);
    at += a.length;
  }
  t.set(C2S, at);
  t.set(S2C, at + 32);
  return t;
}

test('connect token: addresses, keys, timestamps, and refusals', () => {
  const t = parseConnectToken(token({ addrs: [hex('01 7f 00 00 01 40 9c'),
    hex('02 01 20 b8 0d 00 00 00 00 00 00 00 00 00 00 01 00 41 9c')] }));
  assert.deepEqual(t.servers, [{ host: '127.0.0.1', port: 40000 },
    { host: '2001:db8:0:0:0:0:0:1', port: 40001 }]);
  assert.deepEqual([t.createSecs, t.expireSecs, t.timeoutSecs], [1000, 1030, 10]);
  assert.deepEqual(t.clientToServerKey, C2S);
  assert.deepEqual(t.serverToClientKey, S2C);
  assert.equal(t.privateData.length, 1024);
  assert.throws(() => parseConnectToken(new Uint8Array(2047)));
  const badVersion = token();
  badVersion[11] = 0x33; // "NETCODE 1.03"
  assert.throws(() => parseConnectToken(badVersion), /version/);
  assert.throws(() => parseConnectToken(token({ addrs: [hex('03 7f 00 00 01 40 9c')] })),
    /address type 3/);
  assert.throws(() => parseConnectToken(token({ addrs: [] })), /0 server addresses/);
});

test('packet prefixes and sequence bytes (protocol.md §2.2)', () => {
  const body = new Uint8Array(8);
  assert.deepEqual(sealPacket(5, 1000, new Uint8Array(1), PROTOCOL_ID, C2S).subarray(0, 3),
    hex('25 e8 03'));
  assert.deepEqual(sealPacket(4, 0, body, PROTOCOL_ID, C2S).subarray(0, 2), hex('14 00'));
  const disconnect = sealPacket(6, 2 ** 63, new Uint8Array(0), PROTOCOL_ID, C2S);
  assert.deepEqual(disconnect.subarray(0, 9), hex('86 00 00 00 00 00 00 00 80'));
  assert.equal(disconnect.length, 1 + 8 + 16);
  // Round trip; the wrong key, a flipped prefix or a wrong size for the type is refused.
  const ka = sealPacket(4, 7, body, PROTOCOL_ID, S2C);
  assert.deepEqual(openPacket(ka, PROTOCOL_ID, S2C), { type: 4, sequence: 7, body });
  assert.equal(openPacket(ka, PROTOCOL_ID, C2S), null);
  const tampered = Uint8Array.from(ka);
  tampered[0] = 0x15; // same sequence bytes, payload type: the AAD differs
  assert.equal(openPacket(tampered, PROTOCOL_ID, S2C), null);
  assert.equal(openPacket(sealPacket(4, 7, new Uint8Array(9), PROTOCOL_ID, S2C), PROTOCOL_ID,
    S2C), null);
});

test('handshake against a fake server: request, challenge, response, keep-alive, payload', () => {
  const sent = [];
  const c = new NetcodeClient(parseConnectToken(token()), 0, (b) => sent.push(b));
  const states = [];
  c.onState = (s) => states.push(s);
  c.update(0);
  assert.equal(sent.length, 1);
  const req = sent[0];
  assert.equal(req.length, 1078);
  assert.equal(req[0], 0);
  assert.deepEqual(req.subarray(14, 22), PROTOCOL_ID);
  assert.deepEqual(req.subarray(30, 54), new Uint8Array(24).fill(0xaa));
  assert.deepEqual(req.subarray(54), new Uint8Array(1024).fill(0xbb));
  c.update(50); // not due yet
  assert.equal(sent.length, 1);
  c.update(100); // resent at 10 Hz
  assert.equal(sent.length, 2);

  // Challenge (server-global sequence from 2^63): the client echoes the 308 bytes.
  const challenge = new Uint8Array(308).map((_, i) => i & 0xff);
  c.handlePacket(sealPacket(2, 2 ** 63, challenge, PROTOCOL_ID, S2C), 120);
  assert.equal(c.state, State.SENDING_CHALLENGE_RESPONSE);
  const response = openPacket(sent[2], PROTOCOL_ID, C2S);
  assert.deepEqual(response, { type: 3, sequence: 0, body: challenge });

  // Keep-alive at session sequence 0: connected, with our slot.
  const ka = new Uint8Array(8);
  new DataView(ka.buffer).setUint32(0, 5, true);
  new DataView(ka.buffer).setUint32(4, 64, true);
  c.handlePacket(sealPacket(4, 0, ka, PROTOCOL_ID, S2C), 130);
  assert.equal(c.state, State.CONNECTED);
  assert.deepEqual([c.clientIndex, c.maxClients], [5, 64]);
  assert.deepEqual(states, [State.SENDING_CHALLENGE_RESPONSE, State.CONNECTED]);

  // Payloads: delivered once (the replay window drops the copy); the client's next packet
  // continues its one sequence counter.
  const got = [];
  c.onPayload = (p) => got.push(Array.from(p));
  const payload = sealPacket(5, 1, Uint8Array.of(9, 8, 7), PROTOCOL_ID, S2C);
  c.handlePacket(payload, 140);
  c.handlePacket(payload, 141);
  assert.deepEqual(got, [[9, 8, 7]]);
  c.sendPayload(Uint8Array.of(1), 150);
  assert.equal(openPacket(sent.at(-1), PROTOCOL_ID, C2S).sequence, 1);

  // Idle: a keep-alive after 100 ms; silence for the token's 10 s: timed out.
  c.update(250);
  assert.equal(openPacket(sent.at(-1), PROTOCOL_ID, C2S).type, 4);
  c.update(141 + 10_000);
  assert.equal(c.state, State.CONNECTION_TIMED_OUT);
});

test('denied, and the disconnect packets', () => {
  const sent = [];
  const denied = new NetcodeClient(parseConnectToken(token()), 0, (b) => sent.push(b));
  denied.update(0);
  denied.handlePacket(sealPacket(1, 2 ** 63 + 4096, new Uint8Array(0), PROTOCOL_ID, S2C), 10);
  assert.equal(denied.state, State.CONNECTION_DENIED);

  const c = new NetcodeClient(parseConnectToken(token()), 0, (b) => sent.push(b));
  c.handlePacket(sealPacket(2, 2 ** 63, new Uint8Array(308), PROTOCOL_ID, S2C), 1);
  c.handlePacket(sealPacket(4, 0, new Uint8Array(8), PROTOCOL_ID, S2C), 2);
  sent.length = 0;
  c.disconnect(3);
  assert.equal(c.state, State.DISCONNECTED);
  assert.deepEqual(sent.map((p) => openPacket(p, PROTOCOL_ID, C2S).type), Array(10).fill(6));
  assert.deepEqual(sent.map((p) => openPacket(p, PROTOCOL_ID, C2S).sequence),
    [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
});

test('input encoding (protocol.md §3.2)', () => {
  assert.deepEqual(encodeInput(300, 41, [[0xfb, 0x7f, 1], [0, 0x81, 0]]),
    hex('00 fb 2c 01 02 29 fb 7f 01 2a 00 81 00'));
  assert.deepEqual(encodeInput(0, 1, []), hex('00 00 00'));
  assert.deepEqual(encodeInput(70000, 0xffffffff, [[1]]),
    hex('00 fc 70 11 01 00 01 fc ff ff ff ff 01'));
  assert.equal(maxSnapshotEntities(2), 78);
  assert.equal(maxSnapshotEntities(5), 39);
  assert.equal(maxSnapshotEntities(0), 236);
});

/** A connected GameClient whose payloads we inject directly (netcode is tested above). */
function connectedGame() {
  const sent = [];
  const g = new GameClient(token(), 0, (b) => sent.push(b));
  g.netcode.handlePacket(sealPacket(2, 2 ** 63, new Uint8Array(308), PROTOCOL_ID, S2C), 1);
  g.netcode.handlePacket(sealPacket(4, 0, new Uint8Array(8), PROTOCOL_ID, S2C), 2);
  sent.length = 0;
  const got = { welcome: [], snapshots: [], messages: [], bye: [] };
  g.onWelcome = (w) => got.welcome.push(w);
  g.onSnapshot = (s) => got.snapshots.push(s);
  g.onMessage = (m) => got.messages.push(Array.from(m));
  g.onBye = (r) => got.bye.push(r);
  const payloads = () => sent.map((p) => Array.from(openPacket(p, PROTOCOL_ID, C2S).body));
  return { g, got, payloads };
}

const WELCOME = hex('00 07 10 fb d2 04 02 05 61 72 65 6e 61 01 03 02');
const SNAPSHOT = hex(`01 fc 70 11 01 00 2a 03 02 03 fb d0 07 01 fa fc df 22 02 00
  fc fe ff ff ff`);

test('welcome, snapshots and bye (protocol.md §3.3)', () => {
  const { g, got, payloads } = connectedGame();
  g.handlePayload(SNAPSHOT); // before the welcome: undecodable, dropped, not acknowledged
  assert.equal(g.stats.snapshotsEarly, 1);
  g.handlePayload(WELCOME);
  assert.deepEqual(got.welcome, [{ playerId: 7, tickMs: 16, tick: 1234, protocolVersion: 2,
    game: 'arena', gameVersion: 1, inputBytes: 3, entityFields: 2 }]);
  g.handlePayload(SNAPSHOT);
  g.handlePayload(SNAPSHOT); // not newer: dropped
  assert.deepEqual(got.snapshots, [{ tick: 70000, lastInputSeq: 42, you: 3, entities: [
    { id: 3, fields: [1000, -1] }, { id: 250, fields: [-70000, 2147483647] }] }]);
  assert.equal(g.stats.snapshotsStale, 1);
  g.handlePayload(hex('02 03'));
  assert.deepEqual(got.bye, ['server_full']);
  // Malformed: trailing bytes, an unknown type, a welcome with input_bytes 0.
  g.handlePayload(Uint8Array.of(...hex('02 00'), 0));
  g.handlePayload(hex('07'));
  g.handlePayload(hex('00 07 10 fb d2 04 02 05 61 72 65 6e 61 01 00 02'));
  assert.equal(g.stats.malformed, 3);

  // Inputs: numbered from 1, the newest with up to 7 earlier ones, acking the newest tick.
  for (let i = 0; i < 9; i++) g.sendInput([i, 0, 0], 10 + i);
  assert.equal(g.sendInput([1, 2], 20), null, 'a frame of the wrong size is refused');
  const last = payloads().at(-1);
  assert.deepEqual(last.slice(0, 6), [0, 0xfc, 0x70, 0x11, 0x01, 0x00]); // ack_tick 70000
  assert.equal(last[6], 8); // 8 frames
  assert.deepEqual(last.slice(7, 11), [2, 1, 0, 0]); // seq 2 = frame 1 (the oldest kept)
  assert.deepEqual(last.slice(-4), [9, 8, 0, 0]); // seq 9 = frame 8
});

/** A reliable body: header (ack_next 0, no ack bits) and the given fragments. */
function body(frags) {
  const parts = [new Uint8Array(12)];
  for (const [seq, index, count, payload] of frags) {
    const h = new Uint8Array(10);
    const dv = new DataView(h.buffer);
    dv.setUint32(0, seq, true);
    dv.setUint16(4, index, true);
    dv.setUint16(6, count, true);
    dv.setUint16(8, payload.length, true);
    parts.push(h, payload);
  }
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

test('reliable channel: reassembly in order, acks, duplicates, refusals', () => {
  const r = new ReliableReceiver();
  const got = [];
  const deliver = (m) => got.push(m);
  const big = new Uint8Array(1024 + 5).map((_, i) => i & 0xff);
  // Message 0 (1 fragment), message 1 (2 fragments); the middle one arrives last.
  assert.equal(r.handle(body([[2, 1, 2, big.subarray(1024)]]), deliver), true);
  assert.equal(got.length, 0);
  let ack = new DataView(r.pollAck().buffer);
  assert.deepEqual([ack.getUint32(0, true), ack.getUint32(4, true), ack.getUint32(8, true)],
    [0, 0b10, 0]); // fragment 2 = ack_next + 1 + 1
  assert.equal(r.pollAck(), null, 'one ack per batch');
  assert.equal(r.handle(body([[0, 0, 1, Uint8Array.of(42)], [1, 0, 2, big.subarray(0, 1024)]]),
    deliver), true);
  assert.deepEqual(got.map((m) => m.length), [1, 1029]);
  assert.deepEqual(got[1], big);
  ack = new DataView(r.pollAck().buffer);
  assert.equal(ack.getUint32(0, true), 3);
  // A duplicate is acknowledged again but not delivered again.
  assert.equal(r.handle(body([[1, 0, 2, big.subarray(0, 1024)]]), deliver), true);
  assert.equal(got.length, 2);
  assert.notEqual(r.pollAck(), null);
  // A pure ack owes nothing; refused bodies change nothing.
  assert.equal(r.handle(new Uint8Array(12), deliver), true);
  assert.equal(r.pollAck(), null);
  const acksOurs = new Uint8Array(12);
  acksOurs[0] = 1; // ack_next 1: acknowledges a fragment we never sent
  assert.equal(r.handle(acksOurs, deliver), false);
  assert.equal(r.handle(body([[3 + 64, 0, 1, Uint8Array.of(1)]]), deliver), false, 'beyond window');
  assert.equal(r.handle(body([[3, 0, 2, Uint8Array.of(1)]]), deliver), false, 'short non-last');
  assert.equal(r.handle(body([[3, 1, 1, Uint8Array.of(1)]]), deliver), false, 'index >= count');
  assert.equal(r.handle(body([[3, 0, 1, Uint8Array.of(1)]]).subarray(0, 20), deliver), false);
  assert.equal(r.recvNext, 3);
  // Ack bits reach the high word: fragment recvNext + 40 buffered alone.
  r.handle(body([[3 + 40, 0, 1, Uint8Array.of(1)]]), deliver);
  ack = new DataView(r.pollAck().buffer);
  assert.deepEqual([ack.getUint32(4, true), ack.getUint32(8, true)], [0, 1 << (39 - 32)]);
});

test('GameClient acknowledges reliable packets at once', () => {
  const { g, got, payloads } = connectedGame();
  g.handlePacket(sealPacket(5, 1, Uint8Array.of(3, ...body([[0, 0, 1, Uint8Array.of(1, 2)]])),
    PROTOCOL_ID, S2C), 5);
  assert.deepEqual(got.messages, [[1, 2]]);
  assert.deepEqual(payloads(), [[1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]]); // ack_next 1
});
