//! The browser client (crates/server/web), through Node:
//!
//! * `js_unit_tests`: `tickwire.js` on the golden bytes of docs/protocol.md and against an
//!   in-memory fake server (`web/tests/tickwire.test.mjs`, `node --test`). Needs `node`.
//! * `js_client_over_udp`: the page's protocol code (`tickwire.js`) in Node over UDP
//!   (`web/tests/udp-harness.mjs`), with a token from `/token`: handshake, welcome, reliable
//!   event reassembled and acked, snapshots, own entity moving, polite disconnect. Needs `node`.
//! * `two_browser_pages_see_each_other_move`: two headless Chromium pages open `/play?bot=1`
//!   (`web/tests/browser.mjs`, Playwright), both reach `connected` and each sees the other's
//!   entity move. Needs `node`, `/usr/bin/chromium` (or `TICKWIRE_CHROMIUM`) and
//!   `web/tests/node_modules/playwright-core`, and the game port's WebSocket transport.
//!
//! `scripts/browser-deps.sh` installs what is missing. A missing tool fails the test with that
//! advice: never a silent skip.

mod support;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::ServerProc;

/// Hang guard for one Node script (each script has its own, shorter, per phase).
const SCRIPT_GUARD: Duration = Duration::from_secs(300);

fn web_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("web")
}

/// Panics with what to do when `what` is missing.
fn require(ok: bool, what: &str) {
    assert!(
        ok,
        "{what} is missing: run scripts/browser-deps.sh (it installs Debian's chromium when \
         /usr/bin/chromium is absent and runs `npm ci` in crates/server/web/tests)"
    );
}

fn require_node() {
    let ok = Command::new("node")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    require(ok, "node (Node.js 20 or later)");
}

/// Runs `node script args...` in web/tests, bounded by [`SCRIPT_GUARD`]; returns whether it
/// exited 0 and its output (stdout, then stderr).
fn run_node(script: &str, args: &[&str]) -> (bool, String) {
    let mut child = Command::new("node")
        .arg(script)
        .args(args)
        .current_dir(web_dir().join("tests"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn node");
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + SCRIPT_GUARD;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let output = format!(
        "{}{}",
        out.join().unwrap_or_default(),
        err.join().unwrap_or_default()
    );
    match status {
        Some(status) => (status.success(), output),
        None => (
            false,
            format!("{output}\n(killed: {script} outlived its {SCRIPT_GUARD:?} hang guard)"),
        ),
    }
}

#[test]
fn js_unit_tests() {
    require_node();
    let (ok, output) = run_node("--test", &["tickwire.test.mjs"]);
    assert!(ok, "tickwire.js unit tests failed:\n{output}");
    assert!(output.contains("# fail 0"), "{output}");
}

#[test]
fn js_client_over_udp() {
    require_node();
    let server = ServerProc::start(&["--dev-tokens", "--max-players", "8"]);
    let http = server.metrics_addr.unwrap().to_string();
    let (ok, output) = run_node("udp-harness.mjs", &["--http", &http]);
    assert!(ok, "the JS client failed over UDP:\n{output}");
    assert!(output.contains("\nok: connected"), "{output}");
}

#[test]
fn two_browser_pages_see_each_other_move() {
    require_node();
    let chromium =
        std::env::var("TICKWIRE_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    require(Path::new(&chromium).exists(), &chromium);
    require(
        web_dir()
            .join("tests/node_modules/playwright-core/package.json")
            .exists(),
        "crates/server/web/tests/node_modules/playwright-core",
    );
    // The arena: every entity is a player, so each page's snapshots hold the other player.
    let server = ServerProc::start(&["--dev-tokens", "--max-players", "8", "--game", "arena"]);
    let base = format!("http://{}", server.metrics_addr.unwrap());
    let (ok, output) = run_node("browser.mjs", &["--base", &base, "--chromium", &chromium]);
    assert!(
        ok,
        "two /play pages did not both connect and see each other move (the states the pages \
         reached are in the script's FAIL line):\n{output}"
    );
}
