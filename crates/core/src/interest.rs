//! Interest management: the `k` entities nearest to a point, for any game.
//!
//! Each tick the game hands the core a flat list of entities (`ids[i]`, `xs[i]`, `ys[i]`);
//! [`Interest::rebuild`] indexes them and [`Interest::nearest`] then answers, once per viewer,
//! "which `k` entities does this viewer see, in which order": the viewer's own entity first
//! (if it has one), then the others by ascending squared distance from the viewer's point, ties
//! by ascending id (and, should two entities share an id, by ascending index). The answer is
//! exactly the one a brute-force sort of every entity by `(d2, id, index)` gives.
//!
//! ```
//! use tickwire_core::interest::Interest;
//! let ids = [10, 11, 12, 13];
//! let xs = [0, 5, -3, 100];
//! let ys = [0, 0, 0, 100];
//! let mut index = Interest::new();
//! index.rebuild(&ids, &xs, &ys);
//! let mut out = Vec::new();
//! // Viewer is entity 0 (id 10), standing at (0, 0), sees 3 entities.
//! index.nearest(0, 0, Some(0), 3, &mut out);
//! assert_eq!(out, [0, 2, 1]); // itself, then d2 = 9, then d2 = 25
//! ```
//!
//! # Technique
//!
//! A uniform grid over the entities' bounding box, trimmed of the `n / 64` outermost entities on
//! each side (those are kept in the border cells, so a stray entity far away cannot stretch the
//! cells over empty space), with power-of-two square cells sized so a cell holds about 2-8
//! entities on average (at most ~1M cells), rebuilt by counting sort into flat arrays: a
//! rebuild is `O(n + cells)` and allocates only when the index grows. Cells are
//! stored row-major and each cell's entities contiguously, so a horizontal run of cells is one
//! contiguous slice.
//!
//! A query scans square rings of cells around the query's cell until it has `k` candidates
//! strictly nearer than the nearest point outside the scanned block (nothing unscanned can then
//! displace them, nor tie with them). Up to 512 candidates, when every squared distance fits in
//! 55 bits, the candidates are selected and sorted as plain `u64` keys `d2 << 9 | slot` in a stack
//! buffer (`select_nth_unstable` then sorting only the `k` chosen), and runs of equal distance are
//! then put in id order, including a run that straddles the cut. Otherwise (clusters of more
//! than 512 candidates, coordinates spread over more than ~2^27) a general path selects with
//! 128-bit distances. Neither allocates anything but `out`.
//!
//! Costs grow with how unevenly entities are spread: a dense cluster far from the rest makes
//! its cells crowded (many candidates per query) and the gaps empty (many cells per ring).
//! Roughly uniform layouts are the fast case.

/// Index bits of the fast-path keys `d2 << FAST_BITS | slot`.
const FAST_BITS: u32 = 9;
/// Most candidates the fast path handles (a 4 KiB stack buffer of keys).
const FAST_CAP: usize = 1 << FAST_BITS;
const FAST_MASK: u64 = FAST_CAP as u64 - 1;
/// Squared distances must be below this for the fast path.
const FAST_D2_LIMIT: u128 = 1 << (64 - FAST_BITS);
/// Most grid cells, whatever the layout.
const MAX_CELLS: u64 = 1 << 20;
/// The grid has at most `n / MIN_PER_CELL` cells: mean occupancy between 2 and 8 (cells are
/// powers of two, so the side can only change by factors of two).
const MIN_PER_CELL: u64 = 2;

/// One entity as stored in its grid cell.
#[derive(Clone, Copy, Debug, Default)]
struct Item {
    x: i32,
    y: i32,
    /// Index into the slices given to [`Interest::rebuild`].
    idx: u32,
}

/// Reusable index over one tick's entity positions.
///
/// Create once, then per tick call [`rebuild`](Interest::rebuild) once and
/// [`nearest`](Interest::nearest) any number of times. Its tables only grow: after the first
/// few ticks a rebuild allocates nothing.
#[derive(Debug)]
pub struct Interest {
    /// The grid's origin (bottom-left of cell (0, 0)).
    origin_x: i64,
    origin_y: i64,
    /// log2 of the cell side (0..=32).
    shift: u32,
    /// Grid size in cells (each at least 1).
    cols: i64,
    rows: i64,
    /// Bounding box of all entities: `min_x, min_y, max_x, max_y`.
    bbox: [i64; 4],
    /// `start[c]..start[c + 1]` indexes `items` for cell `c` (row-major); length `cells + 1`.
    start: Vec<u32>,
    /// Entities grouped by cell, in index order within a cell.
    items: Vec<Item>,
    /// Copy of the ids, by index (tie-breaking).
    ids: Vec<u32>,
    /// Scratch: the cell of each entity, by index.
    cell_of: Vec<u32>,
    /// Scratch: coordinates, for the trimmed extent.
    coords: Vec<i32>,
}

impl Default for Interest {
    fn default() -> Self {
        Self::new()
    }
}

impl Interest {
    /// An empty index (every query answers nothing but the viewer's own entity).
    pub fn new() -> Self {
        Interest {
            origin_x: 0,
            origin_y: 0,
            shift: 0,
            cols: 1,
            rows: 1,
            bbox: [0; 4],
            start: vec![0, 0],
            items: Vec::new(),
            ids: Vec::new(),
            cell_of: Vec::new(),
            coords: Vec::new(),
        }
    }

    /// Entities in the index (the `n` of the last rebuild).
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// True if the last rebuild had no entities.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Rebuilds the index for this tick: entity `i` (in `0..n`) has id `ids[i]` and position
    /// `(xs[i], ys[i])`, anywhere in `i32`. Queries answer indices into these slices. Ids need
    /// not be unique or sorted; they only order entities at equal distance.
    ///
    /// `O(n + cells)`; allocates only when `n` (or the cell count) exceeds every earlier
    /// rebuild's.
    ///
    /// # Panics
    /// If the three slices differ in length, or `n >= u32::MAX`.
    pub fn rebuild(&mut self, ids: &[u32], xs: &[i32], ys: &[i32]) {
        let n = ids.len();
        assert!(
            xs.len() == n && ys.len() == n,
            "Interest::rebuild: ids, xs and ys differ in length"
        );
        assert!(
            n < u32::MAX as usize,
            "Interest::rebuild: too many entities"
        );
        self.ids.clear();
        self.ids.extend_from_slice(ids);
        self.items.clear();
        self.cell_of.clear();
        if n == 0 {
            (self.origin_x, self.origin_y, self.bbox) = (0, 0, [0; 4]);
            (self.shift, self.cols, self.rows) = (0, 1, 1);
            self.start.clear();
            self.start.extend_from_slice(&[0, 0]);
            return;
        }

        let (min_x, max_x) = min_max(xs);
        let (min_y, max_y) = min_max(ys);
        self.bbox = [min_x, min_y, max_x, max_y].map(i64::from);
        // The grid covers all but the ~1.5% outermost entities on each side (they go to the
        // border cells), so a few outliers cannot stretch the cells over empty space.
        let (lo_x, hi_x) = trimmed_extent(xs, (min_x, max_x), &mut self.coords);
        let (lo_y, hi_y) = trimmed_extent(ys, (min_y, max_y), &mut self.coords);
        self.origin_x = lo_x as i64;
        self.origin_y = lo_y as i64;
        let span_x = hi_x as i64 - lo_x as i64;
        let span_y = hi_y as i64 - lo_y as i64;
        self.shift = cell_shift(span_x as u64, span_y as u64, n);
        self.cols = (span_x >> self.shift) + 1;
        self.rows = (span_y >> self.shift) + 1;
        let cells = (self.cols * self.rows) as usize;

        // Counting sort. Count into start[c]; the inclusive prefix sum makes start[c] the end of
        // cell c; placing entities in reverse index order, each decrementing its cell's cursor,
        // leaves start[c] at the beginning of cell c with the cell in ascending index order.
        self.start.clear();
        self.start.resize(cells + 1, 0);
        let (ox, oy, shift) = (self.origin_x, self.origin_y, self.shift);
        let (cols, rows) = (self.cols, self.rows);
        for (&x, &y) in xs.iter().zip(ys) {
            let cx = ((x as i64 - ox) >> shift).clamp(0, cols - 1);
            let cy = ((y as i64 - oy) >> shift).clamp(0, rows - 1);
            let c = (cy * cols + cx) as usize;
            self.cell_of.push(c as u32);
            self.start[c] += 1;
        }
        let mut acc = 0u32;
        for s in &mut self.start[..cells] {
            acc += *s;
            *s = acc;
        }
        self.start[cells] = n as u32;
        self.items.resize(n, Item::default());
        for i in (0..n).rev() {
            let at = &mut self.start[self.cell_of[i] as usize];
            *at -= 1;
            self.items[*at as usize] = Item {
                x: xs[i],
                y: ys[i],
                idx: i as u32,
            };
        }
    }

    /// Clears `out`, then writes the indices (into the last rebuild's slices) of up to `k`
    /// entities nearest to the point `(x, y)`:
    ///
    /// - if `first` is `Some(i)`, index `i` comes first (the viewer's own entity, wherever it
    ///   is) and is not repeated;
    /// - then the others by ascending squared distance from `(x, y)`, ties by ascending id, then
    ///   by ascending index.
    ///
    /// `out` gets `min(k, n)` entries (`k` counts `first`). Allocates only to grow `out`.
    ///
    /// # Panics
    /// If `first` is `Some(i)` with `i >= n`.
    pub fn nearest(&self, x: i32, y: i32, first: Option<u32>, k: usize, out: &mut Vec<u32>) {
        out.clear();
        if k == 0 {
            return;
        }
        let n = self.items.len();
        let skip = match first {
            Some(i) => {
                assert!(
                    (i as usize) < n,
                    "Interest::nearest: first index {i} out of range (n = {n})"
                );
                out.push(i);
                i
            }
            // Never an index: n < u32::MAX.
            None => u32::MAX,
        };
        let want = k - out.len();
        let total = n - out.len();
        if want == 0 || total == 0 {
            return;
        }
        if self.max_d2(x, y) < FAST_D2_LIMIT {
            let mut fast = Fast::new(x, y);
            if self.collect(x, y, skip, want, total, &mut fast) {
                fast.finish(want, &self.ids, out);
                return;
            }
        }
        let base = out.len();
        let mut general = General {
            qx: x as i64,
            qy: y as i64,
            items: &self.items,
            base,
            out,
        };
        let done = self.collect(x, y, skip, want, total, &mut general);
        debug_assert!(done, "the general collector never overflows");
        general.finish(want, &self.ids);
    }

    /// Largest squared distance from `(x, y)` to any point of the bounding box.
    fn max_d2(&self, x: i32, y: i32) -> u128 {
        let [min_x, min_y, max_x, max_y] = self.bbox;
        let (x, y) = (x as i64, y as i64);
        let dx = (x - min_x).unsigned_abs().max((x - max_x).unsigned_abs()) as u128;
        let dy = (y - min_y).unsigned_abs().max((y - max_y).unsigned_abs()) as u128;
        dx * dx + dy * dy
    }

    /// Feeds `c` every candidate (all entities but `skip`) that can be among the `want` nearest
    /// to `(x, y)`, scanning rings of cells until `want` of them lie strictly nearer than any
    /// unscanned entity. Returns false if `c` overflowed.
    fn collect<C: Collector>(
        &self,
        x: i32,
        y: i32,
        skip: u32,
        want: usize,
        total: usize,
        c: &mut C,
    ) -> bool {
        if want >= total {
            return c.add(0, &self.items, skip);
        }
        let (cols, rows, shift) = (self.cols, self.rows, self.shift);
        let qx = x as i64 - self.origin_x;
        let qy = y as i64 - self.origin_y;
        let cx = (qx >> shift).clamp(0, cols - 1);
        let cy = (qy >> shift).clamp(0, rows - 1);
        let max_r = cx.max(cols - 1 - cx).max(cy).max(rows - 1 - cy);
        for r in 0..=max_r {
            let (x0, x1) = ((cx - r).max(0), (cx + r).min(cols - 1));
            let (y0, y1) = (cy - r, cy + r);
            if y0 >= 0 && !self.scan_row(y0, x0, x1, skip, c) {
                return false;
            }
            if r > 0 {
                if y1 < rows && !self.scan_row(y1, x0, x1, skip, c) {
                    return false;
                }
                for ny in (y0 + 1).max(0)..=(y1 - 1).min(rows - 1) {
                    if cx - r >= 0 && !self.scan_row(ny, cx - r, cx - r, skip, c) {
                        return false;
                    }
                    if cx + r < cols && !self.scan_row(ny, cx + r, cx + r, skip, c) {
                        return false;
                    }
                }
            }
            let found = c.len();
            if found >= total {
                break;
            }
            if found < want {
                continue;
            }
            // Distance from the query to the nearest point outside the scanned block, over the
            // sides with cells beyond them. Entities clamped into a border cell lie beyond it,
            // so the bound holds for them too.
            let mut bound = i64::MAX;
            if cx - r > 0 {
                bound = bound.min(qx - ((cx - r) << shift));
            }
            if cx + r < cols - 1 {
                bound = bound.min(((cx + r + 1) << shift) - qx);
            }
            if cy - r > 0 {
                bound = bound.min(qy - ((cy - r) << shift));
            }
            if cy + r < rows - 1 {
                bound = bound.min(((cy + r + 1) << shift) - qy);
            }
            let bound = bound.max(0) as u128;
            if c.inside(bound * bound) >= want {
                break;
            }
        }
        true
    }

    /// Feeds `c` the entities of cells `x0..=x1` of row `y` (one contiguous slice).
    #[inline]
    fn scan_row<C: Collector>(&self, y: i64, x0: i64, x1: i64, skip: u32, c: &mut C) -> bool {
        let row = y * self.cols;
        let a = self.start[(row + x0) as usize] as usize;
        let b = self.start[(row + x1 + 1) as usize] as usize;
        c.add(a, &self.items[a..b], skip)
    }
}

/// Minimum and maximum of a non-empty slice.
fn min_max(v: &[i32]) -> (i32, i32) {
    v.iter()
        .fold((i32::MAX, i32::MIN), |(lo, hi), &x| (lo.min(x), hi.max(x)))
}

/// The range of `v` without its `len / 64` lowest and highest values (`(min, max)` is the
/// full range, given).
fn trimmed_extent(v: &[i32], (min, max): (i32, i32), scratch: &mut Vec<i32>) -> (i32, i32) {
    let trim = v.len() / 64;
    if trim == 0 {
        return (min, max);
    }
    scratch.clear();
    scratch.extend_from_slice(v);
    let (_, &mut lo, above) = scratch.select_nth_unstable(trim);
    // `above` holds the len - trim - 1 values ranked after `lo`.
    let hi = *above.select_nth_unstable(above.len() - 1 - trim).1;
    (lo, hi)
}

/// log2 of the smallest power-of-two cell side that covers a `span_x` by `span_y` box with at
/// most `max(n / MIN_PER_CELL, 1)` cells (and at most `MAX_CELLS`).
fn cell_shift(span_x: u64, span_y: u64, n: usize) -> u32 {
    let budget = (n as u64 / MIN_PER_CELL).clamp(1, MAX_CELLS);
    (0..32)
        .find(|&s| ((span_x >> s) + 1).saturating_mul((span_y >> s) + 1) <= budget)
        .unwrap_or(32)
}

/// Receives the candidates of one query.
trait Collector {
    /// Adds `items` (which start at slot `first_slot` of the grid's item table), except the one
    /// with index `skip`. False if out of room.
    fn add(&mut self, first_slot: usize, items: &[Item], skip: u32) -> bool;
    /// Candidates so far.
    fn len(&self) -> usize;
    /// Candidates so far with squared distance `< bound2`.
    fn inside(&self, bound2: u128) -> usize;
}

/// Fast path: up to `FAST_CAP` candidates with squared distances below `FAST_D2_LIMIT`, as
/// `u64` keys `d2 << FAST_BITS | slot` in stack buffers.
struct Fast {
    qx: i64,
    qy: i64,
    n: usize,
    keys: [u64; FAST_CAP],
    /// Entity index of each candidate slot.
    cand: [u32; FAST_CAP],
}

impl Fast {
    fn new(x: i32, y: i32) -> Self {
        Fast {
            qx: x as i64,
            qy: y as i64,
            n: 0,
            keys: [0; FAST_CAP],
            cand: [0; FAST_CAP],
        }
    }

    /// Appends the `want` nearest candidates (all, if fewer) to `out` in order.
    fn finish(&mut self, want: usize, ids: &[u32], out: &mut Vec<u32>) {
        let n = self.n;
        let take = want.min(n);
        if take == 0 {
            return;
        }
        let cand = &self.cand;
        let keys = &mut self.keys[..n];
        let d2 = |kv: u64| kv >> FAST_BITS;
        if n > take {
            keys.select_nth_unstable(take - 1);
        }
        // Does the run of distance d2(keys[take - 1]) continue past the cut?
        let last = d2(keys[take - 1]);
        let straddles = keys[take..].iter().any(|&kv| d2(kv) == last);
        keys[..take].sort_unstable();
        let tie_order = |kv: &u64| {
            let i = cand[(kv & FAST_MASK) as usize];
            (ids[i as usize], i)
        };
        let mut run = 0;
        for i in 1..=take {
            if i < take && d2(keys[i]) == d2(keys[run]) {
                continue;
            }
            if i == take && straddles {
                // Gather the whole run (it is the last: everything past the cut is >= it)
                // behind the cut, then order it by id; the first ones make the cut.
                let mut end = take;
                for j in take..n {
                    if d2(keys[j]) == last {
                        keys.swap(j, end);
                        end += 1;
                    }
                }
                keys[run..end].sort_unstable_by_key(tie_order);
            } else if i - run > 1 {
                keys[run..i].sort_unstable_by_key(tie_order);
            }
            run = i;
        }
        out.extend(
            keys[..take]
                .iter()
                .map(|&kv| cand[(kv & FAST_MASK) as usize]),
        );
    }
}

impl Collector for Fast {
    #[inline]
    fn add(&mut self, _first_slot: usize, items: &[Item], skip: u32) -> bool {
        for it in items {
            if it.idx == skip {
                continue;
            }
            if self.n == FAST_CAP {
                return false;
            }
            let dx = it.x as i64 - self.qx;
            let dy = it.y as i64 - self.qy;
            let d2 = (dx * dx + dy * dy) as u64;
            self.keys[self.n] = (d2 << FAST_BITS) | self.n as u64;
            self.cand[self.n] = it.idx;
            self.n += 1;
        }
        true
    }

    #[inline]
    fn len(&self) -> usize {
        self.n
    }

    #[inline]
    fn inside(&self, bound2: u128) -> usize {
        if bound2 >= FAST_D2_LIMIT {
            return self.n;
        }
        // d2 < bound2  <=>  key < bound2 << FAST_BITS (bound2 < 2^55: no overflow).
        let lim = (bound2 as u64) << FAST_BITS;
        self.keys[..self.n].iter().filter(|&&kv| kv < lim).count()
    }
}

/// General path: any number of candidates, any distances. Candidates are grid slots pushed
/// onto `out` after its first `base` entries; keys `(d2, id, index)` are computed on the fly.
struct General<'a> {
    qx: i64,
    qy: i64,
    items: &'a [Item],
    base: usize,
    out: &'a mut Vec<u32>,
}

impl General<'_> {
    /// Keeps the `want` nearest candidates in order and turns slots into entity indices.
    fn finish(self, want: usize, ids: &[u32]) {
        let General {
            qx,
            qy,
            items,
            base,
            out,
        } = self;
        let key = |slot: &u32| {
            let it = items[*slot as usize];
            (wide_d2(it, qx, qy), ids[it.idx as usize], it.idx)
        };
        if out.len() - base > want {
            out[base..].select_nth_unstable_by_key(want - 1, key);
            out.truncate(base + want);
        }
        out[base..].sort_unstable_by_key(key);
        for s in &mut out[base..] {
            *s = items[*s as usize].idx;
        }
    }
}

/// Squared distance from `(qx, qy)` to `it`, exact for any `i32` positions.
#[inline]
fn wide_d2(it: Item, qx: i64, qy: i64) -> u128 {
    let dx = (it.x as i64 - qx).unsigned_abs() as u128;
    let dy = (it.y as i64 - qy).unsigned_abs() as u128;
    dx * dx + dy * dy
}

impl Collector for General<'_> {
    fn add(&mut self, first_slot: usize, items: &[Item], skip: u32) -> bool {
        for (j, it) in items.iter().enumerate() {
            if it.idx != skip {
                self.out.push((first_slot + j) as u32);
            }
        }
        true
    }

    fn len(&self) -> usize {
        self.out.len() - self.base
    }

    fn inside(&self, bound2: u128) -> usize {
        self.out[self.base..]
            .iter()
            .filter(|&&s| wide_d2(self.items[s as usize], self.qx, self.qy) < bound2)
            .count()
    }
}
