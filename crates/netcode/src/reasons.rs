//! Why packets are dropped, connections denied and sessions ended, plus the server counters.
//! Every reason has a stable snake_case name used as a Prometheus label.

macro_rules! labelled_enum {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $variant:ident => $label:literal,)+ }) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vm])* $variant,)+
        }

        impl $name {
            /// Every variant, in `index()` order.
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];
            /// Number of variants.
            pub const COUNT: usize = Self::ALL.len();

            /// Stable snake_case label.
            pub fn as_str(&self) -> &'static str {
                match self {
                    $($name::$variant => $label,)+
                }
            }

            /// Dense index in `0..COUNT` (position in `ALL`).
            pub fn index(&self) -> usize {
                *self as usize
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

labelled_enum! {
    /// Why an incoming packet was ignored.
    DropReason {
        /// Empty, under 18 bytes, or shorter than prefix + sequence + tag.
        TooSmall => "too_small",
        /// Datagram over `MAX_PACKET_BYTES`, or a payload over `MAX_PAYLOAD_BYTES`.
        TooLarge => "too_large",
        /// Sequence-byte count outside 1..=8, or an encrypted packet with type 0.
        BadPrefix => "bad_prefix",
        /// Packet type 7..=15.
        UnknownType => "unknown_type",
        /// Connection request with the wrong length, version or protocol id.
        BadRequest => "bad_request",
        /// Connect token expire timestamp <= now.
        TokenExpired => "token_expired",
        /// Private connect token failed to decrypt or parse.
        TokenInvalid => "token_invalid",
        /// None of the token's server addresses is ours.
        TokenWrongServer => "token_wrong_server",
        /// This token (by its MAC) was already used from another address.
        TokenReused => "token_reused",
        /// Encrypted packet failed authentication (wrong key, tampered, wrong prefix).
        DecryptFailed => "decrypt_failed",
        /// Sequence already received or older than the replay window.
        Replayed => "replayed",
        /// Encrypted packet from an address with no session and no pending handshake.
        UnknownAddress => "unknown_address",
        /// Challenge token in a response failed to decrypt.
        ChallengeInvalid => "challenge_invalid",
        /// Packet type this side never accepts (or not in the current state).
        UnexpectedType => "unexpected_type",
        /// Per-type data of the wrong size.
        Malformed => "malformed",
        /// Request or response from an address or client id that is already connected.
        AlreadyConnected => "already_connected",
        /// Request or response carrying a connect token (identified by its MAC) whose session
        /// has already ended: a replayed handshake, or a client reusing a spent token instead
        /// of fetching a fresh one. A spent token is refused until it expires.
        TokenRetired => "token_retired",
    }
}

labelled_enum! {
    /// Why a connection-denied packet was sent.
    DenyReason {
        /// All client slots are taken.
        ServerFull => "server_full",
        /// `set_accepting(false)`: the server is draining.
        NotAccepting => "draining",
    }
}

/// Why a session ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DisconnectReason {
    /// No packet within the token's timeout.
    TimedOut,
    /// The peer sent a disconnect packet.
    ClientDisconnected,
    /// The server (or, client side, the application) ended it.
    ServerDisconnected,
    /// The stream connection (TCP or WebSocket) that carried the session closed.
    LinkClosed,
}

impl DisconnectReason {
    /// Stable snake_case label.
    pub fn as_str(&self) -> &'static str {
        match self {
            DisconnectReason::TimedOut => "timed_out",
            DisconnectReason::ClientDisconnected => "client_disconnected",
            DisconnectReason::ServerDisconnected => "server_disconnected",
            DisconnectReason::LinkClosed => "link_closed",
        }
    }
}

impl std::fmt::Display for DisconnectReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Server counters (monotonic). `drops[r.index()]`, `denies[r.index()]`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServerStats {
    /// Dropped packets by reason.
    pub drops: [u64; DropReason::COUNT],
    /// Connection-denied packets sent, by reason.
    pub denies: [u64; DenyReason::COUNT],
    /// Clients that completed the handshake.
    pub connects: u64,
    /// Sessions ended (any reason).
    pub disconnects: u64,
    /// Datagrams handed to `handle_packet`.
    pub packets_in: u64,
    /// Bytes handed to `handle_packet`.
    pub bytes_in: u64,
    /// Datagrams passed to `tx`.
    pub packets_out: u64,
    /// Bytes passed to `tx`.
    pub bytes_out: u64,
    /// Encrypted packets that arrived from an address whose session ended moments ago (within
    /// [`RECENT_DISCONNECT_WINDOW`](crate::server::RECENT_DISCONNECT_WINDOW)), such as the
    /// redundant disconnect packets a leaving client sends after the first one ended its
    /// session. They are ignored without being decrypted. Benign churn, so deliberately not a
    /// drop: they are not in `drops` nor in `total_drops()`.
    pub late_after_disconnect: u64,
}

impl ServerStats {
    /// Drops counted under `r`.
    pub fn dropped(&self, r: DropReason) -> u64 {
        self.drops[r.index()]
    }
    /// Denies counted under `r`.
    pub fn denied(&self, r: DenyReason) -> u64 {
        self.denies[r.index()]
    }
    /// All drops.
    pub fn total_drops(&self) -> u64 {
        self.drops.iter().sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_and_indices() {
        for (i, r) in DropReason::ALL.iter().enumerate() {
            assert_eq!(r.index(), i);
            assert!(r
                .as_str()
                .chars()
                .all(|c| c.is_ascii_lowercase() || c == '_'));
        }
        assert_eq!(DropReason::COUNT, 17);
        assert_eq!(DropReason::TokenRetired.as_str(), "token_retired");
        assert_eq!(DenyReason::NotAccepting.as_str(), "draining");
        assert_eq!(DenyReason::ServerFull.as_str(), "server_full");
        assert_eq!(DenyReason::COUNT, 2);
    }
}
