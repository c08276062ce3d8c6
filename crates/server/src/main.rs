//! The `tickwire` binary: the server shell with the built-in games.
//!
//! A studio's own server is this file with its own list of games (see `examples/` and
//! docs/games.md).
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    tickwire::main_with_games(tickwire_games::builtin())
}
