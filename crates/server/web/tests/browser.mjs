#!/usr/bin/env node
// Two headless Chromium pages open /play?bot=1 on a running server started with --dev-tokens.
// It passes when both reach `window.tickwire.state === 'connected'` and each page sees the
// other player's entity move (the bot pattern moves them; no keyboard needed).
//
// Usage: node browser.mjs --base http://127.0.0.1:9464 [--chromium /usr/bin/chromium]
//                         [--guard-secs 120] [--screenshot DIR]
// The guard is a hang guard for each phase, never a measurement. Exit 0 and a last line
// `ok: ...` on success; exit 1 with the states the pages reached otherwise.

import { chromium } from 'playwright-core';

const args = Object.fromEntries(process.argv.slice(2).reduce((pairs, a, i, all) => {
  if (a.startsWith('--')) pairs.push([a.slice(2), all[i + 1]]);
  return pairs;
}, []));
const base = args.base;
const executablePath = args.chromium ?? process.env.TICKWIRE_CHROMIUM ?? '/usr/bin/chromium';
const guardMs = Number(args['guard-secs'] ?? 120) * 1000;
const t0 = performance.now();
const log = (msg) => console.log(`[${((performance.now() - t0) / 1000).toFixed(2)}s] ${msg}`);
if (!base) {
  console.error('usage: node browser.mjs --base http://HOST:PORT');
  process.exit(2);
}

const browser = await chromium.launch({
  executablePath,
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
let exitCode = 1;
try {
  exitCode = await run();
} catch (e) {
  console.error(`FAIL: ${e.stack ?? e}`);
} finally {
  await browser.close();
}
process.exit(exitCode);

async function run() {
  // One context per player: separate pages that share nothing.
  const pages = [];
  for (const i of [0, 1]) {
    const page = await (await browser.newContext()).newPage();
    page.on('console', (m) => log(`page ${i} console.${m.type()}: ${m.text()}`));
    page.on('pageerror', (e) => log(`page ${i} error: ${e.message}`));
    await page.goto(`${base}/play?bot=1`);
    pages.push(page);
  }

  /** What a page shows in `window.tickwire`. */
  const look = (page) => page.evaluate(() => {
    const t = window.tickwire;
    return t ? { state: t.state, error: t.error, game: t.game, tick: t.tick, you: t.you,
      entities: t.entities.map(({ id, x, y }) => ({ id, x, y })) } : { state: 'no window.tickwire' };
  });
  const describe = (views) => views.map((v, i) => `page ${i} '${v.state}'`
    + `${v.error ? ` (${v.error})` : ''}, tick ${v.tick}, you ${v.you}, `
    + `${v.entities?.length ?? 0} entities`).join('; ');

  /** Polls both pages until `done(views)` or a page fails; false at the hang guard. */
  async function poll(what, done) {
    const deadline = performance.now() + guardMs;
    for (;;) {
      const views = await Promise.all(pages.map(look));
      if (done(views)) return views;
      const broken = views.find((v) => v.state !== 'connecting' && v.state !== 'connected');
      if (broken || performance.now() > deadline) {
        console.error(`FAIL: waiting for ${what}: ${broken
          ? `page ${views.indexOf(broken)} stopped in state '${broken.state}'`
          : `hang guard (${guardMs / 1000} s) reached`}. States reached: ${describe(views)}`);
        return null;
      }
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  let views = await poll("both pages in state 'connected'",
    (vs) => vs.every((v) => v.state === 'connected' && v.you !== null));
  if (!views) return 1;
  log(`both connected: ${describe(views)}`);

  // Each page watches the other's entity: its first position seen, then any other one.
  const ids = views.map((v) => v.you);
  const first = [null, null];
  const moved = [null, null];
  views = await poll("each page to see the other's entity move", (vs) => {
    vs.forEach((v, i) => {
      const other = v.entities.find((e) => e.id === ids[1 - i]);
      if (!other) return;
      first[i] ??= other;
      if (!moved[i] && (other.x !== first[i].x || other.y !== first[i].y)) moved[i] = other;
    });
    return moved[0] && moved[1];
  });
  if (!views) {
    console.error(`(page 0 saw player ${ids[1]} at ${JSON.stringify(first[0])}, page 1 saw `
      + `player ${ids[0]} at ${JSON.stringify(first[1])}; neither moved)`);
    return 1;
  }
  for (const i of [0, 1]) {
    log(`page ${i} (player ${ids[i]}) saw player ${ids[1 - i]} move (${first[i].x},`
      + `${first[i].y}) -> (${moved[i].x},${moved[i].y})`);
  }
  if (args.screenshot) {
    for (const i of [0, 1]) await pages[i].screenshot({ path: `${args.screenshot}/play-${i}.png` });
    log(`screenshots in ${args.screenshot}`);
  }
  console.log(`ok: 2 pages connected (game ${views[0].game}, ticks ${views[0].tick} and `
    + `${views[1].tick}), each saw the other's entity move`);
  return 0;
}
