//! Placeholder brute-force interest index (replaced by the grid version).

/// Nearest-entity index over one tick's positions.
#[derive(Debug, Default)]
pub struct Interest {
    ids: Vec<u32>,
    xs: Vec<i32>,
    ys: Vec<i32>,
}

impl Interest {
    /// An empty index.
    pub fn new() -> Self {
        Self::default()
    }

    /// Rebuilds for this tick.
    pub fn rebuild(&mut self, ids: &[u32], xs: &[i32], ys: &[i32]) {
        self.ids.clear();
        self.ids.extend_from_slice(ids);
        self.xs.clear();
        self.xs.extend_from_slice(xs);
        self.ys.clear();
        self.ys.extend_from_slice(ys);
    }

    /// Up to `k` indices nearest to (x, y), `first` first.
    pub fn nearest(&self, x: i32, y: i32, first: Option<u32>, k: usize, out: &mut Vec<u32>) {
        out.clear();
        if k == 0 {
            return;
        }
        let mut all: Vec<(u64, u32, u32)> = (0..self.ids.len() as u32)
            .filter(|&i| Some(i) != first)
            .map(|i| {
                let dx = self.xs[i as usize] as i64 - x as i64;
                let dy = self.ys[i as usize] as i64 - y as i64;
                ((dx * dx + dy * dy) as u64, self.ids[i as usize], i)
            })
            .collect();
        all.sort_unstable();
        if let Some(f) = first {
            out.push(f);
        }
        out.extend(all.iter().take(k - out.len()).map(|e| e.2));
    }
}
