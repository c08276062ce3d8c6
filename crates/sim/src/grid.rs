//! Uniform grid over the arena, rebuilt by counting sort into flat arrays.
//!
//! Items of one cell are contiguous in `items` and keep slot (id) order, so iteration order is
//! a pure function of the positions: deterministic. Everything is allocated up front for
//! `max_players`; a rebuild is O(players + cells) with no allocation. Cell sides are powers of
//! two so a cell index is a shift, not a division.

/// log2 of the smallest power of two `>= min_cell` (at least 1).
pub(crate) fn cell_shift(min_cell: i64) -> u32 {
    (min_cell.max(1) as u64)
        .next_power_of_two()
        .trailing_zeros()
        .min(30)
}

/// One entity as stored in a grid cell: its id and its position at rebuild time.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Item {
    pub(crate) id: u32,
    pub(crate) x: i32,
    pub(crate) y: i32,
}

#[derive(Debug)]
pub(crate) struct Grid {
    pub(crate) shift: u32,
    pub(crate) cols: i32,
    pub(crate) rows: i32,
    /// `start[c]..start[c + 1]` indexes `items` for cell `c`; length cells + 1.
    start: Vec<u32>,
    items: Vec<Item>,
    /// Scratch: the cell of each inserted item, in insertion order.
    cell_of: Vec<u32>,
}

impl Grid {
    pub(crate) fn new(width: i32, height: i32, shift: u32, capacity: usize) -> Self {
        let cols = (width >> shift) + 1;
        let rows = (height >> shift) + 1;
        let cells = cols as usize * rows as usize;
        Grid {
            shift,
            cols,
            rows,
            start: vec![0; cells + 1],
            items: Vec::with_capacity(capacity),
            cell_of: Vec::with_capacity(capacity),
        }
    }

    #[inline]
    pub(crate) fn coords(&self, x: i32, y: i32) -> (i32, i32) {
        (
            (x >> self.shift).clamp(0, self.cols - 1),
            (y >> self.shift).clamp(0, self.rows - 1),
        )
    }

    #[inline]
    pub(crate) fn cell_items(&self, cx: i32, cy: i32) -> &[Item] {
        let c = (cy * self.cols + cx) as usize;
        &self.items[self.start[c] as usize..self.start[c + 1] as usize]
    }

    /// Rebuilds from `(id, x, y)` triples (given in id order for a canonical layout).
    pub(crate) fn rebuild(&mut self, entities: impl Iterator<Item = Item> + Clone) {
        self.start.iter_mut().for_each(|s| *s = 0);
        self.cell_of.clear();
        for e in entities.clone() {
            let (cx, cy) = self.coords(e.x, e.y);
            let c = (cy * self.cols + cx) as usize;
            self.cell_of.push(c as u32);
            self.start[c + 1] += 1;
        }
        for c in 1..self.start.len() {
            self.start[c] += self.start[c - 1];
        }
        let n = self.cell_of.len();
        self.items.clear();
        self.items.resize(n, Item::default());
        // Place using start[c] as a cursor, then shift the starts back one cell.
        for (e, &c) in entities.zip(self.cell_of.iter()) {
            let at = &mut self.start[c as usize];
            self.items[*at as usize] = e;
            *at += 1;
        }
        for c in (1..self.start.len()).rev() {
            self.start[c] = self.start[c - 1];
        }
        self.start[0] = 0;
    }
}

/// Static index of the walls: each wall is listed in every cell its AABB, grown by the player
/// radius, overlaps, so a player's centre cell lists every wall the player can touch.
#[derive(Debug)]
pub(crate) struct WallGrid {
    shift: u32,
    cols: i32,
    rows: i32,
    start: Vec<u32>,
    items: Vec<u32>,
}

impl WallGrid {
    pub(crate) fn new(width: i32, height: i32, shift: u32, walls: &[crate::Wall], r: i32) -> Self {
        let cols = (width >> shift) + 1;
        let rows = (height >> shift) + 1;
        let cells = cols as usize * rows as usize;
        let span = |w: &crate::Wall| {
            let x0 = ((w.min_x - r) >> shift).clamp(0, cols - 1);
            let x1 = ((w.max_x + r) >> shift).clamp(0, cols - 1);
            let y0 = ((w.min_y - r) >> shift).clamp(0, rows - 1);
            let y1 = ((w.max_y + r) >> shift).clamp(0, rows - 1);
            (x0, x1, y0, y1)
        };
        let mut start = vec![0u32; cells + 1];
        for w in walls {
            let (x0, x1, y0, y1) = span(w);
            for cy in y0..=y1 {
                for cx in x0..=x1 {
                    start[(cy * cols + cx) as usize + 1] += 1;
                }
            }
        }
        for c in 1..start.len() {
            start[c] += start[c - 1];
        }
        let mut items = vec![0u32; start[cells] as usize];
        let mut cursor = start.clone();
        for (i, w) in walls.iter().enumerate() {
            let (x0, x1, y0, y1) = span(w);
            for cy in y0..=y1 {
                for cx in x0..=x1 {
                    let c = (cy * cols + cx) as usize;
                    items[cursor[c] as usize] = i as u32;
                    cursor[c] += 1;
                }
            }
        }
        WallGrid {
            shift,
            cols,
            rows,
            start,
            items,
        }
    }

    /// Indices of the walls a player centred at `(x, y)` could touch.
    #[inline]
    pub(crate) fn candidates(&self, x: i32, y: i32) -> &[u32] {
        let cx = (x >> self.shift).clamp(0, self.cols - 1);
        let cy = (y >> self.shift).clamp(0, self.rows - 1);
        let c = (cy * self.cols + cx) as usize;
        &self.items[self.start[c] as usize..self.start[c + 1] as usize]
    }
}
