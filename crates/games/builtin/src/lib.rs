//! tickwire-games: the games built into the `tickwire` binary.
//!
//! The server shell knows games only through this list (`tickwire serve --list-games`). A
//! studio's own server binary passes its own list to `tickwire::main_with_games` instead (see
//! `examples/` and docs/games.md).
#![forbid(unsafe_code)]

use tickwire_game::GameEntry;

/// Every built-in game; the first is the default (`server.game`).
pub fn builtin() -> Vec<GameEntry> {
    vec![tickwire_arena::entry(), tickwire_tag::entry()]
}

#[cfg(test)]
mod tests {
    #[test]
    fn names_are_unique_and_valid() {
        let games = super::builtin();
        for (i, g) in games.iter().enumerate() {
            assert!(!g.name.is_empty() && g.name.len() <= tickwire_game::MAX_GAME_NAME);
            assert!(g
                .name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_'));
            assert!(games[i + 1..].iter().all(|o| o.name != g.name));
        }
    }
}
