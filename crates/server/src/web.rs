//! The browser client, served by the admin HTTP endpoint (`metrics.bind`):
//!
//! * `GET /play` -> the page (`crates/server/web/play.html`); `GET /play/<file>` -> its ES
//!   modules (`play.js`, `tickwire.js`, the vendored `@noble/ciphers` files). Embedded in the
//!   binary with `include_str!`: nothing is read from disk at run time and no Node.js is needed.
//!   `Cache-Control: no-cache`, so a rebuilt server is picked up on reload.
//! * `GET /token` -> with `--dev-tokens` (`metrics.dev_tokens`), a fresh connect token as JSON
//!   for a loopback peer (403 for any other peer); 404 when dev tokens are off:
//!
//!   ```json
//!   {"token": "<base64 of the 2048-byte token>", "ws": "ws://127.0.0.1:7777/",
//!    "client_id": 4503599627370497, "expires_in": 60}
//!   ```
//!
//!   Minted exactly as `tickwire token` mints them (server key, `auth.protocol_id`, the
//!   advertised game address), with client ids unique in this process (a random base plus a
//!   counter, below 2^53 so JavaScript reads them exactly). Development only: anyone who can
//!   reach the port gets a token, which is why the config refuses it on a non-loopback
//!   `metrics.bind`; in production a backend that authenticates players mints the tokens
//!   (docs/operations.md, "Playing in a browser").

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use tickwire_netcode::{generate_connect_token, Key, TokenParams, USER_DATA_BYTES};

use crate::admin::Response;

/// Lifetime of a dev token: fetched by the page and used at once.
pub const DEV_TOKEN_EXPIRE_SECS: u64 = 60;
/// Connection timeout put in dev tokens: generous, so a page paused in a debugger survives.
pub const DEV_TOKEN_TIMEOUT_SECS: i32 = 30;

const JS: &str = "text/javascript; charset=utf-8";

/// Every file under `/play/`, by path below it: content type and contents.
const FILES: &[(&str, &str, &str)] = &[
    (
        "play.html",
        "text/html; charset=utf-8",
        include_str!("../web/play.html"),
    ),
    ("play.js", JS, include_str!("../web/play.js")),
    ("tickwire.js", JS, include_str!("../web/tickwire.js")),
    (
        "vendor/noble-ciphers/chacha.js",
        JS,
        include_str!("../web/vendor/noble-ciphers/chacha.js"),
    ),
    (
        "vendor/noble-ciphers/_arx.js",
        JS,
        include_str!("../web/vendor/noble-ciphers/_arx.js"),
    ),
    (
        "vendor/noble-ciphers/_poly1305.js",
        JS,
        include_str!("../web/vendor/noble-ciphers/_poly1305.js"),
    ),
    (
        "vendor/noble-ciphers/utils.js",
        JS,
        include_str!("../web/vendor/noble-ciphers/utils.js"),
    ),
    (
        "vendor/noble-ciphers/LICENSE",
        "text/plain; charset=utf-8",
        include_str!("../web/vendor/noble-ciphers/LICENSE"),
    ),
];

/// The answer to a `/play` path (`/play`, `/play/`, `/play/<file>`), or `None` for any other
/// path. An unknown file is a 404.
pub fn play(path: &str) -> Option<Response> {
    let file = match path {
        "/play" | "/play/" => "play.html",
        _ => path.strip_prefix("/play/")?,
    };
    Some(match FILES.iter().find(|(name, _, _)| *name == file) {
        Some((_, content_type, body)) => Response {
            status: 200,
            content_type,
            body: (*body).to_owned(),
            cache_control: Some("no-cache"),
        },
        None => Response::text(404, "not found\n"),
    })
}

/// Where minted tokens send the client: known once the game socket is bound.
#[derive(Debug)]
struct GameAddrs {
    /// Listed in the token (what the server accepts, as `tickwire token` lists it).
    token: SocketAddr,
    /// The WebSocket URL on the game port, for a browser on this machine.
    ws: String,
}

/// The `/token` minter (`--dev-tokens`). Shared between the admin threads.
pub struct DevTokens {
    key: Key,
    protocol_id: u64,
    /// First client id of this process.
    base: u64,
    /// Tokens minted so far.
    minted: AtomicU64,
    game: OnceLock<GameAddrs>,
}

impl std::fmt::Debug for DevTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevTokens")
            .field("protocol_id", &self.protocol_id)
            .field("base", &self.base)
            .field("game", &self.game.get())
            .finish_non_exhaustive()
    }
}

impl DevTokens {
    /// A minter with the server's key and protocol id. Client ids start at a random base in
    /// `2^52..2^52 + 2^51`: unique per process, distinct across restarts with high probability,
    /// and exact as JavaScript numbers.
    pub fn new(key: Key, protocol_id: u64) -> anyhow::Result<Self> {
        let mut bytes = [0u8; 8];
        getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("OS random source: {e}"))?;
        let base = (1 << 52) | (u64::from_le_bytes(bytes) & ((1 << 51) - 1));
        Ok(DevTokens {
            key,
            protocol_id,
            base,
            minted: AtomicU64::new(0),
            game: OnceLock::new(),
        })
    }

    /// Records the game socket: `advertised` goes into tokens, `bound` (with a wildcard IP
    /// replaced by loopback) into the WebSocket URL. The first call wins.
    pub fn set_game_addr(&self, advertised: SocketAddr, bound: SocketAddr) {
        let ip = match bound.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            ip => ip,
        };
        let ws = format!("ws://{}/", SocketAddr::new(ip, bound.port()));
        let _ = self.game.set(GameAddrs {
            token: advertised,
            ws,
        });
    }

    /// Mints one token and renders the `/token` JSON.
    fn mint(&self, now_unix_secs: u64) -> Result<String, String> {
        let game = self
            .game
            .get()
            .ok_or("the game socket is not bound yet; retry in a moment")?;
        let client_id = self
            .base
            .wrapping_add(self.minted.fetch_add(1, Ordering::Relaxed));
        let token = generate_connect_token(&TokenParams {
            protocol_id: self.protocol_id,
            client_id,
            create_unix_secs: now_unix_secs,
            expire_secs: DEV_TOKEN_EXPIRE_SECS,
            timeout_secs: DEV_TOKEN_TIMEOUT_SECS,
            server_addrs: &[game.token],
            user_data: [0; USER_DATA_BYTES],
            private_key: &self.key,
        })
        .map_err(|e| e.to_string())?;
        let token = base64::engine::general_purpose::STANDARD.encode(token);
        // Every value is base64, a URL made from a socket address, or a number: nothing to
        // escape.
        Ok(format!(
            "{{\"token\":\"{token}\",\"ws\":\"{}\",\"client_id\":{client_id},\
             \"expires_in\":{DEV_TOKEN_EXPIRE_SECS}}}\n",
            game.ws
        ))
    }
}

/// The answer to `/token` from `peer`: 404 when dev tokens are off, 403 unless the peer is a
/// loopback address, else a fresh token.
pub fn token(dev: Option<&DevTokens>, peer: Option<IpAddr>) -> Response {
    let Some(dev) = dev else {
        return Response::text(404, "not found\n");
    };
    let loopback = peer.is_some_and(|ip| ip.to_canonical().is_loopback());
    if !loopback {
        return Response::text(403, "dev tokens are for loopback clients only\n");
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    match dev.mint(now) {
        Ok(json) => {
            tracing::debug!("minted a dev connect token");
            Response {
                status: 200,
                content_type: "application/json",
                body: json,
                cache_control: Some("no-store"),
            }
        }
        Err(why) => Response::text(503, &format!("cannot mint a token: {why}\n")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tickwire_netcode::{ConnectTokenPrivate, ConnectTokenPublic};

    const KEY: Key = [7; 32];

    /// The value of `"name":` in a flat JSON object (a string's contents, or a number).
    fn json_field<'a>(json: &'a str, name: &str) -> &'a str {
        let key = format!("\"{name}\":");
        let start = json.find(&key).expect(name) + key.len();
        let rest = &json[start..];
        match rest.strip_prefix('"') {
            Some(s) => &s[..s.find('"').unwrap()],
            None => &rest[..rest.find([',', '}']).unwrap()],
        }
    }

    fn minter() -> DevTokens {
        let dev = DevTokens::new(KEY, 0x1234).unwrap();
        dev.set_game_addr(
            "127.0.0.1:7777".parse().unwrap(),
            "0.0.0.0:7777".parse().unwrap(),
        );
        dev
    }

    #[test]
    fn play_files_are_embedded_with_their_types() {
        let page = play("/play").unwrap();
        assert_eq!(
            (page.status, page.content_type),
            (200, "text/html; charset=utf-8")
        );
        assert!(page.body.contains("/play/play.js"));
        assert_eq!(play("/play/").unwrap().body, page.body);
        for (name, _, _) in FILES {
            let r = play(&format!("/play/{name}")).unwrap();
            assert_eq!(r.status, 200, "{name}");
            assert_eq!(r.cache_control, Some("no-cache"));
        }
        let js = play("/play/tickwire.js").unwrap();
        assert_eq!(js.content_type, JS);
        assert!(js.body.contains("from './vendor/noble-ciphers/chacha.js'"));
        assert_eq!(play("/play/nope.js").unwrap().status, 404);
        assert_eq!(play("/play/../src/lib.rs").unwrap().status, 404);
        assert!(play("/players").is_none());
        assert!(play("/").is_none());
    }

    #[test]
    fn every_import_is_served() {
        // Each relative import in a served module names another served file.
        for (name, _, body) in FILES.iter().filter(|(n, _, _)| n.ends_with(".js")) {
            let dir = name.rsplit_once('/').map_or("", |(d, _)| d);
            for line in body
                .lines()
                .filter(|l| l.trim_start().starts_with("import "))
            {
                let Some(spec) = line.split(['\'', '"']).nth(1) else {
                    continue;
                };
                let rel = spec.strip_prefix("./").expect("relative import");
                let path = if dir.is_empty() {
                    rel.to_owned()
                } else {
                    format!("{dir}/{rel}")
                };
                assert!(
                    FILES.iter().any(|(n, _, _)| *n == path),
                    "{name} imports {spec}, which is not served"
                );
            }
        }
    }

    #[test]
    fn token_off_is_404_and_remote_peers_403() {
        assert_eq!(token(None, Some(Ipv4Addr::LOCALHOST.into())).status, 404);
        let dev = minter();
        for peer in [
            Some("10.1.2.3".parse().unwrap()),
            Some("192.168.0.1".parse().unwrap()),
            Some("::ffff:10.0.0.1".parse().unwrap()),
            Some("2001:db8::1".parse().unwrap()),
            None,
        ] {
            assert_eq!(token(Some(&dev), peer).status, 403, "{peer:?}");
        }
        for peer in ["127.0.0.1", "127.0.0.2", "::1", "::ffff:127.0.0.1"] {
            assert_eq!(
                token(Some(&dev), Some(peer.parse().unwrap())).status,
                200,
                "{peer}"
            );
        }
    }

    #[test]
    fn token_before_the_game_socket_is_bound_is_503() {
        let dev = DevTokens::new(KEY, 1).unwrap();
        assert_eq!(
            token(Some(&dev), Some(Ipv4Addr::LOCALHOST.into())).status,
            503
        );
    }

    #[test]
    fn minted_tokens_decode_with_the_server_key() {
        let dev = minter();
        let mut ids = Vec::new();
        for _ in 0..3 {
            let r = token(Some(&dev), Some(Ipv6Addr::LOCALHOST.into()));
            assert_eq!((r.status, r.content_type), (200, "application/json"));
            assert_eq!(r.cache_control, Some("no-store"));
            assert_eq!(json_field(&r.body, "ws"), "ws://127.0.0.1:7777/");
            assert_eq!(json_field(&r.body, "expires_in"), "60");
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(json_field(&r.body, "token"))
                .unwrap();
            assert_eq!(bytes.len(), 2048);
            let public = ConnectTokenPublic::read(&bytes).unwrap();
            assert_eq!(public.protocol_id, 0x1234);
            assert_eq!(public.expire_unix_secs - public.create_unix_secs, 60);
            assert_eq!(public.timeout_secs, DEV_TOKEN_TIMEOUT_SECS);
            assert_eq!(public.server_addrs, ["127.0.0.1:7777".parse().unwrap()]);
            let private = ConnectTokenPrivate::decrypt(&public, &KEY).unwrap();
            let id: u64 = json_field(&r.body, "client_id").parse().unwrap();
            assert_eq!(private.client_id, id);
            assert!(id < 1 << 53, "client ids are exact JavaScript numbers");
            assert!(ConnectTokenPrivate::decrypt(&public, &[8; 32]).is_err());
            ids.push(id);
        }
        assert_eq!(ids, [ids[0], ids[0] + 1, ids[0] + 2], "unique, counting");
    }

    #[test]
    fn ws_url_names_the_bound_address() {
        let dev = DevTokens::new(KEY, 1).unwrap();
        dev.set_game_addr(
            "203.0.113.9:7000".parse().unwrap(),
            "[::]:7000".parse().unwrap(),
        );
        let r = token(Some(&dev), Some(Ipv4Addr::LOCALHOST.into()));
        assert_eq!(json_field(&r.body, "ws"), "ws://[::1]:7000/");
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(json_field(&r.body, "token"))
            .unwrap();
        let public = ConnectTokenPublic::read(&bytes).unwrap();
        assert_eq!(
            public.server_addrs,
            ["203.0.113.9:7000".parse().unwrap()],
            "tokens list the advertised address, as `tickwire token` does"
        );
    }
}
