//! Saabas path attribution: along each row's path, the change of node value at a split is
//! credited to the split's feature; the root value is the bias. bias + Σ contributions equals
//! the model output in its accumulation space (forest mean / probability, boosting raw score,
//! isolation mean path length Σ_t(depth + c(n) − 1)/n_trees).

use super::flat::{self, Flat};
use super::model::{Node, Nodes, Thr, MISSING_LEFT};
use super::{Aggregation, Ensemble, TreeError};

impl Ensemble {
    /// Per-row contributions, row-major n_rows × (n_features + 1) × n_reported, bias last along
    /// the feature axis. `n_reported` (see [`Ensemble::contribution_outputs`]) is 1 for
    /// single-output models (binary forest classifiers report the positive class) and the
    /// number of classes for multiclass models.
    ///
    /// # Errors
    /// X has the wrong size.
    pub fn contributions(&self, x: &[f64], n_rows: usize) -> Result<Vec<f64>, TreeError> {
        self.check_input(x, n_rows)?;
        let Some(flat) = &self.flat else {
            return self.contributions_generic(x, n_rows);
        };
        let nf = self.n_features();
        let n_rep = self.contribution_outputs();
        let mut out = vec![0.0; n_rows * (nf + 1) * n_rep];
        if n_rep == 1 {
            self.flat_column(flat, x, self.reported_slot(0), &mut out);
        } else {
            let mut one = vec![0.0; n_rows * (nf + 1)];
            for c in 0..n_rep {
                self.flat_column(flat, x, self.reported_slot(c), &mut one);
                for (o, &v) in out.iter_mut().skip(c).step_by(n_rep).zip(&one) {
                    *o = v;
                }
            }
        }
        Ok(out)
    }

    /// One output of [`Ensemble::contributions`]: row-major n_rows × (n_features + 1), bias
    /// last, for reported output `column` (< [`Ensemble::contribution_outputs`]; 0 is the
    /// positive class of a binary forest classifier). Cheaper than `contributions` when only one
    /// output is read (multiclass boosting walks only that class's trees); rows are walked
    /// several at a time, so one call for many rows beats one call per row.
    ///
    /// # Errors
    /// X has the wrong size or `column` is out of range.
    pub fn contributions_column(
        &self,
        x: &[f64],
        n_rows: usize,
        column: usize,
    ) -> Result<Vec<f64>, TreeError> {
        let mut out = vec![0.0; n_rows * (self.n_features() + 1)];
        self.contributions_column_into(x, n_rows, column, &mut out)?;
        Ok(out)
    }

    /// [`Ensemble::contributions_column`] into a caller's buffer of n_rows × (n_features + 1)
    /// values (no allocation per call once the thread's scratch space is warm).
    ///
    /// # Errors
    /// X or `out` has the wrong size, or `column` is out of range.
    pub fn contributions_column_into(
        &self,
        x: &[f64],
        n_rows: usize,
        column: usize,
        out: &mut [f64],
    ) -> Result<(), TreeError> {
        self.check_input(x, n_rows)?;
        let nf = self.n_features();
        let n_rep = self.contribution_outputs();
        if column >= n_rep {
            return Err(TreeError::Input(format!(
                "contribution output {column} out of range (the model reports {n_rep})"
            )));
        }
        if out.len() != n_rows * (nf + 1) {
            return Err(TreeError::Input(format!(
                "output buffer holds {} values, expected {n_rows} rows × {}",
                out.len(),
                nf + 1
            )));
        }
        if let Some(flat) = &self.flat {
            self.flat_column(flat, x, self.reported_slot(column), out);
        } else {
            let all = self.contributions_generic(x, n_rows)?;
            for (o, &v) in out.iter_mut().zip(all.iter().skip(column).step_by(n_rep)) {
                *o = v;
            }
        }
        Ok(())
    }

    /// The flat layout's contributions to accumulated slot `slot` (its path table is built
    /// from the compact arrays on first use).
    fn flat_column(&self, flat: &Flat, x: &[f64], slot: usize, out: &mut [f64]) {
        let scale = match &self.info.aggregation {
            Aggregation::Boosting { scale, .. } => *scale,
            _ => 1.0,
        };
        let Nodes::F32(nodes) = &self.nodes else {
            unreachable!("the flat layout exists only for float32 models")
        };
        let w = self.info.width;
        flat.contributions_column(x, slot, out, || {
            flat::paths(
                flat,
                &self.trees,
                nodes,
                &self.leaf_values,
                &self.node_values,
                self.n_features(),
                w,
                scale,
                slot,
            )
        });
    }

    /// The accumulated output slot of reported contribution output `c`.
    fn reported_slot(&self, c: usize) -> usize {
        if self.contribution_outputs() == self.n_outputs() {
            c
        } else {
            1 // binary forest classifier: the positive class
        }
    }

    /// The one-row-at-a-time walk over the compact arrays (float64 models; the reference the
    /// fast path is tested against).
    pub(crate) fn contributions_generic(
        &self,
        x: &[f64],
        n_rows: usize,
    ) -> Result<Vec<f64>, TreeError> {
        self.check_input(x, n_rows)?;
        let nf = self.n_features();
        let n_out = self.n_outputs();
        let w = self.info.width;
        // per tree: scale applied to value differences
        let (scale, init, divide) = match &self.info.aggregation {
            Aggregation::Boosting { scale, init, .. } => (*scale, Some(init.as_slice()), None),
            #[allow(clippy::cast_precision_loss)]
            _ => (1.0, None, Some(self.trees.len() as f64)),
        };
        let value = |c: i32| -> &[f64] {
            if c >= 0 {
                let i = c as usize;
                &self.node_values[i * w..(i + 1) * w]
            } else {
                let l = (!c) as usize;
                &self.leaf_values[l * w..(l + 1) * w]
            }
        };
        let mut bias = init.map_or_else(|| vec![0.0; n_out], <[f64]>::to_vec);
        for t in &self.trees {
            for (k, v) in value(t.root).iter().enumerate() {
                bias[t.output as usize + k] += scale * v;
            }
        }
        let mut out = Vec::with_capacity(n_rows * (nf + 1) * self.contribution_outputs());
        let mut buf = vec![0.0; (nf + 1) * n_out];
        let mut row32 = vec![
            0f32;
            if matches!(self.nodes, Nodes::F32(_)) {
                nf
            } else {
                0
            }
        ];
        for row in x.chunks_exact(nf) {
            buf.iter_mut().for_each(|v| *v = 0.0);
            buf[nf * n_out..].copy_from_slice(&bias);
            let mut credit = |node: usize, child: i32, t_out: usize| {
                let f = self.nodes.get(node).0 as usize;
                let (pv, cv) = (value(i32::try_from(node).unwrap_or(0)), value(child));
                for k in 0..w {
                    buf[f * n_out + t_out + k] += scale * (cv[k] - pv[k]);
                }
            };
            match &self.nodes {
                Nodes::F32(nodes) => {
                    for (d, &s) in row32.iter_mut().zip(row) {
                        #[allow(clippy::cast_possible_truncation)]
                        {
                            *d = s as f32;
                        }
                    }
                    for t in &self.trees {
                        walk(nodes, t.root, &row32, |i, c| {
                            credit(i, c, t.output as usize)
                        });
                    }
                }
                Nodes::F64(nodes) => {
                    for t in &self.trees {
                        walk(nodes, t.root, row, |i, c| credit(i, c, t.output as usize));
                    }
                }
            }
            if let Some(n) = divide {
                buf.iter_mut().for_each(|v| *v /= n);
            }
            if self.contribution_outputs() == n_out {
                out.extend_from_slice(&buf);
            } else {
                // binary forest classifier: the positive class only
                out.extend(buf.chunks_exact(n_out).map(|c| c[1]));
            }
        }
        Ok(out)
    }

    /// Outputs per (row, feature) in [`Ensemble::contributions`].
    #[must_use]
    pub fn contribution_outputs(&self) -> usize {
        if matches!(self.info.aggregation, Aggregation::Mean) && self.n_classes() == 2 {
            1
        } else {
            self.n_outputs()
        }
    }
}

/// Follow a row's path, calling `step(node, child)` for every split taken.
fn walk<T: Thr>(nodes: &[Node<T>], root: i32, row: &[T], mut step: impl FnMut(usize, i32)) {
    let mut i = root;
    while i >= 0 {
        let n = &nodes[i as usize];
        let x = row[(n.feature & !MISSING_LEFT) as usize];
        let go_left = (x <= n.threshold) | (x.is_nan() & (n.feature & MISSING_LEFT != 0));
        let c = if go_left { n.left } else { n.right };
        step(i as usize, c);
        i = c;
    }
}

#[cfg(test)]
mod tests {
    use crate::trees::testutil::{info, stump};
    use crate::trees::{Aggregation, Ensemble, Link};

    #[test]
    fn depth_one_by_hand() {
        // regressor forest of two stumps on different features
        let t1 = stump(0, 0.0, &[2.0], &[1.0], &[4.0], 0);
        let t2 = stump(1, 0.0, &[10.0], &[6.0], &[12.0], 0);
        let e = Ensemble::new(info(2, 1, Aggregation::Mean, None), &[t1, t2]).unwrap();
        let c = e.contributions(&[-1.0, 1.0], 1).unwrap();
        // bias (2+10)/2, x0: (1−2)/2, x1: (12−10)/2
        assert_eq!(c, vec![-0.5, 1.0, 6.0]);
        let v = e.predict_value(&[-1.0, 1.0], 1).unwrap();
        assert_eq!(c.iter().sum::<f64>(), v[0]);
    }

    #[test]
    fn boosting_multiclass_sums_to_raw() {
        let agg = Aggregation::Boosting {
            init: vec![0.1, -0.2, 0.3],
            scale: 0.5,
            link: Link::Softmax,
            zero_is_positive: false,
        };
        let trees: Vec<_> = (0..6)
            .map(|i| stump(i % 2, 0.25, &[0.5], &[-1.0], &[3.0], i as usize % 3))
            .collect();
        let e = Ensemble::new(info(2, 1, agg, Some(3)), &trees).unwrap();
        let x = [0.0, 1.0, 1.0, f64::NAN];
        let c = e.contributions(&x, 2).unwrap();
        let raw = e.decision_function(&x, 2).unwrap();
        for r in 0..2 {
            for k in 0..3 {
                let s: f64 = (0..3).map(|f| c[r * 9 + f * 3 + k]).sum();
                assert!((s - raw[r * 3 + k]).abs() < 1e-12);
            }
        }
    }

    #[test]
    fn binary_forest_reports_positive_class() {
        let t = stump(0, 0.0, &[0.5, 0.5], &[1.0, 0.0], &[0.25, 0.75], 0);
        let e = Ensemble::new(info(1, 2, Aggregation::Mean, Some(2)), &[t]).unwrap();
        let c = e.contributions(&[1.0], 1).unwrap();
        assert_eq!(c, vec![0.25, 0.5]);
    }
}
