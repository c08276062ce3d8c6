//! The browser client's HTTP routes on the real binary: `/play` and its modules, `/token` with
//! and without `--dev-tokens`, and the startup refusal of dev tokens on a non-loopback bind.
//! (The client itself is run by tests/browser.rs.)

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::Duration;

use base64::Engine;
use support::{ServerProc, GUARD, PROTOCOL_ID};
use tickwire_netcode::{ConnectTokenPrivate, ConnectTokenPublic};

/// GET `path`: status, the whole head, body.
fn get(addr: SocketAddr, path: &str) -> (u16, String, String) {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(10)).unwrap();
    s.set_read_timeout(Some(GUARD)).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let (head, body) = resp.split_once("\r\n\r\n").unwrap_or((&resp, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, head.to_owned(), body.to_owned())
}

/// The value of `"name":` in a flat JSON object (a string's contents, or a number).
fn json_field<'a>(json: &'a str, name: &str) -> &'a str {
    let key = format!("\"{name}\":");
    let start = json
        .find(&key)
        .unwrap_or_else(|| panic!("{name} in {json}"))
        + key.len();
    let rest = &json[start..];
    match rest.strip_prefix('"') {
        Some(s) => &s[..s.find('"').unwrap()],
        None => &rest[..rest.find([',', '}']).unwrap()],
    }
}

#[test]
fn play_is_served_and_token_is_404_without_dev_tokens() {
    let server = ServerProc::start(&[]);
    let addr = server.metrics_addr.unwrap();
    let (status, head, body) = get(addr, "/play?bot=1");
    assert_eq!(status, 200, "{head}");
    assert!(
        head.contains("Content-Type: text/html; charset=utf-8"),
        "{head}"
    );
    assert!(head.contains("Cache-Control: no-cache"), "{head}");
    assert!(body.contains("<canvas"), "{body}");
    for module in [
        "/play/play.js",
        "/play/tickwire.js",
        "/play/vendor/noble-ciphers/chacha.js",
    ] {
        let (status, head, body) = get(addr, module);
        assert_eq!(status, 200, "{module}: {head}");
        assert!(
            head.contains("Content-Type: text/javascript; charset=utf-8"),
            "{module}: {head}"
        );
        assert!(
            body.contains("export ") || body.contains("import "),
            "{module}"
        );
    }
    assert_eq!(get(addr, "/play/missing.js").0, 404);
    let (status, _, body) = get(addr, "/token");
    assert_eq!(status, 404, "{body}");
    // The rest of the endpoint is as before.
    assert_eq!(get(addr, "/healthz").0, 200);
}

#[test]
fn dev_tokens_mint_tokens_the_server_accepts() {
    let server = ServerProc::start(&["--dev-tokens"]);
    assert!(
        server
            .startup_log
            .iter()
            .any(|l| l.contains("\"WARN\"") && l.contains("--dev-tokens is ON")),
        "a loud warning at startup: {:#?}",
        server.startup_log
    );
    let addr = server.metrics_addr.unwrap();
    // A loopback request (the only kind this listener can get: the bind is loopback; a remote
    // peer's 403 is proved in the unit tests).
    let (status, head, body) = get(addr, "/token");
    assert_eq!(status, 200, "{head}\n{body}");
    assert!(head.contains("Content-Type: application/json"), "{head}");
    assert!(head.contains("Cache-Control: no-store"), "{head}");
    assert_eq!(
        json_field(&body, "ws"),
        format!("ws://{}/", server.game_addr)
    );
    let token = base64::engine::general_purpose::STANDARD
        .decode(json_field(&body, "token"))
        .unwrap();
    let public = ConnectTokenPublic::read(&token).unwrap();
    assert_eq!(public.protocol_id, PROTOCOL_ID);
    assert_eq!(public.server_addrs, [server.game_addr]);
    assert_eq!(
        public.expire_unix_secs - public.create_unix_secs,
        json_field(&body, "expires_in").parse::<u64>().unwrap()
    );
    let private = ConnectTokenPrivate::decrypt(&public, &server.key).expect("the server's key");
    assert_eq!(
        private.client_id.to_string(),
        json_field(&body, "client_id")
    );
    let (_, _, again) = get(addr, "/token");
    assert_ne!(
        json_field(&again, "client_id"),
        json_field(&body, "client_id"),
        "client ids are unique"
    );

    // And the server takes it: a client connects with it over UDP.
    let mut client = tickwire_client::UdpClient::connect(&token, GUARD).expect("connect");
    let mut welcome = false;
    support::eventually("the welcome", || {
        client.poll(Duration::from_millis(20), &mut |_| {}).unwrap();
        welcome = client.game().welcome().is_some();
        welcome
    });
    client.disconnect();
}

#[test]
fn dev_tokens_are_refused_on_a_non_loopback_bind() {
    let dir = std::env::temp_dir().join(format!("tickwire-web-it-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_tickwire"))
        .args(["serve", "--bind", "127.0.0.1:0", "--dev-tokens"])
        .args(["--metrics-bind", "0.0.0.0:0"])
        .args(["--key-file", dir.join("k.key").to_str().unwrap()])
        .current_dir(&dir)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Validation comes before any socket: it exits at once (the guard only stops a hang).
    let deadline = std::time::Instant::now() + GUARD;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("serve with --dev-tokens on 0.0.0.0 did not exit");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    let created = dir.join("k.key").exists();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(!status.success(), "{stderr}");
    assert!(!created, "nothing was created before the refusal");
    assert!(
        stderr.contains("metrics.dev_tokens = true: refused with metrics.bind = \"0.0.0.0:0\""),
        "{stderr}"
    );
    assert!(stderr.contains("(from --dev-tokens)"), "{stderr}");
}
