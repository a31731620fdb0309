//! The versioned, self-describing artifact:
//!
//! ```text
//! magic "IWTREES\0" | format version u32 | header length u32 | body length u64
//! | JSON header (ModelInfo) | binary body | FNV-1a 64 checksum of header ‖ body
//! ```
//! All integers little-endian. The body holds the compiled arrays: tree table, split nodes
//! (feature u32, threshold f64 bits, left i32, right i32), leaf values, node values. Loading
//! re-runs the structural validation, so a corrupt-but-checksummed file still cannot make
//! scoring index out of bounds; nothing here panics on any input.

use super::model::{Node, Nodes, TreeMeta};
use super::{Ensemble, ModelInfo, Precision, TreeError};

const MAGIC: &[u8; 8] = b"IWTREES\0";
/// Bump on any incompatible layout change; older readers refuse newer files.
pub const FORMAT_VERSION: u32 = 1;
const PREFIX: usize = 8 + 4 + 4 + 8;

fn fnv1a64(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for &b in *p {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

fn err(m: impl Into<String>) -> TreeError {
    TreeError::Artifact(m.into())
}

impl Ensemble {
    /// Serialize to the artifact format.
    #[must_use]
    pub fn to_bytes(&self) -> Vec<u8> {
        // ModelInfo holds only strings, numbers and JSON values: serialization cannot fail.
        let header = serde_json::to_vec(&self.info).unwrap_or_default();
        let mut body = Vec::new();
        put_u32(&mut body, self.trees.len());
        for t in &self.trees {
            body.extend_from_slice(&t.root.to_le_bytes());
            for v in [t.output, t.node_start, t.node_end, t.leaf_start, t.leaf_end] {
                body.extend_from_slice(&v.to_le_bytes());
            }
        }
        put_u32(&mut body, self.nodes.len());
        for i in 0..self.nodes.len() {
            let (f, ml, thr, l, r) = self.nodes.get(i);
            let f = f | if ml { super::model::MISSING_LEFT } else { 0 };
            body.extend_from_slice(&f.to_le_bytes());
            body.extend_from_slice(&thr.to_bits().to_le_bytes());
            body.extend_from_slice(&l.to_le_bytes());
            body.extend_from_slice(&r.to_le_bytes());
        }
        for vals in [&self.leaf_values, &self.node_values] {
            body.extend_from_slice(&(vals.len() as u64).to_le_bytes());
            for v in vals.iter() {
                body.extend_from_slice(&v.to_bits().to_le_bytes());
            }
        }
        let mut out = Vec::with_capacity(PREFIX + header.len() + body.len() + 8);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        put_u32(&mut out, header.len());
        out.extend_from_slice(&(body.len() as u64).to_le_bytes());
        out.extend_from_slice(&header);
        out.extend_from_slice(&body);
        out.extend_from_slice(&fnv1a64(&[&header, &body]).to_le_bytes());
        out
    }

    /// Parse and validate an artifact.
    ///
    /// # Errors
    /// [`TreeError::Artifact`] for anything that is not an intact artifact of a known version.
    pub fn from_bytes(data: &[u8]) -> Result<Self, TreeError> {
        if data.len() < MAGIC.len() || &data[..MAGIC.len()] != MAGIC {
            return Err(err(
                "missing magic bytes (not a tree artifact: another file type?)",
            ));
        }
        let mut r = Reader {
            data,
            pos: MAGIC.len(),
        };
        let version = r.u32()?;
        if version != FORMAT_VERSION {
            return Err(err(format!(
                "format version {version} is not supported (this build reads version {FORMAT_VERSION})"
            )));
        }
        let header_len = r.u32()? as usize;
        let body_len = usize::try_from(r.u64()?).map_err(|_| err("body length overflows"))?;
        let expected = PREFIX
            .checked_add(header_len)
            .and_then(|n| n.checked_add(body_len))
            .and_then(|n| n.checked_add(8))
            .ok_or_else(|| err("lengths overflow"))?;
        if data.len() != expected {
            return Err(err(format!(
                "truncated or padded: {} bytes, expected {expected}",
                data.len()
            )));
        }
        let header = r.take(header_len)?;
        let body = r.take(body_len)?;
        let sum = r.u64()?;
        if sum != fnv1a64(&[header, body]) {
            return Err(err("checksum mismatch (the file is corrupt)"));
        }
        let info: ModelInfo =
            serde_json::from_slice(header).map_err(|e| err(format!("bad header: {e}")))?;
        let mut b = Reader { data: body, pos: 0 };
        let n_trees = b.count(24)?;
        let mut trees = Vec::with_capacity(n_trees);
        for _ in 0..n_trees {
            let root = b.i32()?;
            let mut v = [0u32; 5];
            for x in &mut v {
                *x = b.u32()?;
            }
            trees.push(TreeMeta {
                root,
                output: v[0],
                node_start: v[1],
                node_end: v[2],
                leaf_start: v[3],
                leaf_end: v[4],
                depth: 0, // set by validate
            });
        }
        let n_nodes = b.count(20)?;
        let mut raw = Vec::with_capacity(n_nodes);
        for _ in 0..n_nodes {
            raw.push((b.u32()?, f64::from_bits(b.u64()?), b.i32()?, b.i32()?));
        }
        let nodes = match info.precision {
            Precision::F64 => Nodes::F64(
                raw.iter()
                    .map(|&(feature, threshold, left, right)| Node {
                        feature,
                        threshold,
                        left,
                        right,
                    })
                    .collect(),
            ),
            Precision::F32 => Nodes::F32(
                raw.iter()
                    .map(|&(feature, t, left, right)| {
                        #[allow(clippy::cast_possible_truncation)]
                        let t32 = t as f32;
                        if f64::from(t32).to_bits() != t.to_bits() {
                            return Err(err("a float32 threshold is not representable"));
                        }
                        Ok(Node {
                            feature,
                            threshold: t32,
                            left,
                            right,
                        })
                    })
                    .collect::<Result<_, _>>()?,
            ),
        };
        let leaf_values = b.f64s()?;
        let node_values = b.f64s()?;
        if b.pos != body.len() {
            return Err(err("trailing bytes in the body"));
        }
        let mut e = Ensemble {
            info,
            trees,
            nodes,
            leaf_values,
            node_values,
            flat: None,
        };
        e.validate().map_err(|e| err(e.to_string()))?;
        Ok(e)
    }
}

fn put_u32(out: &mut Vec<u8>, n: usize) {
    // sizes are bounded by compile() (< 2^31)
    out.extend_from_slice(&u32::try_from(n).unwrap_or(u32::MAX).to_le_bytes());
}

struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], TreeError> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.data.len());
        let end = end.ok_or_else(|| err("unexpected end of data"))?;
        let s = &self.data[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn arr<const N: usize>(&mut self) -> Result<[u8; N], TreeError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }
    fn u32(&mut self) -> Result<u32, TreeError> {
        Ok(u32::from_le_bytes(self.arr()?))
    }
    fn i32(&mut self) -> Result<i32, TreeError> {
        Ok(i32::from_le_bytes(self.arr()?))
    }
    fn u64(&mut self) -> Result<u64, TreeError> {
        Ok(u64::from_le_bytes(self.arr()?))
    }
    /// A u32 element count whose elements (of `size` bytes) must fit in what is left, so a
    /// corrupt count cannot trigger a huge allocation.
    fn count(&mut self, size: usize) -> Result<usize, TreeError> {
        let n = self.u32()? as usize;
        if n.saturating_mul(size) > self.data.len() - self.pos {
            return Err(err("element count exceeds the data"));
        }
        Ok(n)
    }
    fn f64s(&mut self) -> Result<Vec<f64>, TreeError> {
        let n = usize::try_from(self.u64()?).map_err(|_| err("count overflows"))?;
        if n.saturating_mul(8) > self.data.len() - self.pos {
            return Err(err("element count exceeds the data"));
        }
        (0..n).map(|_| Ok(f64::from_bits(self.u64()?))).collect()
    }
}

/// Current UTC time as RFC 3339 (seconds precision) without a date crate.
pub(crate) fn now_rfc3339() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trees::testutil::{info, stump};
    use crate::trees::{Aggregation, Link};

    fn sample() -> Ensemble {
        let agg = Aggregation::Boosting {
            init: vec![0.1, -0.2, 0.3],
            scale: 0.5,
            link: Link::Softmax,
            zero_is_positive: false,
        };
        let trees: Vec<_> = (0..6)
            .map(|i| stump(i % 2, 0.1, &[0.5], &[-1.0], &[3.0], i as usize % 3))
            .collect();
        let mut i = info(2, 1, agg, Some(3));
        i.metadata = serde_json::json!({"metrics": {"auc": 0.9}});
        Ensemble::new(i, &trees).unwrap()
    }

    #[test]
    fn round_trip() {
        let e = sample();
        let b = e.to_bytes();
        let e2 = Ensemble::from_bytes(&b).unwrap();
        assert_eq!(e2.info(), e.info());
        let x = [0.1, 0.100_000_01, f64::NAN, -3.0];
        assert_eq!(
            e.predict_proba(&x, 2).unwrap(),
            e2.predict_proba(&x, 2).unwrap()
        );
        assert_eq!(e2.to_bytes(), b);
        assert!(e.info().created.ends_with('Z') && e.info().created.len() == 20);
    }

    #[test]
    fn rejects_foreign_truncated_future_and_corrupt() {
        let b = sample().to_bytes();
        assert!(Ensemble::from_bytes(b"\x89PNG\r\n\x1a\n....").is_err());
        assert!(Ensemble::from_bytes(b"\x80\x04\x95").is_err());
        assert!(Ensemble::from_bytes(&[]).is_err());
        for n in [0, 7, 8, 12, 23, b.len() / 2, b.len() - 1] {
            assert!(Ensemble::from_bytes(&b[..n]).is_err(), "truncated at {n}");
        }
        let mut fut = b.clone();
        fut[8] = 2;
        assert!(Ensemble::from_bytes(&fut)
            .unwrap_err()
            .to_string()
            .contains("version 2"));
        let mut g = super::super::model::tests::Lcg(3);
        for _ in 0..3000 {
            let mut m = b.clone();
            for _ in 0..(g.next() % 4 + 1) {
                let i = (g.next() as usize) % m.len();
                m[i] ^= (g.next() % 255 + 1) as u8;
            }
            assert!(Ensemble::from_bytes(&m).is_err());
        }
    }

    #[test]
    fn checksummed_garbage_never_panics() {
        // rewrite body bytes and fix the checksum: validation must still catch it
        let b = sample().to_bytes();
        let hl = u32::from_le_bytes(b[12..16].try_into().unwrap()) as usize;
        let mut g = super::super::model::tests::Lcg(11);
        for _ in 0..3000 {
            let mut m = b.clone();
            let i = PREFIX + hl + (g.next() as usize) % (m.len() - PREFIX - hl - 8);
            m[i] = g.next() as u8;
            let n = m.len();
            let sum = fnv1a64(&[&m[PREFIX..PREFIX + hl], &m[PREFIX + hl..n - 8]]);
            m[n - 8..].copy_from_slice(&sum.to_le_bytes());
            if let Ok(e) = Ensemble::from_bytes(&m) {
                let _ = e.predict_proba(&[f64::NAN, 1.0, -1e30, 0.1], 2);
                let _ = e.contributions(&[f64::NAN, 1.0, -1e30, 0.1], 2);
            }
        }
    }
}
