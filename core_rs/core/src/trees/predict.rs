//! Batch scoring: raw accumulation (float32 models through `flat.rs`; float64 ones by the generic
//! walk below: trees outer, rows inner, in row blocks so a tree stays in cache) and the
//! per-model output transforms, in scikit-learn's order of operations so results
//! are bit-identical or within an ulp.

use super::model::{leaves, Node, Nodes, Thr, TreeMeta, LANES};
use super::{Aggregation, Ensemble, Link, TreeError};

/// f32 values converted per block: the block's rows plus one tree stay in L1/L2 while every
/// tree walks them.
const BLOCK_VALUES: usize = 4096;
/// Inputs up to this many values convert on the stack (no allocation beyond the output).
const SMALL_VALUES: usize = 256;

impl Ensemble {
    /// Raw accumulation per row: n_rows × n_outputs. Forests/isolation: Σ_t leaf_t (not yet
    /// divided); boosting: init + Σ_t scale·leaf_t.
    pub(crate) fn accumulate(&self, x: &[f64], n_rows: usize) -> Result<Vec<f64>, TreeError> {
        self.check_input(x, n_rows)?;
        let n_out = self.n_outputs();
        let mut acc = match &self.info.aggregation {
            Aggregation::Boosting { init, .. } => {
                let mut a = Vec::with_capacity(n_rows * n_out);
                for _ in 0..n_rows {
                    a.extend_from_slice(init);
                }
                a
            }
            _ => vec![0.0; n_rows * n_out],
        };
        let scale = match &self.info.aggregation {
            Aggregation::Boosting { scale, .. } => Some(*scale),
            _ => None,
        };
        if let Some(flat) = &self.flat {
            flat.accumulate(x, &mut acc);
            return Ok(acc);
        }
        let nf = self.n_features();
        let rows_per_block = (BLOCK_VALUES / nf).clamp(1, 256);
        let ctx = Ctx {
            trees: &self.trees,
            leaf_values: &self.leaf_values,
            width: self.info.width,
            n_out,
            scale,
        };
        match &self.nodes {
            Nodes::F64(nodes) => {
                for (xb, ab) in x
                    .chunks(rows_per_block * nf)
                    .zip(acc.chunks_mut(rows_per_block * n_out))
                {
                    ctx.block(nodes, xb, nf, ab);
                }
            }
            Nodes::F32(nodes) => {
                // small calls (one row) convert on the stack; larger ones use one block buffer
                let mut stack_buf = [0f32; SMALL_VALUES];
                let mut heap_buf = Vec::new();
                let need = x.len().min(rows_per_block * nf);
                let buf: &mut [f32] = if need <= SMALL_VALUES {
                    &mut stack_buf
                } else {
                    heap_buf.resize(need, 0.0);
                    &mut heap_buf
                };
                for (xb, ab) in x
                    .chunks(rows_per_block * nf)
                    .zip(acc.chunks_mut(rows_per_block * n_out))
                {
                    // sklearn casts X to float32 (round to nearest, overflow to ±inf)
                    let b = &mut buf[..xb.len()];
                    for (d, &s) in b.iter_mut().zip(xb) {
                        #[allow(clippy::cast_possible_truncation)]
                        {
                            *d = s as f32;
                        }
                    }
                    ctx.block(nodes, b, nf, ab);
                }
            }
        }
        Ok(acc)
    }

    /// Class probabilities, n_rows × n_classes.
    ///
    /// # Errors
    /// Not a classifier, or X has the wrong size.
    pub fn predict_proba(&self, x: &[f64], n_rows: usize) -> Result<Vec<f64>, TreeError> {
        if !self.is_classifier() {
            return Err(self.unsupported("predict_proba"));
        }
        let mut acc = self.accumulate(x, n_rows)?;
        match &self.info.aggregation {
            Aggregation::Mean => {
                #[allow(clippy::cast_precision_loss)]
                let n = self.trees.len() as f64;
                acc.iter_mut().for_each(|v| *v /= n);
                Ok(acc)
            }
            Aggregation::Boosting {
                link: Link::Logistic,
                ..
            } => {
                let mut p = Vec::with_capacity(2 * n_rows);
                for &r in &acc {
                    let p1 = expit(r);
                    p.push(1.0 - p1);
                    p.push(p1);
                }
                Ok(p)
            }
            Aggregation::Boosting {
                link: Link::Softmax,
                ..
            } => {
                let k = self.n_outputs();
                acc.chunks_exact_mut(k).for_each(softmax);
                Ok(acc)
            }
            _ => Err(self.unsupported("predict_proba")),
        }
    }

    /// Predicted values of a regressor, n_rows.
    ///
    /// # Errors
    /// Not a regressor, or X has the wrong size.
    pub fn predict_value(&self, x: &[f64], n_rows: usize) -> Result<Vec<f64>, TreeError> {
        if self.is_classifier() || self.is_isolation() || self.info.width != 1 {
            return Err(self.unsupported("predict_value"));
        }
        let mut acc = self.accumulate(x, n_rows)?;
        match &self.info.aggregation {
            Aggregation::Mean => {
                #[allow(clippy::cast_precision_loss)]
                let n = self.trees.len() as f64;
                acc.iter_mut().for_each(|v| *v /= n);
            }
            Aggregation::Boosting {
                link: Link::Exp, ..
            } => acc.iter_mut().for_each(|v| *v = v.exp()),
            _ => {}
        }
        Ok(acc)
    }

    /// Isolation forest `score_samples` (lower = more abnormal), n_rows.
    ///
    /// # Errors
    /// Not an isolation forest, or X has the wrong size.
    pub fn score_samples(&self, x: &[f64], n_rows: usize) -> Result<Vec<f64>, TreeError> {
        let Aggregation::Isolation {
            average_path_length_max_samples: c,
            ..
        } = self.info.aggregation
        else {
            return Err(self.unsupported("score_samples"));
        };
        let mut acc = self.accumulate(x, n_rows)?;
        #[allow(clippy::cast_precision_loss)]
        let denominator = self.trees.len() as f64 * c;
        for v in &mut acc {
            // sklearn: 2 ** -(depths / denominator), 1 when the denominator is 0; then negated
            let r = if denominator == 0.0 {
                1.0
            } else {
                *v / denominator
            };
            *v = -(2f64.powf(-r));
        }
        Ok(acc)
    }

    /// Isolation forest: `score_samples − offset` (n_rows). Boosting classifiers: raw scores,
    /// n_rows for binary, n_rows × n_classes for multiclass.
    ///
    /// # Errors
    /// Other models, or X has the wrong size.
    pub fn decision_function(&self, x: &[f64], n_rows: usize) -> Result<Vec<f64>, TreeError> {
        match &self.info.aggregation {
            Aggregation::Isolation { offset, .. } => {
                let mut s = self.score_samples(x, n_rows)?;
                s.iter_mut().for_each(|v| *v -= offset);
                Ok(s)
            }
            Aggregation::Boosting { .. } if self.is_classifier() => self.accumulate(x, n_rows),
            _ => Err(self.unsupported("decision_function")),
        }
    }

    /// Predicted class index per row (into the model's classes), as scikit-learn decides it.
    ///
    /// # Errors
    /// Not a classifier, or X has the wrong size.
    pub fn predict_class(&self, x: &[f64], n_rows: usize) -> Result<Vec<usize>, TreeError> {
        match &self.info.aggregation {
            Aggregation::Mean if self.is_classifier() => {
                let p = self.predict_proba(x, n_rows)?;
                Ok(p.chunks_exact(self.n_classes()).map(argmax).collect())
            }
            Aggregation::Boosting {
                link: Link::Logistic,
                zero_is_positive,
                ..
            } => {
                let raw = self.accumulate(x, n_rows)?;
                Ok(raw
                    .iter()
                    .map(|&r| usize::from(if *zero_is_positive { r >= 0.0 } else { r > 0.0 }))
                    .collect())
            }
            Aggregation::Boosting {
                link: Link::Softmax,
                ..
            } => {
                let raw = self.accumulate(x, n_rows)?;
                Ok(raw.chunks_exact(self.n_outputs()).map(argmax).collect())
            }
            _ => Err(self.unsupported("predict_class")),
        }
    }

    /// Isolation forest `predict`: +1 inlier, −1 outlier (decision_function < 0).
    ///
    /// # Errors
    /// Not an isolation forest, or X has the wrong size.
    pub fn predict_outlier(&self, x: &[f64], n_rows: usize) -> Result<Vec<f64>, TreeError> {
        if !self.is_isolation() {
            return Err(self.unsupported("predict_outlier"));
        }
        let d = self.decision_function(x, n_rows)?;
        Ok(d.iter()
            .map(|&v| if v < 0.0 { -1.0 } else { 1.0 })
            .collect())
    }

    pub(crate) fn unsupported(&self, what: &str) -> TreeError {
        TreeError::Unsupported(format!(
            "{what} is not available for a {} model",
            self.info.estimator
        ))
    }
}

struct Ctx<'a> {
    trees: &'a [TreeMeta],
    leaf_values: &'a [f64],
    width: usize,
    n_out: usize,
    scale: Option<f64>,
}

impl Ctx<'_> {
    /// Add every tree's leaf values for the rows of one block, each row's trees in model order
    /// (the order scikit-learn sums them in, so sums are bit-identical).
    #[inline]
    fn block<T: Thr>(&self, nodes: &[Node<T>], xb: &[T], nf: usize, ab: &mut [f64]) {
        // Rows without NaN (the usual case) skip the missing-value rule in the walk.
        if xb.iter().any(|v| v.is_nan()) {
            self.block_with::<T, true>(nodes, xb, nf, ab);
        } else {
            self.block_with::<T, false>(nodes, xb, nf, ab);
        }
    }

    #[inline(always)]
    fn block_with<T: Thr, const NAN: bool>(
        &self,
        nodes: &[Node<T>],
        xb: &[T],
        nf: usize,
        ab: &mut [f64],
    ) {
        let n_out = self.n_out;
        let n_rows = xb.len() / nf;
        let full = n_rows - n_rows % LANES;
        // LANES rows at a time through one tree
        for t in self.trees {
            for r in (0..full).step_by(LANES) {
                // SAFETY: nodes/roots/depth come from this validated ensemble; nf is its
                // feature count; NAN is false only when xb holds no NaN.
                let l = unsafe {
                    leaves::<T, LANES, NAN>(nodes, [t.root; LANES], t.depth, xb, r * nf, nf, nf)
                };
                for (k, &l) in l.iter().enumerate() {
                    self.add(&mut ab[(r + k) * n_out..(r + k + 1) * n_out], t, l);
                }
            }
        }
        // the remaining rows (and single-row calls): one row through LANES trees at a time
        for r in full..n_rows {
            let a = &mut ab[r * n_out..(r + 1) * n_out];
            for g in self.trees.chunks(LANES) {
                // lanes past the last tree repeat it; their leaves are ignored
                let last = g[g.len() - 1].root;
                let roots = std::array::from_fn(|k| g.get(k).map_or(last, |t| t.root));
                let depth = g.iter().map(|t| t.depth).max().unwrap_or(0);
                // SAFETY: as above, with depth the largest of the group's.
                let l = unsafe { leaves::<T, LANES, NAN>(nodes, roots, depth, xb, r * nf, 0, nf) };
                for (t, &l) in g.iter().zip(&l) {
                    self.add(a, t, l);
                }
            }
        }
    }

    /// Add tree `t`'s values at leaf `l` to a row's outputs.
    #[inline(always)]
    fn add(&self, a: &mut [f64], t: &TreeMeta, l: usize) {
        let (w, off) = (self.width, t.output as usize);
        if w == 1 {
            // the common case (regression, boosting, isolation) without an inner loop
            let v = self.leaf_values[l];
            a[off] += self.scale.map_or(v, |s| s * v);
        } else {
            let v = &self.leaf_values[l * w..(l + 1) * w];
            for (d, &s) in a[off..off + w].iter_mut().zip(v) {
                *d += self.scale.map_or(s, |sc| sc * s);
            }
        }
    }
}

/// scipy's expit.
fn expit(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// sklearn.utils.extmath.softmax: exp(x − max) / Σ.
fn softmax(row: &mut [f64]) {
    let max = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let mut sum = 0.0;
    for v in row.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    row.iter_mut().for_each(|v| *v /= sum);
}

/// numpy argmax: the first maximum (NaN counts as the maximum, first one wins).
fn argmax(row: &[f64]) -> usize {
    let mut best = 0;
    for (i, &v) in row.iter().enumerate() {
        if row[best].is_nan() {
            break;
        }
        if v.is_nan() || v > row[best] {
            best = i;
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trees::model::leaf;
    use crate::trees::model::tests::Lcg;
    use crate::trees::testutil::{info, stump};
    use crate::trees::{Aggregation, Ensemble, Link, TreeSpec};

    #[test]
    fn forest_mean_proba_and_class() {
        let t1 = stump(0, 0.0, &[0.5, 0.5], &[1.0, 0.0], &[0.25, 0.75], 0);
        let t2 = stump(1, 10.0, &[0.5, 0.5], &[0.0, 1.0], &[1.0, 0.0], 0);
        let e = Ensemble::new(info(2, 2, Aggregation::Mean, Some(2)), &[t1, t2]).unwrap();
        let x = [-1.0, 5.0, 1.0, 20.0, f64::NAN, f64::NAN];
        let p = e.predict_proba(&x, 3).unwrap();
        assert_eq!(p, vec![0.5, 0.5, 0.625, 0.375, 0.5, 0.5]);
        assert_eq!(e.predict_class(&x, 3).unwrap(), vec![0, 0, 0]);
        assert!(e.predict_value(&x, 3).is_err());
        assert!(e.score_samples(&x, 3).is_err());
        assert!(e.predict_proba(&x[..5], 3).is_err());
    }

    #[test]
    fn boosting_binary_and_multiclass() {
        let t = stump(0, 0.0, &[0.0], &[-2.0], &[2.0], 0);
        let agg = Aggregation::Boosting {
            init: vec![0.5],
            scale: 0.1,
            link: Link::Logistic,
            zero_is_positive: true,
        };
        let e = Ensemble::new(info(1, 1, agg, Some(2)), &[t.clone(), t.clone()]).unwrap();
        let raw = e.decision_function(&[-1.0, 1.0], 2).unwrap();
        assert!((raw[0] - (0.5 - 0.4)).abs() < 1e-15 && (raw[1] - 0.9).abs() < 1e-15);
        let p = e.predict_proba(&[-1.0], 1).unwrap();
        assert!((p[1] - 1.0 / (1.0 + (-0.1f64).exp())).abs() < 1e-15);
        assert_eq!(e.predict_class(&[-1.0, 1.0], 2).unwrap(), vec![1, 1]);

        let agg = Aggregation::Boosting {
            init: vec![0.0, 0.0, 0.0],
            scale: 1.0,
            link: Link::Softmax,
            zero_is_positive: false,
        };
        let mut t2 = t.clone();
        t2.output = 2;
        let e = Ensemble::new(info(1, 1, agg, Some(3)), &[t, t2]).unwrap();
        let p = e.predict_proba(&[1.0], 1).unwrap();
        let z = 2.0 * 2f64.exp() + 1.0;
        assert!((p[0] - 2f64.exp() / z).abs() < 1e-15 && (p[1] - 1.0 / z).abs() < 1e-15);
        assert_eq!(e.predict_class(&[1.0, -1.0], 2).unwrap(), vec![0, 1]);
    }

    #[test]
    fn isolation_scores() {
        let t = stump(0, 0.0, &[0.0], &[1.0], &[3.0], 0);
        let agg = Aggregation::Isolation {
            average_path_length_max_samples: 2.0,
            offset: -0.5,
        };
        let e = Ensemble::new(info(1, 1, agg, None), &[t]).unwrap();
        let s = e.score_samples(&[-1.0, 1.0], 2).unwrap();
        assert_eq!(s, vec![-(2f64.powf(-0.5)), -(2f64.powf(-1.5))]);
        let d = e.decision_function(&[-1.0, 1.0], 2).unwrap();
        assert_eq!(d[1], s[1] + 0.5);
        assert_eq!(e.predict_outlier(&[-1.0, 1.0], 2).unwrap(), vec![-1.0, 1.0]);
    }

    /// A random tree with `n_features` features, up to `max_depth` levels (possibly one leaf).
    fn random_tree(g: &mut Lcg, n_features: usize, max_depth: u32, output: usize) -> TreeSpec {
        let mut s = TreeSpec::empty(output);
        fn grow(g: &mut Lcg, s: &mut TreeSpec, nf: usize, depth: u32) -> i64 {
            let i = s.children_left.len();
            s.children_left.push(-1);
            s.children_right.push(-1);
            s.feature.push(-2);
            s.threshold.push(-2.0);
            s.missing_left.push(false);
            s.value.push((g.next() % 1000) as f64 / 7.0 - 50.0);
            s.count.push(1.0);
            if depth > 0 && g.next() % 5 != 0 {
                s.feature[i] = (g.next() % nf as u64) as i64;
                s.threshold[i] = (g.next() % 200) as f64 / 100.0 - 1.0;
                s.missing_left[i] = g.next() % 2 == 0;
                let l = grow(g, s, nf, depth - 1);
                let r = grow(g, s, nf, depth - 1);
                s.children_left[i] = l;
                s.children_right[i] = r;
            }
            i as i64
        }
        grow(g, &mut s, n_features, max_depth);
        s
    }

    /// The lane-interleaved scoring equals a plain per-row, per-tree walk summed in tree order,
    /// bit for bit, for every remainder of rows and trees modulo the lane count, with and without
    /// NaN in the rows.
    #[test]
    fn interleaved_walks_match_plain_walks() {
        let mut g = Lcg(5);
        for case in 0..40 {
            let nf = 1 + case % 5;
            let n_trees = 1 + (g.next() % 20) as usize;
            let specs: Vec<_> = (0..n_trees)
                .map(|_| {
                    let d = (g.next() % 9) as u32;
                    random_tree(&mut g, nf, d, 0)
                })
                .collect();
            let agg = Aggregation::Boosting {
                init: vec![0.25],
                scale: 0.1,
                link: Link::Identity,
                zero_is_positive: false,
            };
            let e = Ensemble::new(info(nf, 1, agg, None), &specs).unwrap();
            let Nodes::F32(nodes) = &e.nodes else {
                panic!()
            };
            let n_rows = 1 + (g.next() % 40) as usize;
            let x: Vec<f64> = (0..n_rows * nf)
                // odd cases hold NaN (the missing-value walk), even ones none (the plain walk)
                .map(|_| match g.next() % 10 {
                    0 if case % 2 == 1 => f64::NAN,
                    _ => (g.next() % 300) as f64 / 100.0 - 1.5,
                })
                .collect();
            let got = e.predict_value(&x, n_rows).unwrap();
            for r in 0..n_rows {
                let row: Vec<f32> = x[r * nf..(r + 1) * nf].iter().map(|&v| v as f32).collect();
                let mut want = 0.25;
                for t in &e.trees {
                    want += 0.1 * e.leaf_values[leaf(nodes, t.root, &row)];
                }
                assert_eq!(got[r].to_bits(), want.to_bits(), "case {case} row {r}");
            }
        }
    }

    #[test]
    fn argmax_is_numpy_like() {
        assert_eq!(argmax(&[0.5, 0.5]), 0);
        assert_eq!(argmax(&[0.1, 0.7, 0.7]), 1);
        assert_eq!(argmax(&[0.1, f64::NAN, 0.9]), 1);
    }
}
