//! The send slab every backend shares: `send_queue` slots of `max_datagram` bytes, allocated
//! when the backend opens, filled by `send`, emptied by `flush`.

use std::net::SocketAddr;

use crate::{Config, IoStats, SendError, SocketId};

/// One queued datagram: where it goes and where its bytes are.
#[derive(Clone, Copy, Debug)]
pub(crate) struct TxEntry {
    /// Index of the sending socket.
    pub(crate) socket: u32,
    /// Slot index in the slab; also the queueing order.
    pub(crate) slot: u32,
    pub(crate) peer: SocketAddr,
    pub(crate) len: usize,
}

/// Preallocated send queue.
pub(crate) struct TxSlab {
    slot_bytes: usize,
    slots: usize,
    bytes: Box<[u8]>,
    entries: Vec<TxEntry>,
}

impl TxSlab {
    pub(crate) fn new(cfg: &Config) -> Self {
        TxSlab {
            slot_bytes: cfg.max_datagram,
            slots: cfg.send_queue,
            bytes: vec![0u8; cfg.send_queue * cfg.max_datagram].into_boxed_slice(),
            entries: Vec::with_capacity(cfg.send_queue),
        }
    }

    /// Queues `data` for socket `id` (the caller checked `id` exists). Counts a full queue in
    /// `stats.send_queue_full`.
    pub(crate) fn push(
        &mut self,
        id: SocketId,
        peer: SocketAddr,
        data: &[u8],
        stats: &mut IoStats,
    ) -> Result<(), SendError> {
        if data.len() > self.slot_bytes {
            return Err(SendError::TooLarge);
        }
        if self.entries.len() >= self.slots {
            stats.send_queue_full += 1;
            return Err(SendError::QueueFull);
        }
        let slot = self.entries.len();
        let start = slot * self.slot_bytes;
        self.bytes[start..start + data.len()].copy_from_slice(data);
        self.entries.push(TxEntry {
            socket: id.0,
            slot: slot as u32,
            peer,
            len: data.len(),
        });
        Ok(())
    }

    /// The queued datagrams, in queueing order unless [`TxSlab::sort_by_socket`] ran.
    pub(crate) fn entries(&self) -> &[TxEntry] {
        &self.entries
    }

    /// The bytes of one queued datagram.
    pub(crate) fn data(&self, entry: &TxEntry) -> &[u8] {
        let start = entry.slot as usize * self.slot_bytes;
        &self.bytes[start..start + entry.len]
    }

    /// Groups the queue by socket, keeping queueing order within a socket. Sorts in place
    /// (no allocation); already-grouped queues (one socket) cost a linear scan.
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    pub(crate) fn sort_by_socket(&mut self) {
        self.entries.sort_unstable_by_key(|e| (e.socket, e.slot));
    }

    /// Empties the queue (the slots are reused).
    pub(crate) fn clear(&mut self) {
        self.entries.clear();
    }
}

/// `send`'s checks shared by every backend: unknown socket first, then size and room.
pub(crate) fn queue(
    slab: &mut TxSlab,
    sockets: usize,
    id: SocketId,
    peer: SocketAddr,
    data: &[u8],
    stats: &mut IoStats,
) -> Result<(), SendError> {
    if id.0 as usize >= sockets {
        return Err(SendError::UnknownSocket);
    }
    slab.push(id, peer, data, stats)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slab_bounds_and_order() {
        let cfg = Config {
            max_datagram: 4,
            send_queue: 3,
            ..Config::default()
        };
        let mut slab = TxSlab::new(&cfg);
        let mut stats = IoStats::default();
        let peer: SocketAddr = "127.0.0.1:9".parse().unwrap();
        assert_eq!(
            queue(&mut slab, 2, SocketId(2), peer, b"x", &mut stats),
            Err(SendError::UnknownSocket)
        );
        assert_eq!(
            queue(&mut slab, 2, SocketId(0), peer, b"12345", &mut stats),
            Err(SendError::TooLarge)
        );
        queue(&mut slab, 2, SocketId(1), peer, b"a", &mut stats).unwrap();
        queue(&mut slab, 2, SocketId(0), peer, b"bb", &mut stats).unwrap();
        queue(&mut slab, 2, SocketId(1), peer, b"cccc", &mut stats).unwrap();
        assert_eq!(
            queue(&mut slab, 2, SocketId(0), peer, b"d", &mut stats),
            Err(SendError::QueueFull)
        );
        assert_eq!(stats.send_queue_full, 1);
        slab.sort_by_socket();
        let got: Vec<(u32, Vec<u8>)> = slab
            .entries()
            .iter()
            .map(|e| (e.socket, slab.data(e).to_vec()))
            .collect();
        assert_eq!(
            got,
            vec![
                (0, b"bb".to_vec()),
                (1, b"a".to_vec()),
                (1, b"cccc".to_vec())
            ]
        );
        slab.clear();
        assert!(slab.entries().is_empty());
        queue(&mut slab, 2, SocketId(0), peer, b"e", &mut stats).unwrap();
    }
}
