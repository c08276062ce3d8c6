//! `my-game`: the whole Tickwire server (CLI, config, metrics, A2S, Agones, drain, recording,
//! replay) serving the game of this crate. `my-game serve`, `my-game token`, `my-game replay
//! FILE`, ... behave exactly as `tickwire ...` does.
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    tickwire::main_with_games(vec![my_game::entry()])
}
