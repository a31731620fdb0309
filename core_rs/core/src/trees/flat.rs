//! The scoring layout of float32 ensembles, built from the compiled arrays at construction and
//! at load (the artifact keeps the compact arrays of `model.rs`).
//!
//! Rows are scored a block at a time from a *transposed* float32 copy of the block
//! (`xt[f * block + r]`), so a walk reads feature `f` of the `k`-th row of a lane group at
//! `base + f * block + k`: every node stores its feature as that byte offset, and the `L` lanes
//! of a group differ only by a constant displacement. The lane state is then just `L` node
//! offsets, which stay in registers.
//!
//! Nodes are 16 bytes, `{threshold, feature offset, jump child, leaf index}`, each tree in
//! pre-order, children as byte offsets. A step is `next = if v >= thr { jump } else { o + 16 }`
//! (the *next* node is the other child): five instructions on x86-64 (feature offset, row
//! value, next offset, `ucomiss v, [thr]`, `cmovae` from memory). A leaf jumps to itself: its
//! threshold is −inf and it reads a constant column of zeros, so a walk of `depth` branch-free
//! steps always ends on its leaf and needs no "already at a leaf" test.
//!
//! NaN routing without a NaN test: `v >= thr` is false for NaN, so NaN always takes the next
//! node; each split puts its NaN child next and is rewritten so the comparison still gives
//! scikit-learn's `x <= t` on the float32-cast input (`t` already rounded down to float32):
//! - NaN goes left: next = left, jump = right when `x >= next_up(t)` (⇔ `x > t`; never when
//!   `t = +inf`: a NaN threshold);
//! - NaN goes right: next = right, jump = left when `−x >= −t` (⇔ `x <= t`), reading the
//!   feature from a negated copy of the block (`xt[(n_features + f) * block + r] = −x`).
//!
//! Rows with and without NaN take one code path.

use std::cell::RefCell;
use std::sync::OnceLock;

use super::model::{Node, TreeMeta, MISSING_LEFT};
use super::Aggregation;

/// Walks advanced together. Enough independent chains to cover the latency of a step (node
/// load → feature load → compare → select), few enough for the offsets to stay in registers:
/// 11 offsets + the node and row bases + one temporary fill x86-64's 15 (at 12, LLVM spills
/// the node base and reloads it on every step).
pub(crate) const LANES: usize = 11;

/// Split or leaf node of the scoring layout: a walk jumps to `f_child` when the row's value
/// `v >= thr`, else takes the next node (the child NaN goes to); a leaf jumps to itself.
#[derive(Debug, Clone, Copy, PartialEq)]
#[repr(C, align(16))]
pub(crate) struct FNode {
    /// Jump when `v >= thr` (−inf for leaves: always).
    thr: f32,
    /// Byte offset of the feature's column in the transposed block (the zero column for leaves).
    feat: u32,
    /// Byte offset of the jump child (the leaf itself for leaves).
    f_child: u32,
    /// The leaf index (leaves only).
    leaf: u32,
}

const NODE: usize = std::mem::size_of::<FNode>();
// `step` reads `thr` at offset 0 and `f_child` at offset 8 of a 16-byte node.
const _: () = assert!(
    NODE == 16
        && std::mem::offset_of!(FNode, thr) == 0
        && std::mem::offset_of!(FNode, f_child) == 8
);

/// The scoring layout plus what contributions need.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Flat {
    nodes: Vec<FNode>,
    /// Per tree: root byte offset, step count, first output slot.
    roots: Vec<u32>,
    depth: Vec<u32>,
    out: Vec<u32>,
    /// Offset of a spare leaf with zero deltas: the walk of a lane that has no tree.
    pad: u32,
    /// Leaf values (× the boosting scale, the product scikit-learn adds), n_leaves × width.
    values: Vec<f64>,
    width: usize,
    n_out: usize,
    nf: usize,
    /// Rows per block (the column stride of the transposed block).
    block: usize,
    /// Byte offset of the constant zero column (leaves read it).
    zero_col: u32,
    /// Per tree: its first (global) leaf index.
    leaf_start: Vec<u32>,
    /// Per accumulated output: the contribution table, built on first use.
    paths: Vec<OnceLock<Paths>>,
    /// Per output slot: init + Σ_t scale · root value (the contribution bias before dividing).
    bias: Vec<f64>,
    /// Forests and isolation forests divide sums by the tree count.
    divide: Option<f64>,
    /// Per node: its compact id (leaves `!leaf index`), to build the edge table of `Paths`.
    compact: Vec<i32>,
}

/// The smallest float32 above `t` (`t` not NaN, not +inf).
fn next_up(t: f32) -> f32 {
    if t == f32::NEG_INFINITY {
        return -f32::MAX;
    }
    if t == 0.0 {
        return f32::from_bits(1);
    }
    let b = t.to_bits();
    if t > 0.0 {
        f32::from_bits(b + 1)
    } else {
        f32::from_bits(b - 1)
    }
}

/// Build the layout from validated float32 arrays; `None` when sizes overflow the 32-bit
/// offsets (the generic walk is used then).
#[allow(clippy::too_many_arguments)]
pub(crate) fn build(
    trees: &[TreeMeta],
    nodes: &[Node<f32>],
    leaf_values: &[f64],
    node_values: &[f64],
    nf: usize,
    width: usize,
    n_out: usize,
    aggregation: &Aggregation,
) -> Option<Flat> {
    let block = (4096 / nf).clamp(LANES, 512) / LANES * LANES;
    let n_total = nodes.len() + leaf_values.len() / width;
    // every byte offset (nodes, the spare leaf, block columns) must fit in u32
    if n_total.checked_mul(NODE)? >= u32::MAX as usize
        || (2 * nf + 1).checked_mul(block)?.checked_mul(4)? >= u32::MAX as usize
    {
        return None;
    }
    let (scale, init) = match aggregation {
        Aggregation::Boosting { scale, init, .. } => (*scale, Some(init.as_slice())),
        _ => (1.0, None),
    };
    #[allow(clippy::cast_precision_loss)]
    let divide = match aggregation {
        Aggregation::Boosting { .. } => None,
        _ => Some(trees.len() as f64),
    };
    let value = |c: i32| -> &[f64] {
        if c >= 0 {
            let i = c as usize;
            &node_values[i * width..(i + 1) * width]
        } else {
            let l = (!c) as usize;
            &leaf_values[l * width..(l + 1) * width]
        }
    };
    let mut f = Flat {
        nodes: Vec::with_capacity(n_total),
        roots: Vec::with_capacity(trees.len()),
        depth: trees.iter().map(|t| t.depth).collect(),
        out: trees.iter().map(|t| t.output).collect(),
        values: leaf_values.iter().map(|&v| scale * v).collect(),
        width,
        n_out,
        nf,
        block,
        #[allow(clippy::cast_possible_truncation)]
        zero_col: (2 * nf * block * 4) as u32,
        leaf_start: trees.iter().map(|t| t.leaf_start).collect(),
        paths: (0..n_out).map(|_| OnceLock::new()).collect(),
        bias: init.map_or_else(|| vec![0.0; n_out], <[f64]>::to_vec),
        divide,
        pad: 0,
        compact: Vec::with_capacity(n_total),
    };
    #[allow(clippy::cast_possible_truncation)]
    let off = |i: usize| (i * NODE) as u32;
    for t in trees {
        for (k, v) in value(t.root).iter().enumerate() {
            f.bias[t.output as usize + k] += scale * v;
        }
        // pre-order; (compact id, slot of the parent's child field to patch)
        let mut stack = vec![(t.root, None::<(usize, bool)>)];
        let mut first = true;
        while let Some((c, parent)) = stack.pop() {
            let me = f.nodes.len();
            f.compact.push(c);
            if first {
                f.roots.push(off(me));
                first = false;
            }
            match parent {
                Some((p, true)) => debug_assert_eq!(p + 1, me),
                Some((p, false)) => f.nodes[p].f_child = off(me),
                None => {}
            }
            if c < 0 {
                f.nodes.push(FNode {
                    thr: f32::NEG_INFINITY,
                    feat: f.zero_col,
                    f_child: off(me),
                    leaf: (!c) as u32,
                });
                continue;
            }
            let n = nodes[c as usize];
            let feat = n.feature & !MISSING_LEFT;
            let ml = n.feature & MISSING_LEFT != 0;
            // (threshold, column, next child = NaN's child, jump child)
            let (thr, col, t_c, f_c) = if ml {
                // jump right when x > t ⇔ x >= next_up(t); nothing is above +inf (NaN: never)
                let thr = if n.threshold == f32::INFINITY {
                    f32::NAN
                } else {
                    next_up(n.threshold)
                };
                (thr, feat as usize, n.left, n.right)
            } else {
                // jump left when x <= t ⇔ −x >= −t
                (-n.threshold, nf + feat as usize, n.right, n.left)
            };
            #[allow(clippy::cast_possible_truncation)]
            f.nodes.push(FNode {
                thr,
                feat: (col * block * 4) as u32,
                f_child: 0,
                leaf: 0,
            });
            // pre-order: the next child first (popped first), then the jump child
            stack.push((f_c, Some((me, false))));
            stack.push((t_c, Some((me, true))));
        }
    }
    // the spare leaf (leaf index 0: a valid index, its value is never used)
    let me = f.nodes.len();
    f.pad = off(me);
    f.compact.push(-1);
    f.nodes.push(FNode {
        thr: f32::NEG_INFINITY,
        feat: f.zero_col,
        f_child: off(me),
        leaf: 0,
    });
    Some(f)
}

thread_local! {
    /// The transposed block (reused across calls: no allocation per call).
    static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// The offset after node `o` (at `nodes + o`) for a row whose feature value is `v`:
/// `if v >= thr { f_child } else { o + NODE }`, without a branch. A walk step's direction is a
/// coin flip, so a branch mispredicts half the time, and LLVM's x86 backend turns a select in
/// this load-dependent loop into exactly such a branch (seeing through arithmetic masks too),
/// hence the two instructions spelled out on x86-64, both reading the node from memory (no
/// register per lane beyond the offset). NaN compares unordered: `o + NODE`.
///
/// # Safety
/// `nodes + o` is an [`FNode`].
#[inline(always)]
unsafe fn step(nodes: *const u8, o: usize, v: f32) -> usize {
    #[cfg(target_arch = "x86_64")]
    {
        let mut r = o + NODE;
        // SAFETY: reads the node's `thr` (at o = r − 16) and `f_child` (at o + 8 = r − 8), in
        // bounds by the contract. `ucomiss v, thr` clears CF exactly when v >= thr and neither
        // is NaN; the 32-bit cmov zero-extends, harmless as offsets are < 2^32.
        unsafe {
            std::arch::asm!(
                "ucomiss {v}, dword ptr [{nodes} + {r} - 16]",
                "cmovae {r:e}, dword ptr [{nodes} + {r} - 8]",
                v = in(xmm_reg) v,
                nodes = in(reg) nodes,
                r = inout(reg) r,
                options(pure, readonly, nostack),
            );
        }
        r
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        // SAFETY: the contract.
        let n = unsafe { *nodes.add(o).cast::<FNode>() };
        if v >= n.thr {
            n.f_child as usize
        } else {
            o + NODE
        }
    }
}

/// Offsets reached after `depth` steps of `L` lock-step walks starting at `offs`; lane `k` reads
/// its features at `xr + feature offset + k * LANE_STRIDE` bytes.
///
/// # Safety
/// `nodes` is a [`Flat`] node array and every `offs[k]` a node offset of it (so every child is
/// too), and every feature offset plus `(L - 1) * LANE_STRIDE` (+ 4) bytes from `xr` is inside
/// one allocation. A walk that reaches its leaf before `depth` steps stays there.
#[inline(always)]
unsafe fn walk<const L: usize, const LANE_STRIDE: usize>(
    nodes: *const u8,
    offs: [u32; L],
    depth: u32,
    xr: *const u8,
) -> [usize; L] {
    // SAFETY: the contract.
    unsafe { walk_on::<L, LANE_STRIDE>(nodes, offs.map(|o| o as usize), depth, xr) }
}

/// [`walk`] of `L` rows (lane `k` at displacement `4k`) through one tree from its root: the
/// first step's node is the same for every lane, so it is read once.
///
/// # Safety
/// As [`walk`].
#[inline(always)]
unsafe fn walk_rows<const L: usize>(
    nodes: *const u8,
    root: u32,
    depth: u32,
    xr: *const u8,
) -> [usize; L] {
    let root = root as usize;
    if depth == 0 {
        return [root; L];
    }
    // SAFETY: the contract; the root is a node offset.
    unsafe {
        let n = *nodes.add(root).cast::<FNode>();
        let offs = std::array::from_fn(|k| {
            let v = xr.add(n.feat as usize + 4 * k).cast::<f32>().read();
            step(nodes, root, v)
        });
        walk_rows_on::<L>(nodes, offs, depth - 1, xr)
    }
}

/// Total steps of a walk after which [`walk_rows_on`] checks whether the step moved any lane.
/// Two checks: on the pipeline benchmark's depth-12 forests (mean leaf depth 8.2, but a group
/// of 11 rows ends only at its deepest row) they cut the walks' time by ~5% even though the
/// sums add instructions; checking every level costs more than it saves.
const EXIT_CHECKS: [u32; 2] = [6, 9];

/// The loop of [`walk_rows`] after its first step (`depth` more steps), stopping early once a
/// step leaves every lane where it was: a step moves every walk not yet on its leaf, and never
/// backwards (children follow their parent in pre-order), so an unchanged sum of the offsets
/// means every lane is on its leaf. Trees are as deep as their deepest leaf while most rows end
/// well above it; the sums cost a fifth of a step, hence only a few checks.
///
/// # Safety
/// As [`walk`].
#[inline(always)]
unsafe fn walk_rows_on<const L: usize>(
    nodes: *const u8,
    mut offs: [usize; L],
    depth: u32,
    xr: *const u8,
) -> [usize; L] {
    let mut done = 1; // steps taken
    let total = depth + 1;
    // SAFETY (of the walks): the contract.
    for c in EXIT_CHECKS {
        if c >= total {
            break;
        }
        offs = unsafe { walk_on::<L, 4>(nodes, offs, c - 1 - done, xr) };
        let pre: usize = offs.iter().sum();
        offs = unsafe { walk_on::<L, 4>(nodes, offs, 1, xr) };
        done = c;
        if offs.iter().sum::<usize>() == pre {
            return offs;
        }
    }
    unsafe { walk_on::<L, 4>(nodes, offs, total - done, xr) }
}

/// Rows walked together by [`walk_credit`] (it needs three more registers than [`walk`]).
const CREDIT_LANES: usize = 8;

/// `L` lock-step walks of rows (lane `k` at displacement `4k`) through one tree from `root`,
/// adding at each step the edge it takes (`Paths::edges`) into row `k` of `ob` (rows of
/// `stride` values). A leaf's self-jump credits a zero step to feature 0 (+0.0 leaves a sum
/// that started at +0.0 unchanged).
///
/// # Safety
/// As [`walk`]; `edges` holds two [`PathStep`]s per node of `nodes`, whose features are all
/// < `stride`, and `ob` holds `L` rows of `stride` values.
#[inline(always)]
unsafe fn walk_credit<const L: usize>(
    nodes: *const u8,
    edges: *const u8,
    root: u32,
    depth: u32,
    xr: *const u8,
    ob: *mut f64,
    stride: usize,
) {
    let mut offs = [root as usize; L];
    for _ in 0..depth {
        for (k, o) in offs.iter_mut().enumerate() {
            // SAFETY: the contract; the edge of node o in direction d is at byte 2·o + 16·d.
            unsafe {
                let n = &*nodes.add(*o).cast::<FNode>();
                let v = xr.add(n.feat as usize + 4 * k).cast::<f32>().read();
                let r = step(nodes, *o, v);
                let jumped = usize::from(r != *o + NODE);
                let e = &*edges.add(2 * *o + 16 * jumped).cast::<PathStep>();
                *ob.add(k * stride + e.feature as usize) += e.delta;
                *o = r;
            }
        }
    }
}

/// The loop of [`walk`] on `usize` offsets.
///
/// # Safety
/// As [`walk`].
#[inline(always)]
unsafe fn walk_on<const L: usize, const LANE_STRIDE: usize>(
    nodes: *const u8,
    mut offs: [usize; L],
    depth: u32,
    xr: *const u8,
) -> [usize; L] {
    for _ in 0..depth {
        for (k, o) in offs.iter_mut().enumerate() {
            // SAFETY: per the contract, `o` is a node offset and the feature read is in the block;
            // the next node is one of the children.
            unsafe {
                let n = &*nodes.add(*o).cast::<FNode>();
                let v = xr
                    .add(n.feat as usize + k * LANE_STRIDE)
                    .cast::<f32>()
                    .read();
                *o = step(nodes, *o, v);
            }
        }
    }
    offs
}

impl Flat {
    /// Transpose and negate rows `x` (`nb` ≤ block rows) into `xt`, cast to float32
    /// the way scikit-learn casts (round to nearest, overflow to ±inf).
    fn transpose(&self, x: &[f64], xt: &mut [f32]) {
        let (nf, b) = (self.nf, self.block);
        assert!(x.len() <= nf * b && xt.len() >= (2 * nf + 1) * b);
        // the zero column leaves read (the lanes of a last partial group read it too)
        xt[2 * nf * b..(2 * nf + 1) * b].fill(0.0);
        let base = xt.as_mut_ptr();
        for (r, row) in x.chunks_exact(nf).enumerate() {
            // SAFETY: r < b and f < nf, so r + f·b < nf·b and the negated copy r + (nf + f)·b
            // < 2·nf·b ≤ xt.len() (asserted).
            unsafe {
                let mut q = base.add(r);
                for &v in row {
                    #[allow(clippy::cast_possible_truncation)]
                    let v = v as f32;
                    *q = v;
                    *q.add(nf * b) = -v;
                    q = q.add(b);
                }
            }
        }
    }

    fn with_scratch<R>(&self, f: impl FnOnce(&mut [f32]) -> R) -> R {
        let need = (2 * self.nf + 1) * self.block;
        SCRATCH.with_borrow_mut(|s| {
            if s.len() < need {
                s.resize(need, 0.0);
            }
            f(&mut s[..need])
        })
    }

    /// Add every tree's (scaled) leaf values into `acc` (n_rows × n_out), each row's trees in
    /// model order (scikit-learn's summation order: the sums are bit-identical).
    pub fn accumulate(&self, x: &[f64], acc: &mut [f64]) {
        let nf = self.nf;
        let n_rows = x.len() / nf;
        assert_eq!(acc.len(), n_rows * self.n_out);
        self.with_scratch(|xt| {
            for (xb, ab) in x
                .chunks(self.block * nf)
                .zip(acc.chunks_mut(self.block * self.n_out))
            {
                self.transpose(xb, xt);
                let nb = xb.len() / nf;
                if nb < LANES {
                    for r in 0..nb {
                        self.row_by_trees(xt, r, &mut ab[r * self.n_out..(r + 1) * self.n_out]);
                    }
                } else {
                    self.block_by_rows(xt, nb, ab);
                }
            }
        });
    }

    /// Trees outer, groups of `LANES` rows inner.
    fn block_by_rows(&self, xt: &[f32], nb: usize, ab: &mut [f64]) {
        match self.width {
            1 => self.block_by_rows_w::<1>(xt, nb, ab),
            2 => self.block_by_rows_w::<2>(xt, nb, ab),
            _ => self.block_by_rows_w::<0>(xt, nb, ab),
        }
    }

    /// [`Self::block_by_rows`] for `W` values per leaf (0: `self.width`).
    #[inline(always)]
    fn block_by_rows_w<const W: usize>(&self, xt: &[f32], nb: usize, ab: &mut [f64]) {
        let w = if W == 0 { self.width } else { W };
        let n_out = self.n_out;
        let nodes = self.nodes.as_ptr().cast::<u8>();
        assert!(xt.len() >= (2 * self.nf + 1) * self.block && nb <= self.block);
        assert!(w == self.width && ab.len() >= nb * n_out);
        let (acc, vals) = (ab.as_mut_ptr(), self.values.as_ptr());
        // Add the values of the leaves at offsets `leaf` to rows g.. (lanes < n).
        // SAFETY (of the calls below): a walk ends on a leaf, whose leaf index is < n_leaves
        // (validated) and values holds n_leaves × w; rows g + k < nb and o + w ≤ n_out, so
        // the slots are inside ab (asserted above).
        let add = |leaf: &[usize], g: usize, o: usize| unsafe {
            for (k, &lo) in leaf.iter().enumerate() {
                let l = (*nodes.add(lo).cast::<FNode>()).leaf as usize;
                let a = acc.add((g + k) * n_out + o);
                let v = vals.add(l * w);
                for j in 0..w {
                    *a.add(j) += *v.add(j);
                }
            }
        };
        let full = nb / LANES * LANES;
        for (t, &root) in self.roots.iter().enumerate() {
            let (depth, o) = (self.depth[t], self.out[t] as usize);
            assert!(o + w <= n_out);
            for g in (0..full).step_by(LANES) {
                // SAFETY: roots and children are offsets of `nodes` (built together); a feature
                // offset is < 2·nf·block·4 bytes and g + LANES ≤ block, so every read is inside
                // xt (asserted above).
                let leaf =
                    unsafe { walk_rows::<LANES>(nodes, root, depth, xt.as_ptr().add(g).cast()) };
                add(&leaf, g, o);
            }
            if full < nb {
                // SAFETY: as above (block is a multiple of LANES, so full + LANES ≤ block); the
                // lanes past nb read stale rows and their leaves are dropped.
                let leaf =
                    unsafe { walk_rows::<LANES>(nodes, root, depth, xt.as_ptr().add(full).cast()) };
                add(&leaf[..nb - full], full, o);
            }
        }
    }

    /// One row (column `r` of the block) through `LANES` trees at a time.
    fn row_by_trees(&self, xt: &[f32], r: usize, a: &mut [f64]) {
        let w = self.width;
        let nodes = self.nodes.as_ptr().cast::<u8>();
        assert!(xt.len() >= (2 * self.nf + 1) * self.block && r < self.block);
        let n_trees = self.roots.len();
        for g in (0..n_trees).step_by(LANES) {
            let end = (g + LANES).min(n_trees);
            let offs = std::array::from_fn(|k| self.roots.get(g + k).map_or(self.pad, |&o| o));
            let depth = self.depth[g..end].iter().copied().max().unwrap_or(0);
            // SAFETY: as in block_by_rows, with one row (displacement 0) for every lane.
            let leaf = unsafe { walk::<LANES, 0>(nodes, offs, depth, xt.as_ptr().add(r).cast()) };
            for (k, &lo) in leaf.iter().enumerate().take(end - g) {
                let l = self.nodes[lo / NODE].leaf as usize;
                let o = self.out[g + k] as usize;
                if w == 1 {
                    a[o] += self.values[l];
                } else {
                    for (d, &v) in a[o..o + w].iter_mut().zip(&self.values[l * w..(l + 1) * w]) {
                        *d += v;
                    }
                }
            }
        }
    }

    /// Saabas contributions of rows `x` to accumulated output slot `col`, row-major
    /// n_rows × (n_features + 1), bias last; divided by the tree count for forests. The rows
    /// are walked like [`Self::accumulate`], groups of rows crediting each edge as they take it
    /// (`Paths::edges`), single rows adding their leaf's root path (`Paths::steps`); both are
    /// built by `paths`, once per output, and add in root-to-leaf order, so every row's sums are
    /// in the one-row walk's order and bit-identical to it.
    pub fn contributions_column(
        &self,
        x: &[f64],
        col: usize,
        out: &mut [f64],
        paths: impl FnOnce() -> Paths,
    ) {
        let nf = self.nf;
        let n_rows = x.len() / nf;
        assert!(col < self.n_out && out.len() == n_rows * (nf + 1));
        let p = self.paths[col].get_or_init(paths);
        out.iter_mut().for_each(|v| *v = 0.0);
        self.with_scratch(|xt| {
            for (xb, ob) in x
                .chunks(self.block * nf)
                .zip(out.chunks_mut(self.block * (nf + 1)))
            {
                self.transpose(xb, xt);
                let nb = xb.len() / nf;
                if nb < LANES {
                    for r in 0..nb {
                        self.contrib_row_by_trees(xt, r, p, &mut ob[r * (nf + 1)..][..nf]);
                    }
                } else {
                    self.contrib_block_by_rows(xt, nb, p, ob);
                }
            }
        });
        let bias = self.divide.map_or(self.bias[col], |n| self.bias[col] / n);
        for o in out.chunks_exact_mut(nf + 1) {
            if let Some(n) = self.divide {
                o[..nf].iter_mut().for_each(|v| *v /= n);
            }
            o[nf] = bias;
        }
    }

    /// Add the root path of leaf `l` of covering tree `i` (index into `p.trees`) into `o`
    /// (n_features values).
    #[inline(always)]
    fn add_path(p: &Paths, i: usize, l: u32, o: &mut [f64]) {
        let pt = &p.trees[i];
        let d = pt.stride as usize;
        let start = pt.base + (l - pt.leaf_start) as usize * d;
        assert!(start + d <= p.steps.len() && o.len() == p.nf);
        // SAFETY: in bounds by the assert; every step's feature is < n_features (`paths` takes
        // them from validated split nodes; padding steps use feature 0); d is even.
        unsafe {
            let mut st = p.steps.as_ptr().add(start);
            let end = st.add(d);
            let o = o.as_mut_ptr();
            while st < end {
                let (a, b) = (&*st, &*st.add(1));
                *o.add(a.feature as usize) += a.delta;
                *o.add(b.feature as usize) += b.delta;
                st = st.add(2);
            }
        }
    }

    /// Covering trees outer, groups of `CREDIT_LANES` rows inner (the rows past the last full
    /// group one at a time).
    fn contrib_block_by_rows(&self, xt: &[f32], nb: usize, p: &Paths, ob: &mut [f64]) {
        let nf = self.nf;
        let nodes = self.nodes.as_ptr().cast::<u8>();
        assert!(xt.len() >= (2 * nf + 1) * self.block && nb <= self.block);
        // Each step credits its edge as the walk takes it (root to leaf: the path table's order,
        // so the same sums bit for bit), reading a per-node table laid out like the nodes
        // instead of a leaf's path from a table far larger than the caches.
        let edges = p.edges.as_ptr().cast::<u8>();
        assert!(p.edges.len() == 2 * self.nodes.len() && p.nf == nf);
        let full = nb / CREDIT_LANES * CREDIT_LANES;
        assert!(ob.len() >= nb * (nf + 1));
        for pt in &p.trees {
            let t = pt.tree as usize;
            let (root, depth) = (self.roots[t], self.depth[t]);
            for g in (0..full).step_by(CREDIT_LANES) {
                // SAFETY: as in block_by_rows, rows g.. g + CREDIT_LANES ≤ nb ≤ block; edges
                // holds two steps per node (asserted), each with a feature < n_features (as in
                // add_path), so every credited slot is in rows g.. of ob (asserted).
                unsafe {
                    walk_credit::<CREDIT_LANES>(
                        nodes,
                        edges,
                        root,
                        depth,
                        xt.as_ptr().add(g).cast(),
                        ob.as_mut_ptr().add(g * (nf + 1)),
                        nf + 1,
                    );
                }
            }
        }
        for r in full..nb {
            self.contrib_row_by_trees(xt, r, p, &mut ob[r * (nf + 1)..][..nf]);
        }
    }

    /// One row through groups of `LANES` covering trees; paths added in tree order.
    fn contrib_row_by_trees(&self, xt: &[f32], r: usize, p: &Paths, o: &mut [f64]) {
        let nodes = self.nodes.as_ptr().cast::<u8>();
        assert!(xt.len() >= (2 * self.nf + 1) * self.block && r < self.block);
        for (gi, g) in p.trees.chunks(LANES).enumerate() {
            let offs = std::array::from_fn(|k| {
                g.get(k).map_or(self.pad, |pt| self.roots[pt.tree as usize])
            });
            let depth = g
                .iter()
                .map(|pt| self.depth[pt.tree as usize])
                .max()
                .unwrap_or(0);
            // SAFETY: as in row_by_trees.
            let leaf = unsafe { walk::<LANES, 0>(nodes, offs, depth, xt.as_ptr().add(r).cast()) };
            for (k, &lo) in leaf.iter().enumerate().take(g.len()) {
                let l = self.nodes[lo / NODE].leaf;
                Self::add_path(p, gi * LANES + k, l, o);
            }
        }
    }
}

/// One step of a leaf's root path: the split's feature and the change of value it credits.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct PathStep {
    pub delta: f64,
    pub feature: u64,
}

/// For one accumulated output: every covering tree's leaves' root paths, each padded with zero
/// steps to the tree's depth rounded up to even (adding +0.0 leaves a sum unchanged: a sum
/// that starts at +0.0 is never −0.0).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Paths {
    /// The trees adding into the output, in model order.
    trees: Vec<PathTree>,
    /// Per covering tree, per leaf (in leaf index order): `stride` steps.
    steps: Vec<PathStep>,
    /// Per node of the scoring layout, the step a walk credits when it leaves the node: to the
    /// next node, then to the jump child (zero steps for leaves and for nodes of trees that do
    /// not cover the output). Node byte offset `o`, direction `d`: byte offset `2·o + 16·d`.
    edges: Vec<PathStep>,
    nf: usize,
}

/// Where a covering tree's paths are.
#[derive(Debug, Clone, PartialEq)]
struct PathTree {
    tree: u32,
    leaf_start: u32,
    /// Steps per leaf (even).
    stride: u32,
    /// Index of its first leaf's first step.
    base: usize,
}

/// The contribution table of accumulated output `col`, from the compact arrays: along a leaf's
/// path, each split credits `scale · (value(child) − value(split))` to its feature (the
/// one-row walk's terms, in its order).
#[allow(clippy::too_many_arguments)]
pub(crate) fn paths(
    flat: &Flat,
    trees: &[TreeMeta],
    nodes: &[Node<f32>],
    leaf_values: &[f64],
    node_values: &[f64],
    n_features: usize,
    width: usize,
    scale: f64,
    col: usize,
) -> Paths {
    let value = |c: i32, k: usize| -> f64 {
        if c >= 0 {
            node_values[c as usize * width + k]
        } else {
            leaf_values[(!c) as usize * width + k]
        }
    };
    let zero = PathStep {
        delta: 0.0,
        feature: 0,
    };
    let mut p = Paths {
        trees: Vec::new(),
        steps: Vec::new(),
        edges: vec![zero; 2 * flat.nodes.len()],
        nf: n_features,
    };
    for (ti, t) in trees.iter().enumerate() {
        let o = t.output as usize;
        if !(o <= col && col < o + width) {
            continue;
        }
        let k = col - o;
        let d = t.depth as usize;
        let stride = d + d % 2;
        let base = p.steps.len();
        #[allow(clippy::cast_possible_truncation)]
        p.trees.push(PathTree {
            tree: ti as u32,
            leaf_start: t.leaf_start,
            stride: stride as u32,
            base,
        });
        // the edges of this tree's nodes (pre-order, contiguous from its root)
        let first = flat.roots[ti] as usize / NODE;
        let end = flat
            .roots
            .get(ti + 1)
            .map_or(flat.pad as usize / NODE, |&r| r as usize / NODE);
        for i in first..end {
            let c = flat.compact[i];
            if c < 0 {
                continue;
            }
            let n = nodes[c as usize];
            let feature = u64::from(n.feature & !MISSING_LEFT);
            // the next node is the child NaN goes to (as `build` lays them out)
            let (next, jump) = if n.feature & MISSING_LEFT != 0 {
                (n.left, n.right)
            } else {
                (n.right, n.left)
            };
            for (d, child) in [next, jump].into_iter().enumerate() {
                let delta = scale * (value(child, k) - value(c, k));
                p.edges[2 * i + d] = PathStep { delta, feature };
            }
        }
        p.steps
            .resize(base + (t.leaf_end - t.leaf_start) as usize * stride, zero);
        // depth first, keeping the current root path: (node, steps above it, step into it)
        let mut path: Vec<PathStep> = Vec::with_capacity(d);
        let mut stack = vec![(t.root, 0usize, None::<PathStep>)];
        while let Some((c, len, into)) = stack.pop() {
            path.truncate(len);
            path.extend(into);
            if c < 0 {
                let l = (!c) as usize - t.leaf_start as usize;
                p.steps[base + l * stride..][..path.len()].copy_from_slice(&path);
                continue;
            }
            let n = nodes[c as usize];
            let feature = u64::from(n.feature & !MISSING_LEFT);
            for child in [n.right, n.left] {
                let delta = scale * (value(child, k) - value(c, k));
                stack.push((child, path.len(), Some(PathStep { delta, feature })));
            }
        }
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trees::model::tests::Lcg;
    use crate::trees::model::{leaf, Nodes};
    use crate::trees::testutil::info;
    use crate::trees::{Ensemble, Link, TreeSpec};

    /// Values that sit on every edge of the float32 cast and comparison.
    fn edge(g: &mut Lcg) -> f64 {
        const E: [f64; 14] = [
            0.0,
            -0.0,
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::NAN,
            1e30,
            -1e30,
            3.4028235e38,
            -3.4028235e38,
            1e-45,
            -1e-45,
            0.1,
            -0.1,
            0.5,
        ];
        match g.next() % 4 {
            0 => E[(g.next() % 14) as usize],
            _ => ((g.next() % 21) as f64 - 10.0) / 20.0,
        }
    }

    /// A random tree whose thresholds and inputs share the edge values (and the grid around 0).
    fn tree(g: &mut Lcg, nf: usize, width: usize, depth: u32, output: usize) -> TreeSpec {
        let mut s = TreeSpec::empty(output);
        fn grow(g: &mut Lcg, s: &mut TreeSpec, nf: usize, w: usize, depth: u32) -> i64 {
            let i = s.children_left.len();
            s.children_left.push(-1);
            s.children_right.push(-1);
            s.feature.push(-2);
            s.threshold.push(-2.0);
            s.missing_left.push(false);
            for _ in 0..w {
                s.value.push((g.next() % 1000) as f64 / 7.0 - 50.0);
            }
            s.count.push(1.0);
            if depth > 0 && g.next() % 6 != 0 {
                s.feature[i] = (g.next() % nf as u64) as i64;
                let mut t = edge(g);
                while t.is_nan() {
                    t = edge(g);
                }
                s.threshold[i] = t;
                s.missing_left[i] = g.next() % 2 == 0;
                let l = grow(g, s, nf, w, depth - 1);
                let r = grow(g, s, nf, w, depth - 1);
                s.children_left[i] = l;
                s.children_right[i] = r;
            }
            i as i64
        }
        grow(g, &mut s, nf, width, depth);
        s
    }

    fn models(g: &mut Lcg, nf: usize) -> Vec<Ensemble> {
        let n_trees = 1 + (g.next() % 19) as usize;
        let depth = |g: &mut Lcg| (g.next() % 10) as u32;
        let forest: Vec<_> = (0..n_trees)
            .map(|_| {
                let d = depth(g);
                tree(g, nf, 3, d, 0)
            })
            .collect();
        let binary: Vec<_> = (0..n_trees)
            .map(|_| {
                let d = depth(g);
                tree(g, nf, 2, d, 0)
            })
            .collect();
        let boost: Vec<_> = (0..n_trees)
            .map(|t| {
                let d = depth(g);
                tree(g, nf, 1, d, t % 3)
            })
            .collect();
        let boosting = Aggregation::Boosting {
            init: vec![0.1, -0.2, 0.3],
            scale: 0.1,
            link: Link::Softmax,
            zero_is_positive: false,
        };
        let iso = Aggregation::Isolation {
            average_path_length_max_samples: 3.0,
            offset: -0.5,
        };
        let single: Vec<_> = boost
            .iter()
            .map(|t| TreeSpec {
                output: 0,
                ..t.clone()
            })
            .collect();
        vec![
            Ensemble::new(info(nf, 3, Aggregation::Mean, Some(3)), &forest).unwrap(),
            Ensemble::new(info(nf, 2, Aggregation::Mean, Some(2)), &binary).unwrap(),
            Ensemble::new(info(nf, 1, boosting, Some(3)), &boost).unwrap(),
            Ensemble::new(info(nf, 1, iso, None), &single).unwrap(),
        ]
    }

    /// The flat walk lands every row in the leaf the compact walk (sklearn's rule on the
    /// float32-cast row) does, NaN, ±inf, ±0, subnormals and threshold ties included, and sums
    /// in the same order (bit-identical), for row counts on both sides of the lane count and
    /// past a block.
    #[test]
    fn flat_scoring_matches_compact_walk() {
        let mut g = Lcg(11);
        for case in 0..60 {
            let nf = 1 + case % 4;
            for e in models(&mut g, nf) {
                let flat = e.flat.as_ref().unwrap();
                let Nodes::F32(nodes) = &e.nodes else {
                    panic!()
                };
                let n_rows = match case % 3 {
                    0 => 1 + (g.next() % 7) as usize,
                    1 => 8 + (g.next() % 60) as usize,
                    _ => flat.block + (g.next() % 20) as usize,
                };
                let x: Vec<f64> = (0..n_rows * nf).map(|_| edge(&mut g)).collect();
                let got = e.accumulate(&x, n_rows).unwrap();
                let (w, n_out) = (e.info.width, e.n_outputs());
                let mut want = match &e.info.aggregation {
                    Aggregation::Boosting { init, .. } => init.repeat(n_rows),
                    _ => vec![0.0; n_rows * n_out],
                };
                let scale = match &e.info.aggregation {
                    Aggregation::Boosting { scale, .. } => *scale,
                    _ => 1.0,
                };
                for r in 0..n_rows {
                    let row: Vec<f32> = x[r * nf..(r + 1) * nf].iter().map(|&v| v as f32).collect();
                    for t in &e.trees {
                        let l = leaf(nodes, t.root, &row);
                        for k in 0..w {
                            want[r * n_out + t.output as usize + k] +=
                                scale * e.leaf_values[l * w + k];
                        }
                    }
                }
                let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&got), bits(&want), "case {case} {}", e.info.width);
            }
        }
    }

    /// Contributions from the lane walks and path tables equal the one-row walk bit for bit
    /// (rows as lanes and trees as lanes), and per column as in the full array.
    #[test]
    fn flat_contributions_match_generic() {
        let mut g = Lcg(12);
        for case in 0..60 {
            let nf = 1 + case % 4;
            for e in models(&mut g, nf) {
                let n_rows = if case % 2 == 0 {
                    1 + (g.next() % 7) as usize
                } else {
                    8 + (g.next() % 40) as usize
                };
                let x: Vec<f64> = (0..n_rows * nf).map(|_| edge(&mut g)).collect();
                let got = e.contributions(&x, n_rows).unwrap();
                let want = e.contributions_generic(&x, n_rows).unwrap();
                assert_eq!(got.len(), want.len());
                for (i, (a, b)) in got.iter().zip(&want).enumerate() {
                    if n_rows >= LANES {
                        assert_eq!(a.to_bits(), b.to_bits(), "case {case} at {i}: {a} {b}");
                    } else {
                        assert!(
                            (a - b).abs() <= 1e-12 * b.abs().max(1.0),
                            "case {case}: {a} {b}"
                        );
                    }
                }
                let m = e.contribution_outputs();
                for c in 0..m {
                    let col = e.contributions_column(&x, n_rows, c).unwrap();
                    for (a, b) in col.iter().zip(got.iter().skip(c).step_by(m)) {
                        assert_eq!(a.to_bits(), b.to_bits());
                    }
                }
                assert!(e.contributions_column(&x, n_rows, m).is_err());
            }
        }
    }

    #[test]
    fn next_up_edges() {
        assert_eq!(next_up(f32::NEG_INFINITY), -f32::MAX);
        assert_eq!(next_up(f32::MAX), f32::INFINITY);
        assert_eq!(next_up(0.0), f32::from_bits(1));
        assert_eq!(next_up(-0.0), f32::from_bits(1));
        assert_eq!(next_up(-f32::from_bits(1)), -0.0);
        assert_eq!(next_up(1.0), 1.000_000_1);
        assert_eq!(next_up(-1.0), -0.999_999_94);
    }
}
