//! `serve --record FILE` with bots playing, then `tickwire replay FILE`: every tick's state hash
//! matches, for every built-in game; a tampered recording is refused naming the tick.

mod support;

use std::process::Command;

use support::{ServerProc, Swarm, GUARD};

fn replay(file: &std::path::Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_tickwire"))
        .arg("replay")
        .arg(file)
        .output()
        .expect("run tickwire replay")
}

/// Records a live run of `game` with bots joining, playing and some leaving; returns the file.
fn record(game: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("tickwire-record-{}-{game}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("run.twrec");
    let path = file.to_str().unwrap();
    let mut server = ServerProc::start(&[
        "--io-model",
        "epoll",
        "--io-fallback",
        "blocking",
        "--game",
        game,
        "--max-players",
        "32",
        "--seed",
        "77",
        "--record",
        path,
    ]);
    let n = 8;
    let mut swarm = Swarm::new(&server, n);
    swarm.run(GUARD, true, &mut |s| s.connected() == n);
    assert_eq!(swarm.connected(), n, "{game}: all bots connected");
    // Play until every bot's inputs were applied (not for a fixed time).
    swarm.run(GUARD, true, &mut |s| {
        s.bots.iter().all(|b| b.last_applied > 0)
    });
    // A few leave mid-run (leaves are recorded too); the others play on.
    let mut leavers = swarm.bots.split_off(n - 3);
    for bot in &mut leavers {
        let link = &mut bot.link;
        bot.client.disconnect(&mut |to, b| link.send(to, b));
    }
    // The others play on: until each has seen more than 60 ticks (one snapshot a tick), so
    // the recording holds more than 60 ticks however slow the machine.
    swarm.run(GUARD, true, &mut |s| {
        s.bots.iter().all(|b| b.snapshots > 70)
    });
    assert!(
        swarm
            .bots
            .iter()
            .all(|b| b.last_applied > 0 && b.snapshots > 70),
        "{game}: inputs applied"
    );
    let status = server.terminate(GUARD);
    assert!(status.success(), "{game}: exit status {status:?}");
    file
}

#[test]
fn live_recordings_replay_with_every_hash_matching() {
    for game in ["arena", "tag"] {
        let file = record(game);
        let out = replay(&file);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{game}: replay failed: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let last = stdout.lines().last().unwrap_or_default();
        let ticks: u64 = last
            .strip_prefix("ok: ")
            .and_then(|r| r.split(' ').next())
            .and_then(|t| t.parse().ok())
            .unwrap_or_else(|| panic!("{game}: last line {last:?}"));
        assert!(ticks > 60, "{game}: {ticks} ticks recorded");
        assert!(last.contains("final hash "), "{game}: {last}");
        assert!(stdout.contains(&format!("game {game} seed 77")), "{stdout}");

        // Tamper with the last step's hash: the replay names that tick and fails.
        let mut bytes = std::fs::read(&file).unwrap();
        let (at, tick) = last_step(&bytes, if game == "arena" { 3 } else { 2 });
        bytes[at + 5] ^= 0x01;
        std::fs::write(&file, &bytes).unwrap();
        let out = replay(&file);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{game}: tampered replay passed");
        assert!(
            stderr.contains(&format!("state hash mismatch at tick {tick}")),
            "{game}: {stderr}"
        );
        let _ = std::fs::remove_dir_all(file.parent().unwrap());
    }
}

/// Offset and tick of the last step record, walking the format of `tickwire_core::record`.
fn last_step(b: &[u8], input_bytes: usize) -> (usize, u32) {
    let u16_at = |i: usize| u16::from_le_bytes([b[i], b[i + 1]]) as usize;
    let mut i = 8; // magic
    i += 2 + u16_at(i); // game name
    i += 2 + 8 + 4 + 2; // version, seed, max_players, tick_ms
    let options = u16_at(i);
    i += 2;
    for _ in 0..2 * options {
        i += 2 + u16_at(i);
    }
    let varint = |i: &mut usize| {
        let mut v = 0u64;
        let mut shift = 0;
        loop {
            let byte = b[*i];
            *i += 1;
            v |= u64::from(byte & 0x7F) << shift;
            shift += 7;
            if byte & 0x80 == 0 {
                return v;
            }
        }
    };
    let mut last = None;
    while i < b.len() {
        let kind = b[i];
        let start = i;
        i += 1;
        match kind {
            1 | 2 => {
                varint(&mut i);
            }
            3 => {
                varint(&mut i);
                i += input_bytes;
            }
            4 => {
                varint(&mut i);
                let len = varint(&mut i) as usize;
                i += len;
            }
            5 => {
                let tick = u32::from_le_bytes(b[i..i + 4].try_into().unwrap());
                last = Some((start, tick));
                i += 12;
            }
            k => panic!("record type {k} at byte {start}"),
        }
    }
    assert_eq!(i, b.len(), "records end with the file");
    last.expect("at least one step")
}

#[test]
fn replay_refuses_what_is_not_a_recording() {
    let dir = std::env::temp_dir().join(format!("tickwire-replay-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("junk");
    std::fs::write(&file, b"definitely not a recording").unwrap();
    let out = replay(&file);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not a Tickwire recording"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = replay(&dir.join("missing"));
    assert!(!out.status.success());
    let _ = std::fs::remove_dir_all(&dir);
}
