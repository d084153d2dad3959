//! Mini-batches over an encoded split, in file order or in a seeded shuffle per epoch.

use crate::cache::EncodedSplit;
use rand::seq::SliceRandom;
use rand::SeedableRng;

/// A batch: labels and the encoded slots (`size × width`, the label column dropped).
#[derive(Clone, Debug, Default)]
pub struct Batch {
    pub size: usize,
    pub width: usize,
    pub labels: Vec<f32>,
    pub slots: Vec<u32>,
}

impl Batch {
    pub fn row(&self, i: usize) -> &[u32] {
        &self.slots[i * self.width..(i + 1) * self.width]
    }

    /// Builds a batch from the given rows of a split.
    pub fn gather(split: &EncodedSplit, rows: impl Iterator<Item = usize>) -> Self {
        let width = split.width - 1;
        let mut b = Batch {
            size: 0,
            width,
            labels: Vec::new(),
            slots: Vec::new(),
        };
        for r in rows {
            let row = split.row(r);
            b.labels.push(f32::from_bits(row[0]));
            b.slots.extend_from_slice(&row[1..]);
            b.size += 1;
        }
        b
    }
}

pub struct BatchIter<'a> {
    split: &'a EncodedSplit,
    order: Option<Vec<u32>>,
    pos: usize,
    end: usize,
    batch_size: usize,
}

impl<'a> BatchIter<'a> {
    /// Batches in file order.
    pub fn sequential(split: &'a EncodedSplit, batch_size: usize) -> Self {
        BatchIter {
            split,
            order: None,
            pos: 0,
            end: split.rows,
            batch_size: batch_size.max(1),
        }
    }

    /// Batches over a permutation of the rows drawn from `seed` (the same seed gives the same
    /// order on any machine).
    pub fn shuffled(split: &'a EncodedSplit, batch_size: usize, seed: u64) -> Self {
        Self::block_shuffled(split, batch_size, seed, 0)
    }

    /// Like [`shuffled`](Self::shuffled), but with `block_rows > 0` the permutation keeps
    /// blocks of that many consecutive rows together (blocks in random order, rows shuffled
    /// within each block). A split larger than memory is then read a block at a time instead
    /// of one random page per row.
    pub fn block_shuffled(
        split: &'a EncodedSplit,
        batch_size: usize,
        seed: u64,
        block_rows: usize,
    ) -> Self {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut order: Vec<u32> = (0..split.rows as u32).collect();
        if block_rows == 0 || block_rows >= split.rows {
            order.shuffle(&mut rng);
        } else {
            let mut blocks: Vec<&mut [u32]> = order.chunks_mut(block_rows).collect();
            blocks.shuffle(&mut rng);
            let mut shuffled = Vec::with_capacity(split.rows);
            for b in blocks {
                b.shuffle(&mut rng);
                shuffled.extend_from_slice(b);
            }
            order = shuffled;
        }
        BatchIter {
            split,
            order: Some(order),
            pos: 0,
            end: split.rows,
            batch_size: batch_size.max(1),
        }
    }

    /// Only the first `n` rows of the order (e.g. a low-label regime or a quick check).
    pub fn limit(mut self, n: usize) -> Self {
        self.end = self.end.min(n);
        self
    }

    pub fn num_batches(&self) -> usize {
        (self.end - self.pos).div_ceil(self.batch_size)
    }
}

impl Iterator for BatchIter<'_> {
    type Item = Batch;

    fn next(&mut self) -> Option<Batch> {
        if self.pos >= self.end {
            return None;
        }
        let hi = (self.pos + self.batch_size).min(self.end);
        let b = match &self.order {
            Some(o) => Batch::gather(self.split, o[self.pos..hi].iter().map(|&r| r as usize)),
            None => Batch::gather(self.split, self.pos..hi),
        };
        self.pos = hi;
        Some(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shuffled_batches_cover_every_row_once_and_repeat_per_seed() {
        let data: Vec<u32> = (0..10u32)
            .flat_map(|i| [(i as f32).to_bits(), i * 10])
            .collect();
        let split = EncodedSplit::from_vec("t", 2, data);
        let seen: Vec<u32> = BatchIter::shuffled(&split, 3, 7)
            .flat_map(|b| b.slots)
            .collect();
        let mut sorted = seen.clone();
        sorted.sort();
        assert_eq!(sorted, (0..10).map(|i| i * 10).collect::<Vec<_>>());
        let again: Vec<u32> = BatchIter::shuffled(&split, 3, 7)
            .flat_map(|b| b.slots)
            .collect();
        assert_eq!(seen, again);
        // block shuffle: every row once, blocks of 4 consecutive rows stay together
        let seen: Vec<u32> = BatchIter::block_shuffled(&split, 3, 7, 4)
            .flat_map(|b| b.slots)
            .collect();
        let mut sorted = seen.clone();
        sorted.sort();
        assert_eq!(sorted, (0..10).map(|i| i * 10).collect::<Vec<_>>());
        // each block's rows form one contiguous run in the order
        let blocks: Vec<u32> = seen.iter().map(|v| v / 40).collect();
        let mut runs = blocks.clone();
        runs.dedup();
        assert_eq!(runs.len(), 3, "{seen:?}");
        let b: Vec<Batch> = BatchIter::sequential(&split, 4).collect();
        assert_eq!(b.len(), 3);
        assert_eq!(b[2].labels, vec![8.0, 9.0]);
    }
}
