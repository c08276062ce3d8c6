//! A uniform grid of players, rebuilt every step by counting sort into flat arrays allocated
//! up front. Cell sides are powers of two; a cell is at least as wide as any contact reach, so
//! the 3x3 block of cells around a point holds every player that can touch it.

/// Player ids bucketed by cell; each cell's ids are in ascending order.
#[derive(Debug)]
pub(crate) struct Grid {
    shift: u32,
    cols: i32,
    rows: i32,
    /// `start[c]..start[c + 1]` indexes `ids` for cell `c`; length cells + 1.
    start: Vec<u32>,
    ids: Vec<u32>,
    /// Scratch: the cell of each inserted player, in insertion order.
    cell_of: Vec<u32>,
}

impl Grid {
    /// A grid over `[0, side]^2` with cells of at least `min_cell` units, capped at about a
    /// million cells, with room for `capacity` players.
    pub(crate) fn new(side: i32, min_cell: i64, capacity: usize) -> Self {
        let min_cell = min_cell.max((side / 1024) as i64).max(1) as u64;
        let shift = min_cell.next_power_of_two().trailing_zeros().min(30);
        let cols = (side >> shift) + 1;
        let rows = cols;
        let cells = cols as usize * rows as usize;
        Grid {
            shift,
            cols,
            rows,
            start: vec![0; cells + 1],
            ids: Vec::with_capacity(capacity),
            cell_of: Vec::with_capacity(capacity),
        }
    }

    #[inline]
    fn coords(&self, x: i32, y: i32) -> (i32, i32) {
        (
            (x >> self.shift).clamp(0, self.cols - 1),
            (y >> self.shift).clamp(0, self.rows - 1),
        )
    }

    /// Rebuilds from `(id, x, y)`, given in ascending id order.
    pub(crate) fn rebuild(&mut self, players: impl Iterator<Item = (u32, i32, i32)> + Clone) {
        self.start.iter_mut().for_each(|s| *s = 0);
        self.cell_of.clear();
        for (_, x, y) in players.clone() {
            let (cx, cy) = self.coords(x, y);
            let c = (cy * self.cols + cx) as usize;
            self.cell_of.push(c as u32);
            self.start[c + 1] += 1;
        }
        for c in 1..self.start.len() {
            self.start[c] += self.start[c - 1];
        }
        self.ids.clear();
        self.ids.resize(self.cell_of.len(), 0);
        // `start[c]` doubles as the write cursor of cell `c`, then is shifted back.
        for ((id, _, _), &c) in players.zip(&self.cell_of) {
            let at = &mut self.start[c as usize];
            self.ids[*at as usize] = id;
            *at += 1;
        }
        for c in (1..self.start.len()).rev() {
            self.start[c] = self.start[c - 1];
        }
        self.start[0] = 0;
    }

    /// Calls `f` with every player id in the 3x3 block of cells around `(x, y)`.
    #[inline]
    pub(crate) fn around(&self, x: i32, y: i32, mut f: impl FnMut(u32)) {
        let (cx, cy) = self.coords(x, y);
        for ny in (cy - 1).max(0)..=(cy + 1).min(self.rows - 1) {
            let row = ny * self.cols;
            let lo = self.start[(row + (cx - 1).max(0)) as usize] as usize;
            let hi = self.start[(row + (cx + 1).min(self.cols - 1)) as usize + 1] as usize;
            // Cells of one row are contiguous: the three cells are one slice.
            for &id in &self.ids[lo..hi] {
                f(id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Grid;
    use tickwire_game::SplitMix64;

    #[test]
    fn around_finds_every_point_within_a_cell_side() {
        let side = 100_000;
        let mut g = Grid::new(side, 4000, 3000);
        assert_eq!(g.shift, 12);
        let mut rng = SplitMix64::new(5);
        // Clustered points, some on the border and beyond it (clamped into edge cells).
        let pts: Vec<(u32, i32, i32)> = (0..3000)
            .map(|i| {
                let c = rng.range_i32(0, 3) * 30_000;
                (
                    i,
                    c + rng.range_i32(-2000, 12_000),
                    c + rng.range_i32(-2000, 12_000),
                )
            })
            .collect();
        g.rebuild(pts.iter().copied());
        for _ in 0..500 {
            let (qx, qy) = (rng.range_i32(0, side), rng.range_i32(0, side));
            let mut found = Vec::new();
            g.around(qx, qy, |id| found.push(id));
            let mut sorted = found.clone();
            sorted.sort_unstable();
            sorted.dedup();
            assert_eq!(sorted.len(), found.len(), "each id once");
            for &(id, x, y) in &pts {
                let (dx, dy) = ((x - qx) as i64, (y - qy) as i64);
                if dx * dx + dy * dy <= 4096 * 4096 {
                    assert!(sorted.binary_search(&id).is_ok(), "{id} near {qx},{qy}");
                }
            }
        }
    }
}
