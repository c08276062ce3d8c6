#!/usr/bin/env node
// The browser client's protocol code (../tickwire.js), run in Node against a real tickwire
// server over UDP (node:dgram), so it is proven without a browser and without the WebSocket
// transport. It passes when the JS client:
//   1. completes the netcode handshake (state 'connected' on the first keep-alive),
//   2. decodes the welcome and the game's reliable join event (reassembled and acknowledged),
//   3. receives snapshots and sees its own entity move after sending inputs, with the server
//      reporting them applied (last_input_seq > 0),
//   4. leaves with netcode's disconnect packets, and (with --http) the server counts no
//      malformed message from it and sees the player gone.
//
// Usage:
//   node udp-harness.mjs --http 127.0.0.1:9464           token from GET /token (--dev-tokens);
//                                                         UDP to the "ws" URL's host and port
//   node udp-harness.mjs --token BASE64 --server 127.0.0.1:7777
//   [--guard-secs N]   hang guard for the whole run (default 120): never a measurement
//
// Exit 0 and a last line `ok: ...` on success; exit 1 with the reason otherwise.

import dgram from 'node:dgram';
import { GameClient, NO_ENTITY, State } from '../tickwire.js';

const args = Object.fromEntries(process.argv.slice(2).reduce((pairs, a, i, all) => {
  if (a.startsWith('--')) pairs.push([a.slice(2), all[i + 1]]);
  return pairs;
}, []));
const guardMs = Number(args['guard-secs'] ?? 120) * 1000;
const t0 = performance.now();
const log = (msg) => console.log(`[${((performance.now() - t0) / 1000).toFixed(2)}s] ${msg}`);

function die(msg) {
  console.error(`FAIL: ${msg}`);
  process.exit(1);
}

/** Splits `host:port` / `[v6]:port`. */
function hostPort(s) {
  const m = /^\[?([^\]]+?)\]?:(\d+)$/.exec(s ?? '');
  if (!m) die(`not an address: ${s}`);
  return { host: m[1], port: Number(m[2]) };
}

async function metrics(http) {
  const res = await fetch(`http://${http}/metrics`);
  const text = await res.text();
  const sum = (prefix) => text.split('\n')
    .filter((l) => l.startsWith(prefix))
    .reduce((n, l) => n + Number(l.slice(l.lastIndexOf(' ') + 1)), 0);
  return { malformed: sum('packets_dropped_total{reason="malformed_message"}'),
    players: sum('players_connected'), backlog: sum('game_events_total{result="backlog"}') };
}

/** Polls `cond` every 10 ms until true; dies naming `what` at the hang guard. */
function until(what, cond) {
  return new Promise((resolve) => {
    const timer = setInterval(async () => {
      if (await cond()) {
        clearInterval(timer);
        resolve();
      } else if (performance.now() - t0 > guardMs) {
        die(`hang guard (${guardMs / 1000} s) reached waiting for ${what}`);
      }
    }, 10);
  });
}

// ---- token and server address
let token;
let server;
if (args.http) {
  const res = await fetch(`http://${args.http}/token`);
  if (res.status !== 200) die(`GET /token answered ${res.status}: ${await res.text()}`);
  const grant = await res.json();
  token = Buffer.from(grant.token, 'base64');
  server = hostPort(new URL(grant.ws).host);
  log(`GET /token: client_id ${grant.client_id}, expires_in ${grant.expires_in} s, ws ${grant.ws}`);
} else if (args.token && args.server) {
  token = Buffer.from(args.token, 'base64');
  server = hostPort(args.server);
} else {
  die('usage: --http ADDR | --token BASE64 --server ADDR');
}
log(`token: ${token.length} bytes; UDP server ${server.host}:${server.port}`);

// ---- the client over a UDP socket
const socket = dgram.createSocket(server.host.includes(':') ? 'udp6' : 'udp4');
await new Promise((resolve) => socket.bind(0, server.host, resolve));
let sending = 0; // datagrams handed to the socket and not yet written
const send = (bytes) => {
  sending += 1;
  socket.send(bytes, server.port, server.host, () => { sending -= 1; });
};
const client = new GameClient(new Uint8Array(token), performance.now(), send);

const seen = { states: [], welcome: null, messages: [], snapshots: 0, firstPos: null,
  lastPos: null, lastInputSeq: 0, inputs: 0, bye: null };
client.onState = (s) => {
  seen.states.push(s);
  log(`state ${s}`);
};
client.onConnected = (i) => log(`connected: client index ${i.clientIndex} of ${i.maxClients}`);
client.onWelcome = (w) => {
  if (!seen.welcome) {
    log(`welcome: game ${w.game} v${w.gameVersion}, protocol ${w.protocolVersion}, you ${w.playerId}, `
      + `tick ${w.tick}, tick_ms ${w.tickMs}, input_bytes ${w.inputBytes}, `
      + `entity_fields ${w.entityFields}`);
  }
  seen.welcome = w;
};
client.onMessage = (msg) => {
  seen.messages.push(msg);
  const dv = new DataView(msg.buffer, msg.byteOffset, msg.byteLength);
  if (seen.welcome?.game === 'arena' && msg[0] === 1) {
    log(`reliable event: arena level ${dv.getInt32(1, true)} x ${dv.getInt32(5, true)}, `
      + `${dv.getUint16(21, true)} walls (${msg.length} bytes)`);
  } else {
    log(`reliable event: type ${msg[0]}, ${msg.length} bytes`);
  }
};
/** This client's position from its entity's fields, in the game's layout. */
const position = (f) => (seen.welcome.game === 'tag' ? [f[1], f[2]] : [f[0], f[1]]);
client.onSnapshot = (snap) => {
  seen.snapshots += 1;
  seen.lastInputSeq = snap.lastInputSeq;
  const me = snap.you === NO_ENTITY ? null : snap.entities.find((e) => e.id === snap.you);
  if (!me) return;
  const pos = position(me.fields);
  if (!seen.firstPos) {
    seen.firstPos = pos;
    log(`first snapshot with you: tick ${snap.tick}, ${snap.entities.length} entities, `
      + `you at (${pos})`);
  }
  seen.lastPos = pos;
};
client.onBye = (reason) => {
  seen.bye = reason;
  log(`bye: ${reason}`);
};
socket.on('message', (msg, rinfo) => {
  if (rinfo.port === server.port) client.handlePacket(new Uint8Array(msg), performance.now());
});

// Upkeep every 5 ms; one input per tick once the welcome names the game: east, then north,
// west, south, a second each (a wall or the border cannot block all four).
const upkeep = setInterval(() => client.update(performance.now()), 5);
let inputTimer = null;
const startInputs = (tickMs) => {
  inputTimer = setInterval(() => {
    const [dx, dy] = [[1, 0], [0, 1], [-1, 0], [0, -1]][Math.floor(seen.inputs / 60) % 4];
    const frame = seen.welcome.game === 'arena' ? [dx * 127 & 0xff, dy * 127 & 0xff, 0]
      : seen.welcome.game === 'tag' ? [{ '1,0': 3, '0,1': 1, '-1,0': 7, '0,-1': 5 }[`${dx},${dy}`], 0]
        : new Array(seen.welcome.inputBytes).fill(0);
    if (client.sendInput(frame, performance.now()) !== null) seen.inputs += 1;
  }, tickMs);
};

const failed = () => client.state !== State.SENDING_CONNECTION_REQUEST
  && client.state !== State.SENDING_CHALLENGE_RESPONSE && client.state !== State.CONNECTED;

await until('the handshake', () => client.connected || failed());
if (!client.connected) die(`handshake ended in state ${client.state}`);
await until('the welcome', () => seen.welcome || failed());
startInputs(seen.welcome.tickMs);
const moved = () => seen.firstPos && seen.lastPos
  && (seen.firstPos[0] !== seen.lastPos[0] || seen.firstPos[1] !== seen.lastPos[1]);
await until('snapshots, a reliable event, applied inputs and movement', () => failed()
  || (seen.snapshots >= 20 && seen.messages.length >= 1 && seen.lastInputSeq > 0 && moved()));
if (failed()) die(`connection ended in state ${client.state} (bye: ${seen.bye})`);
log(`snapshots ${seen.snapshots} (early ${client.stats.snapshotsEarly}, stale `
  + `${client.stats.snapshotsStale}), newest tick ${client.newestTick}`);
log(`inputs sent ${seen.inputs}, server applied up to seq ${seen.lastInputSeq}`);
log(`moved: (${seen.firstPos}) -> (${seen.lastPos})`);
log(`reliable: ${client.stats.messages} message(s) delivered, ${client.stats.acksSent} ack(s) sent, `
  + `${client.stats.malformed} malformed payload(s)`);
if (client.stats.malformed > 0) die('the client could not decode some server payloads');

if (args.http) {
  const m = await metrics(args.http);
  log(`server: players_connected ${m.players}, malformed_message drops ${m.malformed}, `
    + `event backlog refusals ${m.backlog}`);
  if (m.malformed > 0) die('the server dropped messages from the JS client as malformed');
  if (m.backlog > 0) die('the server refused events: a client fell behind on acks');
}

clearInterval(inputTimer);
client.disconnect(performance.now());
await until('the disconnect packets to be written', () => sending === 0);
log(`sent disconnect; state ${client.state}`);
if (args.http) {
  await until('the server to see the player leave', async () => (await metrics(args.http)).players === 0);
  log('server: players_connected 0');
}
clearInterval(upkeep);
socket.close();
console.log(`ok: connected, ${seen.snapshots} snapshots, ${client.stats.messages} reliable `
  + `message(s) acked, own entity moved (${seen.firstPos}) -> (${seen.lastPos}), disconnected`);
