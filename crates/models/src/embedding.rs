//! From a batch of encoded slots to the dense embedding matrix, and back (gradients to rows).
//!
//! One table per vocabulary (fields that `share_embedding` use their owner's table). A
//! categorical field looks up one row; a sequence field averages the rows of its non-padding
//! ids (FuxiCTR's masked average pooling); a numeric field scales a single learned vector by
//! its value. Fields may have their own `embedding_dim`. A text field's row is its frozen
//! sentence vector (a non-trainable table, `<field>.text`) times a learned projection (the
//! field's table, one row per vector dimension).
//!
//! A model that attends over a sequence (DIN) asks for it unpooled instead
//! ([`FeatureEmbedding::with_positions`]: one row per position, padding as zeros) and for its
//! padding mask ([`FeatureEmbedding::padding_mask`]: 1 where a position holds an id).

use rand::Rng;
use rayon::prelude::*;
use recforge_data::{Batch, FeatureMap, FieldKind};
use recforge_nn::kernels::prefetch;
use recforge_nn::{EmbeddingTable, OptimizerKind, RowGrads, Tensor};

/// FuxiCTR's default embedding initializer: N(0, 1e-4).
pub const EMBEDDING_INIT_STD: f32 = 1e-4;

/// Tables up to this many rows collect gradients through a direct row index (a few hundred KB
/// per batch, cheaper than hashing); larger ones hash, so a step stays O(batch).
pub const DIRECT_INDEX_MAX_ROWS: usize = 1 << 16;

#[derive(Clone, Debug)]
pub struct FeatureEmbedding {
    /// Name prefix in checkpoints.
    pub name: String,
    /// Embedding size per field.
    pub dims: Vec<usize>,
    /// Table per field (fields sharing a vocabulary point at the same table).
    pub table_of_field: Vec<usize>,
    pub tables: Vec<EmbeddingTable>,
    /// Field names of the tables (the owner field), for checkpoint keys.
    pub table_names: Vec<String>,
    /// For a text field's projection table, the index of its frozen vectors table.
    text_of_table: Vec<Option<usize>>,
    /// Column where each field's embedding starts in an output row.
    out_offsets: Vec<usize>,
    /// Rows each field contributes: 1, or `max_len` for a sequence embedded per position.
    positions: Vec<usize>,
    /// A padding-mask output (no tables): the listed sequence fields' positions, 1 or 0.
    mask_of: Vec<usize>,
    width: usize,
    kinds: Vec<FieldKind>,
    offsets: Vec<usize>,
}

impl FeatureEmbedding {
    /// `dims[i]` is field `i`'s embedding size (0 leaves the field out); fields sharing a
    /// vocabulary must agree on it.
    pub fn new(
        name: &str,
        fmap: &FeatureMap,
        dims: &[usize],
        opt: OptimizerKind,
        rng: &mut impl Rng,
    ) -> Result<Self, String> {
        let mut tables: Vec<EmbeddingTable> = Vec::new();
        let mut table_names = Vec::new();
        let mut owner_table = vec![usize::MAX; fmap.fields.len()];
        let mut table_of_field = Vec::new();
        let mut text_of_table = Vec::new();
        for (i, f) in fmap.fields.iter().enumerate() {
            let owner = f.vocab_owner;
            if dims[i] == 0 {
                // a field this embedding leaves out (a model's context subset)
                table_of_field.push(usize::MAX);
                continue;
            }
            let shared_dim = match owner_table[owner] {
                usize::MAX => (dims[owner] > 0).then_some(dims[owner]),
                t => Some(tables[t].dim),
            };
            if let Some(want) = shared_dim.filter(|&w| w != dims[i]) {
                return Err(format!(
                    "field `{}` shares the embedding of `{}` but has embedding_dim {} instead of \
                        {want}",
                    f.spec.name, fmap.fields[owner].spec.name, dims[i]
                ));
            }
            if owner_table[owner] == usize::MAX {
                let spec = &fmap.fields[owner].spec;
                let text_dim = if spec.text {
                    Some(fmap.fields[owner].text_dim.ok_or_else(|| {
                        format!(
                            "text field `{}` has no encoded vectors (encode the text fields \
                             before building the model)",
                            spec.name
                        )
                    })?)
                } else {
                    None
                };
                let rows = match (&spec.kind, text_dim) {
                    (_, Some(p)) => p,
                    (FieldKind::Numeric, _) => 1,
                    _ => fmap.vocabs[owner].size(),
                };
                let mut t = EmbeddingTable::new(rows, dims[i], EMBEDDING_INIT_STD, opt, rng);
                if rows == 1 {
                    // a numeric field's vector is not a padding row: initialize it like the rest
                    t.weight
                        .iter_mut()
                        .for_each(|w| *w = rng.gen_range(-1.0..1.0) * EMBEDDING_INIT_STD);
                }
                tables.push(t);
                table_names.push(fmap.fields[owner].spec.name.clone());
                text_of_table.push(None);
                owner_table[owner] = tables.len() - 1;
                if let Some(p) = text_dim {
                    // filled by `set_text_vectors` or from a checkpoint; never updated
                    let mut v = EmbeddingTable::new(fmap.vocabs[owner].size(), p, 0.0, opt, rng);
                    v.weight.fill(0.0);
                    tables.push(v);
                    table_names.push(format!("{}.text", fmap.fields[owner].spec.name));
                    text_of_table.push(None);
                    let n = tables.len();
                    text_of_table[n - 2] = Some(n - 1);
                }
            }
            table_of_field.push(owner_table[owner]);
        }
        let mut e = FeatureEmbedding {
            name: name.to_string(),
            dims: dims.to_vec(),
            table_of_field,
            tables,
            table_names,
            text_of_table,
            out_offsets: Vec::new(),
            positions: vec![1; dims.len()],
            mask_of: Vec::new(),
            width: 0,
            kinds: fmap.fields.iter().map(|f| f.spec.kind.clone()).collect(),
            offsets: fmap.fields.iter().map(|f| f.offset).collect(),
        };
        e.lay_out();
        Ok(e)
    }

    /// Places the fields' columns side by side.
    fn lay_out(&mut self) {
        let widths: Vec<usize> = (0..self.dims.len())
            .map(|i| self.dims[i] * self.positions[i])
            .collect();
        self.out_offsets = widths
            .iter()
            .scan(0, |acc, &w| Some(std::mem::replace(acc, *acc + w)))
            .collect();
        self.width = widths.iter().sum();
    }

    /// The same embedding with the sequence fields `fields` given one row per position
    /// (`max_len · dim` columns, padding positions zero) instead of their masked average.
    pub fn with_positions(mut self, fields: &[usize]) -> Result<Self, String> {
        for &f in fields {
            match self.kinds.get(f) {
                Some(FieldKind::Sequence { max_len, .. }) => self.positions[f] = *max_len,
                _ => return Err(format!("field {f} is not a sequence field")),
            }
        }
        self.lay_out();
        Ok(self)
    }

    /// The padding mask of the sequence fields `fields`: `[batch × Σ max_len]`, 1 where a
    /// position holds an id and 0 where it is padding. It has no tables and takes no gradient.
    pub fn padding_mask(name: &str, fmap: &FeatureMap, fields: &[usize]) -> Result<Self, String> {
        let n = fmap.fields.len();
        let mut positions = vec![0; n];
        for &f in fields {
            match fmap.fields.get(f).map(|x| &x.spec.kind) {
                Some(FieldKind::Sequence { max_len, .. }) => positions[f] = *max_len,
                _ => return Err(format!("field {f} is not a sequence field")),
            }
        }
        let mut e = FeatureEmbedding {
            name: name.to_string(),
            dims: positions.iter().map(|&p| (p > 0) as usize).collect(),
            table_of_field: vec![usize::MAX; n],
            tables: Vec::new(),
            table_names: Vec::new(),
            text_of_table: Vec::new(),
            out_offsets: Vec::new(),
            positions,
            mask_of: fields.to_vec(),
            width: 0,
            kinds: fmap.fields.iter().map(|f| f.spec.kind.clone()).collect(),
            offsets: fmap.fields.iter().map(|f| f.offset).collect(),
        };
        e.lay_out();
        Ok(e)
    }

    pub fn num_fields(&self) -> usize {
        self.kinds.len()
    }

    /// Whether this is a padding mask ([`FeatureEmbedding::padding_mask`]) rather than embeddings.
    pub fn is_padding_mask(&self) -> bool {
        !self.mask_of.is_empty()
    }

    /// Columns of the output: the sum of the fields' embedding sizes.
    pub fn width(&self) -> usize {
        self.width
    }

    /// The columns of field `field` in an output row (empty for a field left out).
    pub fn columns(&self, field: usize) -> std::ops::Range<usize> {
        self.out_offsets[field]..self.out_offsets[field] + self.dims[field] * self.positions[field]
    }

    /// `[batch × Σ dims]`, field-major within a row.
    pub fn forward(&self, batch: &Batch) -> Tensor {
        let w = self.width;
        let mut out = Tensor::zeros(batch.size, w);
        const ROWS_PER_TASK: usize = 256;
        let plan = self.lookup_plan();
        out.data
            .par_chunks_mut(w * ROWS_PER_TASK)
            .enumerate()
            .for_each(|(chunk, rows)| {
                let first = chunk * ROWS_PER_TASK;
                match &plan {
                    Some(plan) => self.lookup_rows(plan, batch, first, rows),
                    None => {
                        for (k, orow) in rows.chunks_exact_mut(w).enumerate() {
                            self.embed_row(batch.row(first + k), orow);
                        }
                    }
                }
            });
        out
    }

    /// When every field is a plain categorical lookup (the usual CTR embedding), each field's
    /// (table, slot, first output column); `None` otherwise.
    fn lookup_plan(&self) -> Option<Vec<Lookup>> {
        if !self.mask_of.is_empty() {
            return None;
        }
        let mut plan = Vec::with_capacity(self.kinds.len());
        for (i, kind) in self.kinds.iter().enumerate() {
            if self.dims[i] == 0 {
                continue;
            }
            let table = self.table_of_field[i];
            if *kind != FieldKind::Categorical || self.text_of_table[table].is_some() {
                return None;
            }
            plan.push(Lookup {
                table,
                slot: self.offsets[i],
                column: self.out_offsets[i],
            });
        }
        Some(plan)
    }

    /// The rows `first..` of the output (`out` holds whole rows) by `plan`. The next row's
    /// table rows are prefetched while this one is copied: the lookups are cache misses into
    /// tables of tens of megabytes, and there is little else to overlap them with.
    fn lookup_rows(&self, plan: &[Lookup], batch: &Batch, first: usize, out: &mut [f32]) {
        let w = self.width;
        for (k, orow) in out.chunks_exact_mut(w).enumerate() {
            let r = first + k;
            if r + 1 < batch.size {
                let next = batch.row(r + 1);
                for l in plan {
                    prefetch(self.tables[l.table].row(next[l.slot]));
                }
            }
            let slots = batch.row(r);
            for l in plan {
                let t = &self.tables[l.table];
                copy_row(&mut orow[l.column..l.column + t.dim], t.row(slots[l.slot]));
            }
        }
    }

    fn embed_row(&self, slots: &[u32], orow: &mut [f32]) {
        for &f in &self.mask_of {
            let off = self.offsets[f];
            let ids = &slots[off..off + self.positions[f]];
            let o = &mut orow[self.columns(f)];
            o.iter_mut()
                .zip(ids)
                .for_each(|(o, &id)| *o = (id != 0) as u8 as f32);
        }
        if !self.mask_of.is_empty() {
            return;
        }
        for (i, kind) in self.kinds.iter().enumerate() {
            if self.dims[i] == 0 {
                continue;
            }
            let t = &self.tables[self.table_of_field[i]];
            let o = &mut orow[self.columns(i)];
            let off = self.offsets[i];
            match kind {
                FieldKind::Categorical => match self.text_of_table[self.table_of_field[i]] {
                    // the frozen vector times the projection
                    Some(vt) => {
                        o.fill(0.0);
                        let v = self.tables[vt].row(slots[off]);
                        for (p, &x) in v.iter().enumerate() {
                            if x != 0.0 {
                                o.iter_mut()
                                    .zip(t.row(p as u32))
                                    .for_each(|(o, w)| *o += x * w);
                            }
                        }
                    }
                    None => copy_row(o, t.row(slots[off])),
                },
                FieldKind::Numeric => {
                    let x = f32::from_bits(slots[off]);
                    o.iter_mut().zip(t.row(0)).for_each(|(o, w)| *o = x * w);
                }
                FieldKind::Sequence { max_len, .. } if self.positions[i] > 1 => {
                    // one row per position; padding (id 0) stays zero
                    let ids = &slots[off..off + max_len];
                    for (o, &id) in o.chunks_exact_mut(self.dims[i]).zip(ids) {
                        if id == 0 {
                            o.fill(0.0);
                        } else {
                            copy_row(o, t.row(id));
                        }
                    }
                }
                FieldKind::Sequence { max_len, .. } => {
                    let ids = &slots[off..off + max_len];
                    let n = ids.iter().filter(|&&id| id != 0).count();
                    if n > 0 {
                        for &id in ids.iter().filter(|&&id| id != 0) {
                            o.iter_mut().zip(t.row(id)).for_each(|(o, w)| *o += w);
                        }
                        let inv = 1.0 / n as f32;
                        o.iter_mut().for_each(|v| *v *= inv);
                    }
                }
            }
        }
    }

    /// Sums the output gradient into per-table row gradients (tables in parallel; within a
    /// table, fields in order then rows in order, so the result is deterministic).
    pub fn backward(&self, batch: &Batch, grad: &Tensor) -> Vec<RowGrads> {
        let w = self.width;
        (0..self.tables.len())
            .into_par_iter()
            .map(|t| {
                let (rows, d) = (self.tables[t].rows, self.tables[t].dim);
                let mut rg = if rows <= DIRECT_INDEX_MAX_ROWS {
                    RowGrads::direct(d, rows)
                } else {
                    RowGrads::new(d)
                };
                for (i, kind) in self
                    .kinds
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| self.table_of_field[*i] == t)
                {
                    let off = self.offsets[i];
                    let span = self.columns(i);
                    for (r, grow) in grad.data.chunks_exact(w).enumerate() {
                        let g = &grow[span.clone()];
                        let slots = batch.row(r);
                        match kind {
                            FieldKind::Categorical => match self.text_of_table[t] {
                                Some(vt) => {
                                    let v = self.tables[vt].row(slots[off]);
                                    for (p, &x) in v.iter().enumerate() {
                                        if x != 0.0 {
                                            rg.add(p as u32, g, x);
                                        }
                                    }
                                }
                                None => rg.add(slots[off], g, 1.0),
                            },
                            FieldKind::Numeric => rg.add(0, g, f32::from_bits(slots[off])),
                            FieldKind::Sequence { max_len, .. } if self.positions[i] > 1 => {
                                let ids = &slots[off..off + max_len];
                                for (gp, &id) in g.chunks_exact(self.dims[i]).zip(ids) {
                                    if id != 0 {
                                        rg.add(id, gp, 1.0);
                                    }
                                }
                            }
                            FieldKind::Sequence { max_len, .. } => {
                                let ids = &slots[off..off + max_len];
                                let n = ids.iter().filter(|&&id| id != 0).count();
                                for &id in ids.iter().filter(|&&id| id != 0) {
                                    rg.add(id, g, 1.0 / n as f32);
                                }
                            }
                        }
                    }
                }
                rg
            })
            .collect()
    }

    /// Sets the frozen vectors of text field `field` (`[vocabulary rows × dim]`, row `i` the
    /// vector of the vocabulary's row `i`). Returns whether this embedding has that field.
    pub fn set_text_vectors(&mut self, field: &str, vectors: &Tensor) -> Result<bool, String> {
        let Some(t) = self.table_names.iter().position(|n| n == field) else {
            return Ok(false);
        };
        let Some(vt) = self.text_of_table[t] else {
            return Err(format!("field `{field}` is not a text field"));
        };
        let table = &mut self.tables[vt];
        if (vectors.rows, vectors.cols) != (table.rows, table.dim) {
            return Err(format!(
                "text field `{field}`: vectors are {}x{}, the table is {}x{}",
                vectors.rows, vectors.cols, table.rows, table.dim
            ));
        }
        table.weight.copy_from_slice(&vectors.data);
        Ok(true)
    }

    /// Empty gradients, one per table (when the tape produced none).
    pub fn no_grads(&self) -> Vec<RowGrads> {
        self.tables.iter().map(|t| RowGrads::new(t.dim)).collect()
    }

    /// Learned values (frozen text vectors not counted).
    pub fn num_values(&self) -> usize {
        let frozen: Vec<usize> = self.text_of_table.iter().flatten().copied().collect();
        self.tables
            .iter()
            .enumerate()
            .filter(|(i, _)| !frozen.contains(i))
            .map(|(_, t)| t.weight.len())
            .sum()
    }
}

/// One field of a [`FeatureEmbedding::lookup_plan`].
struct Lookup {
    table: usize,
    slot: usize,
    column: usize,
}

/// `dst.copy_from_slice(src)` for one embedding row. The common widths are copied as fixed-size
/// arrays, which compile to a few vector moves: a row copy is the whole of the gather, and a
/// `memmove` call per 16-value row (39 fields × 4096 rows a batch) cost more than the copying.
#[inline(always)]
fn copy_row(dst: &mut [f32], src: &[f32]) {
    #[inline(always)]
    fn fixed<const N: usize>(dst: &mut [f32], src: &[f32]) -> bool {
        match (<&mut [f32; N]>::try_from(dst), <&[f32; N]>::try_from(src)) {
            (Ok(d), Ok(s)) => {
                *d = *s;
                true
            }
            _ => false,
        }
    }
    let done = match dst.len() {
        1 => fixed::<1>(dst, src),
        4 => fixed::<4>(dst, src),
        8 => fixed::<8>(dst, src),
        16 => fixed::<16>(dst, src),
        32 => fixed::<32>(dst, src),
        64 => fixed::<64>(dst, src),
        _ => false,
    };
    if !done {
        dst.copy_from_slice(src);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    #[test]
    fn the_lookup_path_copies_each_fields_row_as_the_general_path_does() {
        let sizes = [10, 7, 30, 5];
        // widths with and without a fixed-size copy, and a field left out
        let dims = [16, 0, 3, 1];
        let mut rng = StdRng::seed_from_u64(5);
        let e = FeatureEmbedding::new(
            "e",
            &FeatureMap::numbered_categorical("t", &sizes),
            &dims,
            OptimizerKind::adam(),
            &mut rng,
        )
        .unwrap();
        assert!(e.lookup_plan().is_some());
        let size = 600; // more than one parallel block of 256 rows
        let slots: Vec<u32> = (0..size)
            .flat_map(|_| sizes.map(|n| rng.gen_range(0..n) as u32))
            .collect();
        let batch = Batch {
            size,
            width: sizes.len(),
            labels: vec![0.0; size],
            slots,
        };
        let got = e.forward(&batch);
        assert_eq!(got.shape(), (size, 20));
        let mut want = vec![0.0f32; e.width()];
        for r in 0..size {
            e.embed_row(batch.row(r), &mut want);
            assert_eq!(got.row(r), &want[..], "row {r}");
            // field 2's columns hold its table's row
            let t = &e.tables[e.table_of_field[2]];
            assert_eq!(&got.row(r)[e.columns(2)], t.row(batch.row(r)[2]));
        }
    }
}
