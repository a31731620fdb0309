//! Node layout and traversal.
//!
//! All trees' split nodes live in one contiguous array, each tree's nodes in pre-order (a left
//! child right after its parent). A node is `{feature | missing_left << 31, threshold, left,
//! right}` (16 bytes with f32 thresholds); a child index `< 0` encodes leaf `!index`, so the
//! traversal loop has a single branch (its exit) and the leaf values sit in a separate array.

use super::{Precision, TreeError};

/// One tree as scikit-learn describes it (node-local indices, `-1` children for leaves).
#[derive(Debug, Clone, PartialEq)]
pub struct TreeSpec {
    pub children_left: Vec<i64>,
    pub children_right: Vec<i64>,
    /// Split feature per node (ignored for leaves).
    pub feature: Vec<i64>,
    /// Split threshold per node (ignored for leaves); `x <= threshold` goes left.
    pub threshold: Vec<f64>,
    /// Where a NaN goes at each split node.
    pub missing_left: Vec<bool>,
    /// n_nodes × width node values (leaves always; internal nodes unless `fill_internal`).
    pub value: Vec<f64>,
    /// Training sample count (or weight) per node; used when `fill_internal`.
    pub count: Vec<f64>,
    /// Compute internal node values as the count-weighted mean of their children (HGB and
    /// isolation trees only have meaningful leaf values).
    pub fill_internal: bool,
    /// First output slot this tree's leaf values are added to.
    pub output: usize,
}

impl TreeSpec {
    /// A tree with no nodes yet, adding to output slot `output` (for building node by node).
    #[must_use]
    pub fn empty(output: usize) -> Self {
        TreeSpec {
            children_left: vec![],
            children_right: vec![],
            feature: vec![],
            threshold: vec![],
            missing_left: vec![],
            value: vec![],
            count: vec![],
            fill_internal: false,
            output,
        }
    }
}

/// A split node. `feature` bit 31 is the missing-goes-left flag.
#[derive(Debug, Clone, Copy, PartialEq)]
#[repr(C)]
pub(crate) struct Node<T> {
    pub feature: u32,
    pub threshold: T,
    pub left: i32,
    pub right: i32,
}

pub(crate) const MISSING_LEFT: u32 = 1 << 31;

/// Split nodes with thresholds in the comparison precision.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Nodes {
    F32(Vec<Node<f32>>),
    F64(Vec<Node<f64>>),
}

impl Nodes {
    pub fn len(&self) -> usize {
        match self {
            Nodes::F32(v) => v.len(),
            Nodes::F64(v) => v.len(),
        }
    }

    /// (feature, missing_left, threshold as f64, left, right) of node `i`.
    pub fn get(&self, i: usize) -> (u32, bool, f64, i32, i32) {
        match self {
            Nodes::F32(v) => {
                let n = v[i];
                (
                    n.feature & !MISSING_LEFT,
                    n.feature & MISSING_LEFT != 0,
                    f64::from(n.threshold),
                    n.left,
                    n.right,
                )
            }
            Nodes::F64(v) => {
                let n = v[i];
                (
                    n.feature & !MISSING_LEFT,
                    n.feature & MISSING_LEFT != 0,
                    n.threshold,
                    n.left,
                    n.right,
                )
            }
        }
    }
}

/// One tree's place in the shared arrays.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct TreeMeta {
    /// Global root: a node index, or `!leaf` for a single-leaf tree.
    pub root: i32,
    pub output: u32,
    pub node_start: u32,
    pub node_end: u32,
    pub leaf_start: u32,
    pub leaf_end: u32,
    /// Most split nodes on a root-to-leaf path; derived by [`validate`], not stored in artifacts.
    pub depth: u32,
}

/// A threshold type that rows are compared in.
pub(crate) trait Thr: Copy + PartialOrd {
    fn is_nan(self) -> bool;
}

impl Thr for f32 {
    #[inline(always)]
    fn is_nan(self) -> bool {
        self.is_nan()
    }
}

impl Thr for f64 {
    #[inline(always)]
    fn is_nan(self) -> bool {
        self.is_nan()
    }
}

/// The leaf (global index) a row lands in, starting at `root`. `nodes` and `root` have passed
/// [`validate`], so every index is in range and the loop terminates.
#[cfg(test)]
pub(crate) fn leaf<T: Thr>(nodes: &[Node<T>], root: i32, row: &[T]) -> usize {
    let mut i = root;
    while i >= 0 {
        let n = &nodes[i as usize];
        let x = row[(n.feature & !MISSING_LEFT) as usize];
        // NaN compares false, so it goes left only when the node says so: sklearn's rule.
        let go_left = (x <= n.threshold) | (x.is_nan() & (n.feature & MISSING_LEFT != 0));
        i = if go_left { n.left } else { n.right };
    }
    (!i) as usize
}

/// Walks advanced together by [`leaves`]: enough independent loads in flight to hide the
/// latency of each step, few enough to keep the lane state in registers.
pub(crate) const LANES: usize = 8;

/// The leaves (global indices) of `L` walks advanced in lock-step: lane `k` starts at
/// `roots[k]` and reads its features from `x[first + k * stride..][..n_features]` (`stride` is
/// the row length to walk `L` rows through one tree, 0 to walk one row through `L` trees).
///
/// Each step is branch-free (the child is a select, a lane already at a leaf stays there) and
/// the lanes' loads are independent, so their cache misses overlap instead of queueing behind
/// one unpredictable branch per level. This is the only place scoring indexes unchecked.
///
/// # Safety
/// `nodes` is the node array of an ensemble that passed [`validate`], and every `roots[k]` is
/// the root of one of its trees, so every child index reachable from a root is a node of
/// `nodes` or a leaf (`< 0`) and every split feature is `< n_features`; `depth` is at least
/// the [`TreeMeta::depth`] of each of those trees (so all lanes end at a leaf); `n_features`
/// is the ensemble's feature count.
///
/// With `NAN == false` the missing-value rule is skipped (a few instructions less per step);
/// results are then right only for rows without NaN.
#[inline(always)]
pub(crate) unsafe fn leaves<T: Thr, const L: usize, const NAN: bool>(
    nodes: &[Node<T>],
    roots: [i32; L],
    depth: u32,
    x: &[T],
    first: usize,
    stride: usize,
    n_features: usize,
) -> [usize; L] {
    // Checked once per call: every lane's row lies inside `x`.
    assert!(first + (L - 1) * stride + n_features <= x.len());
    let mut idx = roots;
    for _ in 0..depth {
        for (k, i) in idx.iter_mut().enumerate() {
            // A lane at a leaf reads node 0 (present: depth > 0 means some tree has a split
            // node) and keeps its index.
            let at = (*i).max(0) as usize;
            // SAFETY: `at` is 0 or a child index reached from a validated root, hence a valid
            // index into `nodes`; the feature is < n_features and lane k's row is in bounds
            // by the assert above.
            let (n, v) = unsafe {
                let n = nodes.get_unchecked(at);
                let f = (n.feature & !MISSING_LEFT) as usize;
                (n, *x.get_unchecked(first + k * stride + f))
            };
            // NaN compares false, so it goes left only when the node says so: sklearn's rule.
            let go_left = if NAN {
                (v <= n.threshold) | (v.is_nan() & (n.feature & MISSING_LEFT != 0))
            } else {
                v <= n.threshold
            };
            let next = if go_left { n.left } else { n.right };
            *i = if *i < 0 { *i } else { next };
        }
    }
    // Every lane is at a leaf: `!i` is its leaf index.
    idx.map(|i| (!i) as usize)
}

/// The largest f32 ≤ `t`. For any f32 `x`: `x as f64 <= t` ⇔ `x <= round_down_f32(t)`, so
/// sklearn's float32-input/float64-threshold comparison is exact in f32.
pub(crate) fn round_down_f32(t: f64) -> f32 {
    #[allow(clippy::cast_possible_truncation)]
    let r = t as f32;
    if f64::from(r) > t {
        next_down(r)
    } else {
        r
    }
}

/// The f32 just below `r` (`r` finite or +inf, not NaN).
fn next_down(r: f32) -> f32 {
    if r == 0.0 {
        return -f32::from_bits(1);
    }
    let b = r.to_bits();
    if r > 0.0 {
        f32::from_bits(b - 1)
    } else {
        f32::from_bits(b + 1)
    }
}

type Compiled = (Vec<TreeMeta>, Nodes, Vec<f64>, Vec<f64>);

fn to_u32(n: usize, what: &str) -> Result<u32, TreeError> {
    u32::try_from(n)
        .ok()
        .filter(|&v| v < i32::MAX as u32)
        .ok_or_else(|| TreeError::Invalid(format!("too many {what}")))
}

/// Lay out scikit-learn-like trees in pre-order into the shared arrays.
pub(crate) fn compile(
    specs: &[TreeSpec],
    n_features: usize,
    width: usize,
    precision: Precision,
) -> Result<Compiled, TreeError> {
    let mut metas = Vec::with_capacity(specs.len());
    let mut n32 = Vec::new();
    let mut n64 = Vec::new();
    let mut leaf_values = Vec::new();
    let mut node_values = Vec::new();
    for (t, s) in specs.iter().enumerate() {
        let bad = |m: &str| TreeError::Invalid(format!("tree {t}: {m}"));
        let n = s.children_left.len();
        if n == 0 {
            return Err(bad("no nodes"));
        }
        if [
            s.children_right.len(),
            s.feature.len(),
            s.threshold.len(),
            s.missing_left.len(),
        ]
        .iter()
        .any(|&l| l != n)
            || s.value.len() != n * width
            || (s.fill_internal && s.count.len() != n)
        {
            return Err(bad("node arrays differ in length"));
        }
        // Pre-order walk; a node seen twice means the arrays are not a tree.
        let mut order = Vec::with_capacity(n);
        let mut seen = vec![false; n];
        let mut stack = vec![0usize];
        while let Some(i) = stack.pop() {
            if std::mem::replace(&mut seen[i], true) {
                return Err(bad("a node is reachable twice"));
            }
            order.push(i);
            let (l, r) = (s.children_left[i], s.children_right[i]);
            if l == -1 && r == -1 {
                continue;
            }
            let idx = |c: i64| usize::try_from(c).ok().filter(|&c| c < n);
            let (Some(l), Some(r)) = (idx(l), idx(r)) else {
                return Err(bad("child index out of range"));
            };
            if usize::try_from(s.feature[i]).map_or(true, |f| f >= n_features) {
                return Err(bad(&format!("feature {} out of range", s.feature[i])));
            }
            if s.threshold[i].is_nan() {
                return Err(bad("NaN threshold"));
            }
            stack.push(r);
            stack.push(l);
        }
        let is_leaf = |i: usize| s.children_left[i] == -1;
        // New ids: split nodes and leaves numbered in pre-order.
        let node_start = match precision {
            Precision::F32 => n32.len(),
            Precision::F64 => n64.len(),
        };
        let leaf_start = leaf_values.len() / width;
        let mut new_id = vec![0i32; n];
        let (mut ni, mut li) = (node_start, leaf_start);
        for &i in &order {
            if is_leaf(i) {
                new_id[i] = !(i32::try_from(to_u32(li, "leaves")?).unwrap_or(i32::MAX));
                li += 1;
            } else {
                new_id[i] = i32::try_from(to_u32(ni, "nodes")?).unwrap_or(i32::MAX);
                ni += 1;
            }
        }
        // Node values, filled bottom-up where asked (reverse pre-order visits children first).
        let mut value = s.value.clone();
        if s.fill_internal {
            let mut count = s.count.clone();
            for &i in order.iter().rev() {
                if is_leaf(i) {
                    continue;
                }
                let (l, r) = (s.children_left[i] as usize, s.children_right[i] as usize);
                let (cl, cr) = (count[l], count[r]);
                let tot = cl + cr;
                for k in 0..width {
                    let (vl, vr) = (value[l * width + k], value[r * width + k]);
                    value[i * width + k] = if tot > 0.0 {
                        (cl * vl + cr * vr) / tot
                    } else {
                        0.5 * (vl + vr)
                    };
                }
                count[i] = tot;
            }
        }
        for &i in &order {
            let v = &value[i * width..(i + 1) * width];
            if is_leaf(i) {
                leaf_values.extend_from_slice(v);
                continue;
            }
            node_values.extend_from_slice(v);
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            let feature = s.feature[i] as u32 | if s.missing_left[i] { MISSING_LEFT } else { 0 };
            let (left, right) = (
                new_id[s.children_left[i] as usize],
                new_id[s.children_right[i] as usize],
            );
            match precision {
                Precision::F32 => n32.push(Node {
                    feature,
                    threshold: round_down_f32(s.threshold[i]),
                    left,
                    right,
                }),
                Precision::F64 => n64.push(Node {
                    feature,
                    threshold: s.threshold[i],
                    left,
                    right,
                }),
            }
        }
        metas.push(TreeMeta {
            root: new_id[0],
            output: to_u32(s.output, "outputs")?,
            node_start: to_u32(node_start, "nodes")?,
            node_end: to_u32(ni, "nodes")?,
            leaf_start: to_u32(leaf_start, "leaves")?,
            leaf_end: to_u32(li, "leaves")?,
            depth: 0,
        });
    }
    let nodes = match precision {
        Precision::F32 => Nodes::F32(n32),
        Precision::F64 => Nodes::F64(n64),
    };
    Ok((metas, nodes, leaf_values, node_values))
}

/// Check that scoring over these arrays stays in bounds and terminates, and record each tree's
/// depth (the step count of [`leaves`]).
pub(crate) fn validate(
    trees: &mut [TreeMeta],
    nodes: &Nodes,
    n_leaf_values: usize,
    n_node_values: usize,
    n_features: usize,
    width: usize,
    n_outputs: usize,
) -> Result<(), TreeError> {
    let n_nodes = nodes.len();
    if n_node_values != n_nodes * width || n_leaf_values % width != 0 {
        return Err(TreeError::Invalid(
            "value arrays do not match the nodes".into(),
        ));
    }
    let n_leaves = n_leaf_values / width;
    let (mut next_node, mut next_leaf) = (0usize, 0usize);
    for (t, m) in trees.iter_mut().enumerate() {
        let bad = |s: &str| Err(TreeError::Invalid(format!("tree {t}: {s}")));
        let (ns, ne, ls, le) = (
            m.node_start as usize,
            m.node_end as usize,
            m.leaf_start as usize,
            m.leaf_end as usize,
        );
        // Trees tile the arrays in order, each with exactly one more leaf than split nodes.
        if ns != next_node
            || ls != next_leaf
            || ne < ns
            || le != ls + (ne - ns) + 1
            || ne > n_nodes
            || le > n_leaves
        {
            return bad("node/leaf ranges are inconsistent");
        }
        if m.output as usize + width > n_outputs {
            return bad("output slot out of range");
        }
        next_node = ne;
        next_leaf = le;
        let in_tree = |c: i32| -> Option<Result<usize, usize>> {
            if c >= 0 {
                let c = c as usize;
                (ns..ne).contains(&c).then_some(Ok(c))
            } else {
                let l = (!c) as usize;
                (ls..le).contains(&l).then_some(Err(l))
            }
        };
        let mut seen_node = vec![false; ne - ns];
        let mut seen_leaf = vec![false; le - ls];
        let mut depth = 0u32;
        let mut stack = vec![(m.root, 0u32)];
        while let Some((c, d)) = stack.pop() {
            depth = depth.max(d);
            match in_tree(c) {
                None => return bad("child index out of range"),
                Some(Err(l)) => {
                    if std::mem::replace(&mut seen_leaf[l - ls], true) {
                        return bad("a leaf is reachable twice");
                    }
                }
                Some(Ok(i)) => {
                    if std::mem::replace(&mut seen_node[i - ns], true) {
                        return bad("a node is reachable twice");
                    }
                    let (f, _, thr, l, r) = nodes.get(i);
                    if f as usize >= n_features || thr.is_nan() {
                        return bad("bad split feature or threshold");
                    }
                    stack.push((l, d + 1));
                    stack.push((r, d + 1));
                }
            }
        }
        m.depth = depth;
    }
    if next_node != n_nodes || next_leaf != n_leaves {
        return Err(TreeError::Invalid(
            "arrays hold nodes outside every tree".into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Pseudo-random generator for property-style tests (no extra dev-dependency).
    pub(crate) struct Lcg(pub u64);
    impl Lcg {
        pub fn next(&mut self) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            self.0 >> 11
        }
        pub fn f64(&mut self) -> f64 {
            // wide dynamic range, both signs, plus special values
            match self.next() % 8 {
                0 => f64::from_bits((self.next() << 11) | (self.next() % 2048)),
                1 => [
                    0.0,
                    -0.0,
                    f64::INFINITY,
                    f64::NEG_INFINITY,
                    f64::MAX,
                    f64::MIN_POSITIVE,
                    1e30,
                    -1e30,
                ][(self.next() % 8) as usize],
                _ => ((self.next() % 2_000_001) as f64 - 1e6) / ((self.next() % 1000 + 1) as f64),
            }
        }
    }

    #[test]
    fn round_down_makes_f32_comparison_exact() {
        let mut g = Lcg(7);
        let mut checked = 0;
        for _ in 0..200_000 {
            let t = g.f64();
            if t.is_nan() {
                continue;
            }
            let t32 = round_down_f32(t);
            assert!(f64::from(t32) <= t, "{t} -> {t32}");
            // x: f32 values around t and random ones
            let base = t as f32;
            for x in [
                base,
                next_down(base),
                f32::from_bits(base.to_bits().wrapping_add(1)),
                g.f64() as f32,
                t32,
            ] {
                if x.is_nan() {
                    continue;
                }
                assert_eq!(f64::from(x) <= t, x <= t32, "x={x} t={t} t32={t32}");
                checked += 1;
            }
        }
        assert!(checked > 500_000);
    }

    #[test]
    fn round_down_edges() {
        assert_eq!(round_down_f32(1e300), f32::MAX);
        assert_eq!(round_down_f32(-1e300), f32::NEG_INFINITY);
        assert_eq!(round_down_f32(0.1), 0.099_999_994);
        assert_eq!(round_down_f32(0.5), 0.5);
        assert_eq!(round_down_f32(-0.0), -0.0);
        assert!(round_down_f32(-1e-50) < 0.0);
        assert_eq!(round_down_f32(1e-50), 0.0);
    }

    #[test]
    fn compile_rejects_non_trees() {
        let mut s = crate::trees::testutil::stump(0, 0.5, &[0.0], &[1.0], &[2.0], 0);
        assert!(compile(&[s.clone()], 1, 1, Precision::F32).is_ok());
        s.children_right[0] = 1; // both children the same node
        assert!(compile(&[s.clone()], 1, 1, Precision::F32).is_err());
        s.children_right[0] = 0; // cycle to the root
        assert!(compile(&[s.clone()], 1, 1, Precision::F32).is_err());
        s.children_right[0] = 7;
        assert!(compile(&[s.clone()], 1, 1, Precision::F32).is_err());
        s.children_right[0] = 2;
        s.feature[0] = 1; // only one feature
        assert!(compile(&[s.clone()], 1, 1, Precision::F32).is_err());
        s.feature[0] = 0;
        s.threshold[0] = f64::NAN;
        assert!(compile(&[s], 1, 1, Precision::F32).is_err());
    }

    #[test]
    fn traversal_routes_nan_and_thresholds() {
        let s = crate::trees::testutil::stump(0, 0.5, &[0.0], &[1.0], &[2.0], 0);
        let (metas, nodes, leaves, _) = compile(&[s], 1, 1, Precision::F32).unwrap();
        let Nodes::F32(nodes) = nodes else { panic!() };
        let root = metas[0].root;
        assert_eq!(leaves[leaf(&nodes, root, &[0.5])], 1.0);
        assert_eq!(leaves[leaf(&nodes, root, &[0.500_000_1])], 2.0);
        assert_eq!(leaves[leaf(&nodes, root, &[f32::NAN])], 1.0); // missing_left
        assert_eq!(leaves[leaf(&nodes, root, &[f32::NEG_INFINITY])], 1.0);
        assert_eq!(leaves[leaf(&nodes, root, &[f32::INFINITY])], 2.0);
    }

    #[test]
    fn fill_internal_is_count_weighted() {
        let mut s = crate::trees::testutil::stump(0, 0.5, &[99.0], &[1.0], &[4.0], 0);
        s.fill_internal = true;
        let (_, _, _, node_values) = compile(&[s], 1, 1, Precision::F64).unwrap();
        assert_eq!(node_values, vec![(1.0 * 1.0 + 2.0 * 4.0) / 3.0]);
    }
}
