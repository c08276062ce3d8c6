// The /play page: gets a connect token, connects over WebSocket, draws the world and sends the
// keyboard (or, with ?bot=1, a scripted pattern) as the game's input frames.
//
// For tests and the curious, `window.tickwire` is kept current:
//   state     'connecting' -> 'connected' (handshake done: first keep-alive) -> 'disconnected',
//             'denied', 'timed_out', 'token_expired', 'invalid_token' or 'error'
//   tick      newest snapshot tick (null before the first)
//   you       your entity id (null before the welcome; 0xFFFFFFFF: none)
//   entities  newest snapshot, [{id, x, y, fields}] (x, y in world units; not interpolated)
//   game, error, bye: the welcome's game name, why it failed, the server's bye reason
//
// Token: `#token=<base64>&ws=<url>` in the address (a token from your own backend) or, by
// default, GET /token (the server's --dev-tokens, loopback only).

import { NO_ENTITY, PROTOCOL_VERSION, State, openWebSocket } from './tickwire.js';

/** Render this far behind the newest server time, so there are two snapshots to blend. */
const INTERP_DELAY_MS = 100;
/** Snapshots kept for interpolation. */
const SNAPSHOT_BUFFER = 64;
/** Widest view, in world units; a larger world scrolls with you. */
const VIEW_SPAN = 40000;
/** ?bot=1: each direction of the pattern is held this many input frames. */
const BOT_HOLD_FRAMES = 60;
const BOT_PATTERN = [[1, 0], [0, 1], [-1, 0], [0, -1]]; // E, N, W, S

const params = new URLSearchParams(location.search);
const bot = params.get('bot') === '1';

const tw = { state: 'connecting', tick: null, you: null, entities: [], game: null, error: null,
  bye: null };
window.tickwire = tw;

// ---- Games: where x and y are, how the input frame is built, what the events say. ----------

/** Tag's 8-way direction byte from a (dx, dy) with +y north: 0 none, 1..8 = N, NE, ... NW. */
const TAG_DIRECTIONS = { '0,1': 1, '1,1': 2, '1,0': 3, '1,-1': 4, '0,-1': 5, '-1,-1': 6,
  '-1,0': 7, '-1,1': 8 };

/** The games this page knows, by name; each at game version 1. */
const GAMES = {
  // 3 bytes: move_x i8, move_y i8 (+x toward width, +y toward height), buttons (bit 0 boost).
  arena: {
    position: (f) => [f[0], f[1]],
    input: (dx, dy, button) => Uint8Array.of(dx * 127 & 0xff, dy * 127 & 0xff, button ? 1 : 0),
    event(msg, world) {
      if (msg[0] !== 1 || msg.length < 23) return; // level
      const dv = new DataView(msg.buffer, msg.byteOffset, msg.byteLength);
      world.width = dv.getInt32(1, true);
      world.height = dv.getInt32(5, true);
      world.radius = dv.getInt32(9, true);
      const n = dv.getUint16(21, true);
      world.walls = [];
      for (let i = 0; i < n && 23 + 16 * i + 16 <= msg.length; i++) {
        const o = 23 + 16 * i;
        world.walls.push([0, 4, 8, 12].map((k) => dv.getInt32(o + k, true)));
      }
    },
  },
  // 2 bytes: direction (0 none, 1..8 = N, NE, E, SE, S, SW, W, NW; +y north), buttons (bit 0
  // sprint). Fields: kind, x, y, flags (bit 0 it), stamina.
  tag: {
    position: (f) => [f[1], f[2]],
    input: (dx, dy, button) => Uint8Array.of(TAG_DIRECTIONS[`${dx},${dy}`] ?? 0, button ? 1 : 0),
    event(msg, world) {
      const dv = new DataView(msg.buffer, msg.byteOffset, msg.byteLength);
      if (msg[0] === 1 && msg.length >= 29) { // hello
        world.width = dv.getInt32(5, true);
        world.height = dv.getInt32(9, true);
        world.radius = dv.getInt32(13, true);
        world.coinRadius = dv.getInt32(17, true);
      } else if (msg[0] === 2 && msg.length >= 3) { // scores
        const count = dv.getUint16(1, true);
        for (let i = 0; i < count && 3 + 8 * i + 8 <= msg.length; i++) {
          world.scores.set(dv.getUint32(3 + 8 * i, true), dv.getInt32(7 + 8 * i, true));
        }
      } else if (msg[0] === 4 && msg.length >= 5) { // left
        world.scores.delete(dv.getUint32(1, true));
      }
    },
  },
};

/** A game this page does not know: draw its first two fields as x, y, send zero input. */
function unknownGame(inputBytes) {
  return {
    position: (f) => [f[0] ?? 0, f[1] ?? 0],
    input: () => new Uint8Array(inputBytes),
    event() {},
  };
}

// ---- Input -----------------------------------------------------------------------------------

const held = new Set();
const KEYS = { ArrowUp: 'up', KeyW: 'up', ArrowDown: 'down', KeyS: 'down', ArrowLeft: 'left',
  KeyA: 'left', ArrowRight: 'right', KeyD: 'right', ShiftLeft: 'button', ShiftRight: 'button',
  Space: 'button' };
addEventListener('keydown', (e) => {
  if (KEYS[e.code]) {
    held.add(KEYS[e.code]);
    e.preventDefault();
  }
});
addEventListener('keyup', (e) => held.delete(KEYS[e.code]));
addEventListener('blur', () => held.clear());

/** The direction (+y up/north) and button to send now: the keyboard, or the bot pattern. */
function intent(framesSent) {
  if (bot) {
    const [dx, dy] = BOT_PATTERN[Math.floor(framesSent / BOT_HOLD_FRAMES) % BOT_PATTERN.length];
    return [dx, dy, false];
  }
  const dx = (held.has('right') ? 1 : 0) - (held.has('left') ? 1 : 0);
  const dy = (held.has('up') ? 1 : 0) - (held.has('down') ? 1 : 0);
  return [dx, dy, held.has('button')];
}

// ---- Session ---------------------------------------------------------------------------------

const world = { width: 0, height: 0, radius: 400, coinRadius: 250, walls: [], scores: new Map() };
let game = null;
const early = []; // reliable events that came before the welcome named the game
let tickMs = 16; // from the welcome
const snapshots = []; // oldest first: {tick, at, byId: Map(id -> {x, y, fields})}
let clockOffset = null; // local ms of server tick 0, estimated: at - tick * tickMs

const STATE_NAMES = {
  [State.CONNECTED]: 'connected',
  [State.DISCONNECTED]: 'disconnected',
  [State.CONNECTION_DENIED]: 'denied',
  [State.CONNECTION_TIMED_OUT]: 'timed_out',
  [State.CONNECTION_REQUEST_TIMED_OUT]: 'timed_out',
  [State.CONNECTION_RESPONSE_TIMED_OUT]: 'timed_out',
  [State.CONNECT_TOKEN_EXPIRED]: 'token_expired',
  [State.INVALID_CONNECT_TOKEN]: 'invalid_token',
};

function fail(state, error) {
  if (tw.state === 'connecting' || tw.state === 'connected') {
    tw.state = state;
    tw.error = error;
  }
}

function onSnapshot(snap) {
  const now = performance.now();
  tw.tick = snap.tick;
  tw.you = snap.you;
  const byId = new Map();
  tw.entities = snap.entities.map(({ id, fields }) => {
    const [x, y] = game.position(fields);
    const e = { id, x, y, fields };
    byId.set(id, e);
    return e;
  });
  snapshots.push({ tick: snap.tick, at: now, byId });
  if (snapshots.length > SNAPSHOT_BUFFER) snapshots.shift();
  // Follow the earliest arrival (the least delayed), creeping later if the server falls behind.
  const sample = now - snap.tick * tickMs;
  clockOffset = clockOffset === null || sample < clockOffset
    ? sample : clockOffset + (sample - clockOffset) * 0.02;
}

/** Reads `#token=...&ws=...`, else asks the server's dev token endpoint. */
async function getToken() {
  const hash = new URLSearchParams(location.hash.slice(1));
  if (hash.get('token') && hash.get('ws')) return { token: hash.get('token'), ws: hash.get('ws') };
  const res = await fetch('/token', { cache: 'no-store' });
  if (res.status === 404) throw new Error('/token: 404 (start the server with --dev-tokens, or '
    + 'pass #token=<base64>&ws=<url>)');
  if (!res.ok) throw new Error(`/token answered ${res.status}`);
  return res.json();
}

async function main() {
  let grant;
  try {
    grant = await getToken();
  } catch (e) {
    fail('error', String(e.message ?? e));
    return;
  }
  const token = Uint8Array.from(atob(grant.token), (c) => c.charCodeAt(0));
  let inputTimer = null;
  let framesSent = 0;
  openWebSocket(grant.ws, token, (client) => {
    client.onState = (s) => {
      if (s === State.CONNECTED) tw.state = 'connected';
      else if (STATE_NAMES[s]) fail(STATE_NAMES[s], s);
      if (s !== State.CONNECTED) clearInterval(inputTimer);
    };
    client.onWelcome = (w) => {
      if (w.protocolVersion !== PROTOCOL_VERSION) {
        fail('error', `server speaks protocol ${w.protocolVersion}, this page ${PROTOCOL_VERSION}`);
        client.disconnect(performance.now());
        return;
      }
      tw.game = w.game;
      tw.you = w.playerId;
      tickMs = w.tickMs;
      if (game) return; // a resent welcome
      game = (w.gameVersion === 1 && GAMES[w.game]) || unknownGame(w.inputBytes);
      for (const msg of early.splice(0)) game.event(msg, world);
      // One input per tick: the game holds the newest frame as the player's intent.
      inputTimer = setInterval(() => {
        const [dx, dy, button] = intent(framesSent);
        if (client.sendInput(game.input(dx, dy, button), performance.now()) !== null) {
          framesSent += 1;
        }
      }, w.tickMs);
    };
    client.onSnapshot = onSnapshot;
    client.onMessage = (msg) => (game ? game.event(msg, world) : early.push(msg));
    client.onBye = (reason) => {
      tw.bye = reason;
    };
  }, (reason) => {
    clearInterval(inputTimer);
    fail(tw.state === 'connected' ? 'disconnected' : 'error', reason);
  });
}

// ---- Drawing ---------------------------------------------------------------------------------

const canvas = document.getElementById('view');
const hud = document.getElementById('hud');
const ctx = canvas.getContext('2d');

/** Entity positions at render time: blended between the two snapshots around it. */
function interpolated(now) {
  const newest = snapshots[snapshots.length - 1];
  if (!newest) return [];
  const renderTick = (now - INTERP_DELAY_MS - clockOffset) / tickMs;
  let i = snapshots.length - 1;
  while (i > 0 && snapshots[i - 1].tick > renderTick) i -= 1;
  const b = snapshots[i];
  const a = i > 0 ? snapshots[i - 1] : null;
  if (!a || renderTick >= b.tick) return [...b.byId.values()];
  const t = Math.max(0, Math.min(1, (renderTick - a.tick) / (b.tick - a.tick)));
  return [...b.byId.values()].map((e) => {
    const from = a.byId.get(e.id);
    if (!from) return e;
    return { ...e, x: from.x + (e.x - from.x) * t, y: from.y + (e.y - from.y) * t };
  });
}

function draw() {
  requestAnimationFrame(draw);
  const dpr = devicePixelRatio || 1;
  const w = Math.floor(canvas.clientWidth * dpr);
  const h = Math.floor(canvas.clientHeight * dpr);
  if (canvas.width !== w || canvas.height !== h) {
    canvas.width = w;
    canvas.height = h;
  }
  ctx.fillStyle = '#111';
  ctx.fillRect(0, 0, w, h);
  const ents = game && clockOffset !== null ? interpolated(performance.now()) : [];

  // The view: the whole world when it fits VIEW_SPAN, else a window centred on you.
  let minX = 0;
  let minY = 0;
  let maxX = world.width;
  let maxY = world.height;
  if (!(maxX > 0 && maxY > 0) && ents.length) { // no level event: fit the entities
    minX = Math.min(...ents.map((e) => e.x)) - 2000;
    maxX = Math.max(...ents.map((e) => e.x)) + 2000;
    minY = Math.min(...ents.map((e) => e.y)) - 2000;
    maxY = Math.max(...ents.map((e) => e.y)) + 2000;
  }
  let span = Math.max(maxX - minX, maxY - minY, 1);
  let cx = (minX + maxX) / 2;
  let cy = (minY + maxY) / 2;
  const me = ents.find((e) => e.id === tw.you);
  if (span > VIEW_SPAN) {
    span = VIEW_SPAN;
    if (me) [cx, cy] = [me.x, me.y];
  }
  const scale = Math.min(w, h) / span;
  const sx = (x) => w / 2 + (x - cx) * scale;
  const sy = (y) => h / 2 - (y - cy) * scale; // +y is up (tag's north)

  if (world.width > 0) {
    ctx.strokeStyle = '#444';
    ctx.strokeRect(sx(0), sy(world.height), world.width * scale, world.height * scale);
  }
  ctx.fillStyle = '#333';
  for (const [x0, y0, x1, y1] of world.walls) {
    ctx.fillRect(sx(x0), sy(y1), (x1 - x0) * scale, (y1 - y0) * scale);
  }
  const tag = game === GAMES.tag;
  for (const e of ents) {
    const coin = tag && e.fields[0] === 1;
    const it = tag && !coin && (e.fields[3] & 1);
    const r = (coin ? world.coinRadius : world.radius) * scale;
    ctx.beginPath();
    ctx.arc(sx(e.x), sy(e.y), Math.max(r, 2), 0, 2 * Math.PI);
    ctx.fillStyle = coin ? '#d4af37' : e.id === tw.you ? '#4fc3f7' : it ? '#e53935' : '#9e9e9e';
    ctx.fill();
    if (e.id === tw.you && it) {
      ctx.lineWidth = 3;
      ctx.strokeStyle = '#e53935';
      ctx.stroke();
    }
  }

  const score = tag && tw.you !== null ? `  score ${world.scores.get(tw.you) ?? 0}`
    : '';
  hud.textContent = `${tw.state}${tw.error ? ` (${tw.error})` : ''}${tw.bye ? `  bye: ${tw.bye}` : ''}`
    + `\n${tw.game ?? '-'}  tick ${tw.tick ?? '-'}  you ${tw.you === NO_ENTITY ? 'spectator'
      : tw.you ?? '-'}  entities ${tw.entities.length}${score}`
    + `\n${bot ? 'bot: scripted input' : 'arrows/WASD move, shift boosts (arena) or sprints (tag)'}`;
}

requestAnimationFrame(draw);
main();
