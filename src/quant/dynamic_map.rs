//! bitsandbytes' 8-bit "dynamic" quantization map (`create_dynamic_map(signed=True,
//! max_exponent_bits=7, total_bits=8)`), used to double-quantize NF4 absmax values.
//!
//! Reproduced bit for bit: the map is built from `torch.linspace` in f32 (which steps from the
//! start for the first half and from the end for the second, and whose compiled CPU kernel
//! fuses `start + step * i` into one rounding), f32 midpoints, and f32 products with powers of
//! ten; then 0 and 1 are added and the 256 values sorted.

/// `torch.linspace(start, end, steps, dtype=float32)` on the CPU.
fn linspace_f32(start: f32, end: f32, steps: usize) -> Vec<f32> {
    if steps == 1 {
        return vec![start];
    }
    let step = (end - start) / (steps - 1) as f32;
    let halfway = steps / 2;
    (0..steps)
        .map(|i| {
            if i < halfway {
                step.mul_add(i as f32, start)
            } else {
                (-step).mul_add((steps - i - 1) as f32, end)
            }
        })
        .collect()
}

/// The 256 sorted values of the signed dynamic map.
pub fn signed_dynamic_map() -> [f32; 256] {
    const MAX_EXPONENT_BITS: i32 = 7;
    const NON_SIGN_BITS: i32 = 7;
    let mut data: Vec<f32> = Vec::with_capacity(256);
    for i in 0..MAX_EXPONENT_BITS {
        let fraction_items = 2usize.pow((i + NON_SIGN_BITS - MAX_EXPONENT_BITS) as u32) + 1;
        let boundaries = linspace_f32(0.1, 1.0, fraction_items);
        let scale = 10f64.powi(-(MAX_EXPONENT_BITS - 1) + i) as f32;
        for w in boundaries.windows(2) {
            let mean = (w[0] + w[1]) / 2.0;
            data.push(scale * mean);
            data.push(-scale * mean);
        }
    }
    data.push(0.0);
    data.push(1.0);
    assert_eq!(data.len(), 256, "the signed 8-bit map has 256 entries");
    data.sort_by(f32::total_cmp);
    data.try_into().expect("256 entries")
}

/// Index of the map entry nearest to `v` (the lower index on a tie).
pub fn nearest(map: &[f32], v: f32) -> u8 {
    let mut best = 0;
    let mut best_dist = f32::INFINITY;
    for (i, &m) in map.iter().enumerate() {
        let d = (m - v).abs();
        if d < best_dist {
            best = i;
            best_dist = d;
        }
    }
    best as u8
}

/// Cells of bitsandbytes' CPU 8-bit quantizer over [-1, 1].
const CELLS: usize = 65_536;

/// bitsandbytes' CPU 8-bit blockwise quantizer (0.50; how `quantize_blockwise` double-quantizes
/// on a CPU): the normalized value picks one of 65,536 equal cells over [-1, 1],
/// `floor((v + 1) * 32767.5 + 0.5)` with the sum and product in f32, and each cell holds the
/// map entry nearest its centre. It differs from the nearest entry (`nearest`) near the
/// midpoint of two entries, by one step, and within a cell of zero, where the entries are
/// closer together than a cell (0 itself takes the entry nearest 1/32767.5). Established by
/// querying bitsandbytes' own library: identical on 70,000 random values, on every cell centre,
/// and on values placed at cell edges.
pub struct CellTable {
    cells: Vec<u8>,
}

impl CellTable {
    /// The table of a sorted `map` of at most 256 entries.
    pub fn new(map: &[f32]) -> CellTable {
        let mut cells = Vec::with_capacity(CELLS);
        let mut i = 0;
        for j in 0..CELLS {
            let centre = j as f64 / 32767.5 - 1.0;
            let distance = |k: usize| (map[k] as f64 - centre).abs();
            // Centres ascend, so the nearest entry only moves up; a tie keeps the lower.
            while i + 1 < map.len() && distance(i + 1) < distance(i) {
                i += 1;
            }
            cells.push(i as u8);
        }
        CellTable { cells }
    }

    /// The table of the signed dynamic map, built once.
    pub fn signed() -> &'static CellTable {
        static TABLE: std::sync::OnceLock<CellTable> = std::sync::OnceLock::new();
        TABLE.get_or_init(|| CellTable::new(&signed_dynamic_map()))
    }

    /// The code of a normalized value `v` (in [-1, 1]).
    pub fn code(&self, v: f32) -> u8 {
        let t = (v + 1.0) * 32767.5;
        let cell = (t as f64 + 0.5).floor().clamp(0.0, (CELLS - 1) as f64);
        self.cells[cell as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_agree_with_the_nearest_entry_away_from_midpoints_and_zero() {
        let map = signed_dynamic_map();
        let table = CellTable::signed();
        let mut differing = 0;
        for i in 0..=2000 {
            let v = i as f32 / 1000.0 - 1.0;
            if v.abs() < 1e-3 {
                continue;
            }
            let (cell, near) = (table.code(v), nearest(&map, v));
            if cell != near {
                assert_eq!((cell as i32 - near as i32).abs(), 1, "{v}");
                differing += 1;
            }
        }
        assert!(differing < 20, "{differing}");
        assert_eq!(table.code(-1.0), 0);
        assert_eq!(table.code(1.0), 255);
        // The cell of (0, 2/65535) is wider than the entries there: all of it, 0 included,
        // takes the entry nearest its centre, 1/32767.5.
        let centre = 1.0 / 32767.5;
        for v in [0.0, 1e-7, 1e-6, 2e-5] {
            assert_eq!(table.code(v), nearest(&map, centre), "{v}");
        }
        assert_ne!(table.code(1e-6), nearest(&map, 1e-6));
    }
}
