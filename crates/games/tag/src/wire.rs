//! Tag's own encodings: input frames and reliable events (see the crate docs for the layouts).

use tickwire_game::PlayerId;

/// Input direction: none (stand still).
pub const DIR_NONE: u8 = 0;
/// Input direction: north (+y).
pub const DIR_N: u8 = 1;
/// Input direction: north-east.
pub const DIR_NE: u8 = 2;
/// Input direction: east (+x).
pub const DIR_E: u8 = 3;
/// Input direction: south-east.
pub const DIR_SE: u8 = 4;
/// Input direction: south (-y).
pub const DIR_S: u8 = 5;
/// Input direction: south-west.
pub const DIR_SW: u8 = 6;
/// Input direction: west (-x).
pub const DIR_W: u8 = 7;
/// Input direction: north-west.
pub const DIR_NW: u8 = 8;

/// Input byte 1, bit 0: sprint (while stamina lasts).
pub const BUTTON_SPRINT: u8 = 1;

/// Event tag of [`TagEvent::Hello`].
pub const EVENT_HELLO: u8 = 1;
/// Event tag of [`TagEvent::Scores`].
pub const EVENT_SCORES: u8 = 2;
/// Event tag of [`TagEvent::It`].
pub const EVENT_IT: u8 = 3;
/// Event tag of [`TagEvent::Left`].
pub const EVENT_LEFT: u8 = 4;

/// Bytes in a hello event.
pub const HELLO_BYTES: usize = 29;
/// Bytes in an "it" event.
pub const IT_BYTES: usize = 9;
/// Bytes in a "left" event.
pub const LEFT_BYTES: usize = 5;
/// Most `(player, score)` rows in one scores event (a longer table is split over several
/// events): at most `3 + 8 * 128 = 1027` bytes, one datagram's worth.
pub const SCORES_PER_EVENT: usize = 128;
/// [`TagEvent::It`]'s `by` when nobody tagged (the server picked the new "it").
pub const NO_PLAYER: PlayerId = u32::MAX;

/// Encodes one input frame: `direction` is one of `DIR_*` (anything above 8 is sent as
/// [`DIR_NONE`]), `sprint` sets [`BUTTON_SPRINT`].
pub fn encode_input(direction: u8, sprint: bool) -> [u8; 2] {
    let d = if direction <= DIR_NW {
        direction
    } else {
        DIR_NONE
    };
    [d, if sprint { BUTTON_SPRINT } else { 0 }]
}

/// Decodes an input frame as the server reads it: `(direction, sprint)`. A short frame is
/// `(DIR_NONE, false)`; a direction above 8 is [`DIR_NONE`]; extra bytes and unknown button
/// bits are ignored.
pub fn decode_input(frame: &[u8]) -> (u8, bool) {
    match frame {
        [d, b, ..] => (
            if *d <= DIR_NW { *d } else { DIR_NONE },
            b & BUTTON_SPRINT != 0,
        ),
        _ => (DIR_NONE, false),
    }
}

/// The field and rules, as the hello event tells them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hello {
    /// The receiving player's id (their entity id too).
    pub you: PlayerId,
    /// Field width in units (x in `0..=width`).
    pub width: i32,
    /// Field height in units.
    pub height: i32,
    /// Player circle radius.
    pub player_radius: i32,
    /// Coin circle radius.
    pub coin_radius: i32,
    /// Coins on the field at all times.
    pub coins: u16,
    /// Points for tagging someone.
    pub tag_points: u16,
    /// Ticks a tagger (or a newly joined player) cannot be tagged.
    pub immune_ticks: u16,
    /// "It" loses one point every this many ticks.
    pub it_cost_ticks: u16,
}

/// A decoded server event (see the crate docs for the byte layouts).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TagEvent {
    /// Sent to a player when they join.
    Hello(Hello),
    /// Score rows `(player, score)` to set, ascending by player.
    Scores(Vec<(PlayerId, i32)>),
    /// `it` is now "it"; `by` tagged them ([`NO_PLAYER`] when the server picked them).
    It {
        /// The new "it".
        it: PlayerId,
        /// The tagger, or [`NO_PLAYER`].
        by: PlayerId,
    },
    /// The player left: drop their score row.
    Left(PlayerId),
}

/// Encodes a hello event.
pub fn encode_hello(h: &Hello) -> [u8; HELLO_BYTES] {
    let mut b = [0u8; HELLO_BYTES];
    b[0] = EVENT_HELLO;
    b[1..5].copy_from_slice(&h.you.to_le_bytes());
    b[5..9].copy_from_slice(&h.width.to_le_bytes());
    b[9..13].copy_from_slice(&h.height.to_le_bytes());
    b[13..17].copy_from_slice(&h.player_radius.to_le_bytes());
    b[17..21].copy_from_slice(&h.coin_radius.to_le_bytes());
    b[21..23].copy_from_slice(&h.coins.to_le_bytes());
    b[23..25].copy_from_slice(&h.tag_points.to_le_bytes());
    b[25..27].copy_from_slice(&h.immune_ticks.to_le_bytes());
    b[27..29].copy_from_slice(&h.it_cost_ticks.to_le_bytes());
    b
}

/// Encodes an "it" event.
pub fn encode_it(it: PlayerId, by: PlayerId) -> [u8; IT_BYTES] {
    let mut b = [0u8; IT_BYTES];
    b[0] = EVENT_IT;
    b[1..5].copy_from_slice(&it.to_le_bytes());
    b[5..9].copy_from_slice(&by.to_le_bytes());
    b
}

/// Encodes a "left" event.
pub fn encode_left(player: PlayerId) -> [u8; LEFT_BYTES] {
    let mut b = [0u8; LEFT_BYTES];
    b[0] = EVENT_LEFT;
    b[1..5].copy_from_slice(&player.to_le_bytes());
    b
}

/// Encodes one scores event into `out` (cleared first). `rows` must hold at most
/// [`SCORES_PER_EVENT`] rows; more are cut (callers split longer tables).
pub fn encode_scores(rows: &[(PlayerId, i32)], out: &mut Vec<u8>) {
    let rows = &rows[..rows.len().min(SCORES_PER_EVENT)];
    out.clear();
    out.push(EVENT_SCORES);
    out.extend_from_slice(&(rows.len() as u16).to_le_bytes());
    for &(p, s) in rows {
        out.extend_from_slice(&p.to_le_bytes());
        out.extend_from_slice(&s.to_le_bytes());
    }
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Decodes one server event; `None` for an unknown tag or a wrong length (a client should
/// ignore such events: a newer server version may add tags).
pub fn decode_event(b: &[u8]) -> Option<TagEvent> {
    match *b.first()? {
        EVENT_HELLO if b.len() == HELLO_BYTES => Some(TagEvent::Hello(Hello {
            you: u32_at(b, 1),
            width: u32_at(b, 5) as i32,
            height: u32_at(b, 9) as i32,
            player_radius: u32_at(b, 13) as i32,
            coin_radius: u32_at(b, 17) as i32,
            coins: u16_at(b, 21),
            tag_points: u16_at(b, 23),
            immune_ticks: u16_at(b, 25),
            it_cost_ticks: u16_at(b, 27),
        })),
        EVENT_SCORES if b.len() >= 3 => {
            let n = u16_at(b, 1) as usize;
            if b.len() != 3 + 8 * n {
                return None;
            }
            Some(TagEvent::Scores(
                b[3..]
                    .chunks_exact(8)
                    .map(|r| (u32_at(r, 0), u32_at(r, 4) as i32))
                    .collect(),
            ))
        }
        EVENT_IT if b.len() == IT_BYTES => Some(TagEvent::It {
            it: u32_at(b, 1),
            by: u32_at(b, 5),
        }),
        EVENT_LEFT if b.len() == LEFT_BYTES => Some(TagEvent::Left(u32_at(b, 1))),
        _ => None,
    }
}
