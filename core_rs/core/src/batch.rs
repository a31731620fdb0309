//! `ReadingBatch`: the columnar result of decoding — one row per good reading.
//!
//! Other kernels read a batch only through the accessors below, so the decoder is free to
//! change how it stores the columns. Storage is chosen for the decoder's speed: sensor ids live
//! in one string arena, sites and zones are interned (a batch has few distinct ones), and each
//! field column is filled lazily (NaN-padded once, in [`ReadingBatch::finish`]).

use hashbrown::HashMap;

use crate::fields::{canonical_index, Kind, CANONICAL_FIELDS};

/// A per-message decode problem: which input message, a stable reason code, a human message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageError {
    pub index: usize,
    pub reason: &'static str,
    pub message: String,
}

const N_CANONICAL: usize = CANONICAL_FIELDS.len();
const NO_COLUMN: u32 = u32::MAX;

#[derive(Debug, Clone)]
struct Column {
    name: String,
    /// Index into `CANONICAL_FIELDS`, or `None` for an unknown field.
    canonical: Option<u8>,
    values: Vec<f64>,
}

/// Decoded readings in columns. Fields are presented (`field_names`, `fields`) canonical
/// columns first, in `CANONICAL_FIELDS` order and only those present in the batch, then unknown
/// fields in order of first appearance; NaN where a reading lacks the field.
#[derive(Debug, Clone)]
pub struct ReadingBatch {
    pub timestamp_ns: Vec<i64>,
    /// Index of the input message each reading came from.
    pub source: Vec<i32>,
    pub errors: Vec<MessageError>,
    /// Number of input messages the batch was decoded from.
    pub messages: usize,
    kind: Vec<Kind>,
    sensor_text: String,
    sensor_end: Vec<u32>,
    site: Vec<u32>,
    zone: Vec<u32>,
    strings: Vec<String>,
    string_ids: HashMap<String, u32>,
    /// In order of creation; `order` is the presentation order.
    columns: Vec<Column>,
    canonical_col: [u32; N_CANONICAL],
    unknown_col: HashMap<String, u32>,
    order: Vec<u32>,
    /// Rows expected (capacity of a new column).
    row_hint: usize,
}

impl Default for ReadingBatch {
    fn default() -> Self {
        ReadingBatch {
            timestamp_ns: Vec::new(),
            source: Vec::new(),
            errors: Vec::new(),
            messages: 0,
            kind: Vec::new(),
            sensor_text: String::new(),
            sensor_end: Vec::new(),
            site: Vec::new(),
            zone: Vec::new(),
            strings: Vec::new(),
            string_ids: HashMap::new(),
            columns: Vec::new(),
            canonical_col: [NO_COLUMN; N_CANONICAL],
            unknown_col: HashMap::new(),
            order: Vec::new(),
            row_hint: 0,
        }
    }
}

/// The lengths to return to when a message turns out to be invalid JSON half-way through.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Checkpoint {
    rows: usize,
    sensor_text: usize,
    errors: usize,
    columns: usize,
}

impl ReadingBatch {
    #[must_use]
    pub fn len(&self) -> usize {
        self.timestamp_ns.len()
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.timestamp_ns.is_empty()
    }

    /// The sensor id of reading `i` (panics when `i >= len()`, like slice indexing).
    #[must_use]
    pub fn sensor_id(&self, i: usize) -> &str {
        let start = if i == 0 {
            0
        } else {
            self.sensor_end[i - 1] as usize
        };
        &self.sensor_text[start..self.sensor_end[i] as usize]
    }

    /// The sensor ids of all rows, concatenated: row `i`'s is the text between
    /// `sensor_ends()[i - 1]` (0 for the first row) and `sensor_ends()[i]`.
    #[must_use]
    pub fn sensor_text(&self) -> &str {
        &self.sensor_text
    }

    /// Per row, the end of its sensor id in [`ReadingBatch::sensor_text`] (byte offset).
    #[must_use]
    pub fn sensor_ends(&self) -> &[u32] {
        &self.sensor_end
    }

    /// All sensor ids, in row order.
    pub fn sensor_ids(&self) -> impl ExactSizeIterator<Item = &str> + '_ {
        (0..self.len()).map(|i| self.sensor_id(i))
    }

    #[must_use]
    pub fn site(&self, i: usize) -> &str {
        &self.strings[self.site[i] as usize]
    }

    #[must_use]
    pub fn zone(&self, i: usize) -> &str {
        &self.strings[self.zone[i] as usize]
    }

    #[must_use]
    pub fn kind(&self, i: usize) -> Kind {
        self.kind[i]
    }

    #[must_use]
    pub fn kinds(&self) -> &[Kind] {
        &self.kind
    }

    /// Per row, an index into [`ReadingBatch::interned`] giving its site.
    #[must_use]
    pub fn site_ids(&self) -> &[u32] {
        &self.site
    }

    /// Per row, an index into [`ReadingBatch::interned`] giving its (upper-cased) zone.
    #[must_use]
    pub fn zone_ids(&self) -> &[u32] {
        &self.zone
    }

    /// The distinct site and zone strings of the batch.
    #[must_use]
    pub fn interned(&self) -> &[String] {
        &self.strings
    }

    /// The column of a field by name, if any reading in the batch has it.
    #[must_use]
    pub fn field(&self, name: &str) -> Option<&[f64]> {
        self.columns
            .iter()
            .find(|c| c.name == name)
            .map(|c| c.values.as_slice())
    }

    /// The column of a canonical field by its index in `CANONICAL_FIELDS`.
    #[must_use]
    pub fn canonical_field(&self, index: usize) -> Option<&[f64]> {
        let c = *self.canonical_col.get(index)?;
        self.columns.get(c as usize).map(|c| c.values.as_slice())
    }

    pub fn field_names(&self) -> impl Iterator<Item = &str> {
        self.order
            .iter()
            .map(|&c| self.columns[c as usize].name.as_str())
    }

    /// `(name, column)` pairs in presentation order.
    pub fn fields(&self) -> impl ExactSizeIterator<Item = (&str, &[f64])> {
        self.order.iter().map(|&c| {
            let col = &self.columns[c as usize];
            (col.name.as_str(), col.values.as_slice())
        })
    }

    /// Append one reading (for code that builds batches without decoding, such as tests of
    /// other kernels). Field names resolve like payload keys (aliases, any case); NaN values are
    /// left missing; a name given twice keeps the last value.
    #[allow(clippy::too_many_arguments)]
    pub fn push_reading(
        &mut self,
        sensor_id: &str,
        kind: Kind,
        site: &str,
        zone: &str,
        timestamp_ns: i64,
        source: i32,
        fields: &[(&str, f64)],
    ) {
        let site = self.intern(site);
        let zone = self.intern(&zone.to_uppercase());
        let row = self.push_row(sensor_id, kind, site, zone, timestamp_ns, source);
        for &(name, v) in fields {
            if v.is_nan() {
                continue;
            }
            match canonical_index(name) {
                Some(i) => self.set_canonical(row, i, v),
                None => self.set_unknown(row, &name.to_ascii_lowercase(), v),
            }
        }
        self.finish();
    }

    /// Expect about `rows` more rows: reserve the per-row vectors, and size new columns for them.
    pub(crate) fn reserve_rows(&mut self, rows: usize) {
        self.timestamp_ns.reserve(rows);
        self.source.reserve(rows);
        self.kind.reserve(rows);
        self.sensor_end.reserve(rows);
        self.sensor_text.reserve(rows * 8);
        self.site.reserve(rows);
        self.zone.reserve(rows);
        self.row_hint = self.len() + rows;
        for col in &mut self.columns {
            col.values
                .reserve(self.row_hint.saturating_sub(col.values.len()));
        }
    }

    /// Empty the batch, keeping allocations.
    pub(crate) fn clear(&mut self) {
        self.timestamp_ns.clear();
        self.source.clear();
        self.errors.clear();
        self.messages = 0;
        self.kind.clear();
        self.sensor_text.clear();
        self.sensor_end.clear();
        self.site.clear();
        self.zone.clear();
        self.strings.clear();
        self.string_ids.clear();
        self.columns.clear();
        self.canonical_col = [NO_COLUMN; N_CANONICAL];
        self.unknown_col.clear();
        self.order.clear();
        self.row_hint = 0;
    }

    /// The id of an interned site or zone string.
    pub(crate) fn intern(&mut self, s: &str) -> u32 {
        if let Some(&id) = self.string_ids.get(s) {
            return id;
        }
        let id = u32::try_from(self.strings.len()).unwrap_or(u32::MAX);
        self.strings.push(s.to_owned());
        self.string_ids.insert(s.to_owned(), id);
        id
    }

    #[must_use]
    pub(crate) fn interned_str(&self, id: u32) -> &str {
        self.strings.get(id as usize).map_or("", String::as_str)
    }

    /// Append a row without fields; returns its index. Fields follow with `set_*`.
    pub(crate) fn push_row(
        &mut self,
        sensor_id: &str,
        kind: Kind,
        site: u32,
        zone: u32,
        ts: i64,
        source: i32,
    ) -> usize {
        let row = self.timestamp_ns.len();
        self.sensor_text.push_str(sensor_id);
        // Payloads are at most 64 KiB and batches far below 4 GiB of sensor ids.
        self.sensor_end
            .push(u32::try_from(self.sensor_text.len()).unwrap_or(u32::MAX));
        self.kind.push(kind);
        self.site.push(site);
        self.zone.push(zone);
        self.timestamp_ns.push(ts);
        self.source.push(source);
        row
    }

    fn set(values: &mut Vec<f64>, row: usize, v: f64) {
        if let Some(slot) = values.get_mut(row) {
            *slot = v;
        } else {
            values.resize(row, f64::NAN);
            values.push(v);
        }
    }

    /// Set canonical field `index` of `row` (the last row).
    pub(crate) fn set_canonical(&mut self, row: usize, index: usize, v: f64) {
        let Some(&c) = self.canonical_col.get(index) else {
            return;
        };
        let c = if c == NO_COLUMN {
            let c = u32::try_from(self.columns.len()).unwrap_or(u32::MAX);
            self.columns.push(Column {
                name: CANONICAL_FIELDS[index].name.to_owned(),
                canonical: u8::try_from(index).ok(),
                values: Vec::with_capacity(self.row_hint.max(row + 1)),
            });
            self.canonical_col[index] = c;
            c
        } else {
            c
        };
        Self::set(&mut self.columns[c as usize].values, row, v);
    }

    /// Set the unknown field `name` (already lower-cased and validated) of `row` (the last row).
    pub(crate) fn set_unknown(&mut self, row: usize, name: &str, v: f64) {
        let c = if let Some(&c) = self.unknown_col.get(name) {
            c
        } else {
            let c = u32::try_from(self.columns.len()).unwrap_or(u32::MAX);
            self.columns.push(Column {
                name: name.to_owned(),
                canonical: None,
                values: Vec::with_capacity(self.row_hint.max(row + 1)),
            });
            self.unknown_col.insert(name.to_owned(), c);
            c
        };
        Self::set(&mut self.columns[c as usize].values, row, v);
    }

    pub(crate) fn checkpoint(&self) -> Checkpoint {
        Checkpoint {
            rows: self.len(),
            sensor_text: self.sensor_text.len(),
            errors: self.errors.len(),
            columns: self.columns.len(),
        }
    }

    /// Forget everything added since `cp`.
    pub(crate) fn rollback(&mut self, cp: Checkpoint) {
        self.timestamp_ns.truncate(cp.rows);
        self.source.truncate(cp.rows);
        self.kind.truncate(cp.rows);
        self.site.truncate(cp.rows);
        self.zone.truncate(cp.rows);
        self.sensor_end.truncate(cp.rows);
        self.sensor_text.truncate(cp.sensor_text);
        self.errors.truncate(cp.errors);
        if self.columns.len() > cp.columns {
            self.columns.truncate(cp.columns);
            let limit = u32::try_from(cp.columns).unwrap_or(u32::MAX);
            for c in &mut self.canonical_col {
                if *c != NO_COLUMN && *c >= limit {
                    *c = NO_COLUMN;
                }
            }
            self.unknown_col.retain(|_, c| *c < limit);
        }
        for col in &mut self.columns {
            col.values.truncate(cp.rows);
        }
    }

    /// Pad every column to `len()` with NaN and fix the presentation order. Accessors are
    /// valid after this; the decoder calls it once at the end.
    pub(crate) fn finish(&mut self) {
        let n = self.len();
        for col in &mut self.columns {
            col.values.resize(n, f64::NAN);
        }
        self.order.clear();
        self.order
            .extend((0..self.columns.len()).filter_map(|c| u32::try_from(c).ok()));
        // Stable: unknown columns keep their order of first appearance.
        let columns = &self.columns;
        self.order
            .sort_by_key(|&c| columns[c as usize].canonical.map_or(u16::MAX, u16::from));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_reading_builds_padded_ordered_columns() {
        let mut b = ReadingBatch::default();
        b.push_reading(
            "s1",
            Kind::WaterFlow,
            "p",
            "critical",
            5,
            0,
            &[("flow", 1.0), ("zeta", 2.0)],
        );
        b.push_reading(
            "s2",
            Kind::Energy,
            "p",
            "STANDARD",
            6,
            1,
            &[("PH", 7.0), ("pressure", f64::NAN)],
        );
        assert_eq!(b.len(), 2);
        assert_eq!(b.sensor_id(1), "s2");
        assert_eq!(b.zone(0), "CRITICAL");
        assert_eq!(b.site(1), "p");
        assert_eq!(
            b.field_names().collect::<Vec<_>>(),
            ["flow_rate_lps", "ph", "zeta"]
        );
        let ph = b.field("ph").unwrap();
        assert!(ph[0].is_nan() && ph[1] == 7.0);
        assert_eq!(b.field("zeta").unwrap().len(), 2);
        assert!(b.field("pressure_bar").is_none());
        assert_eq!(b.canonical_field(4).unwrap()[1], 7.0);
    }

    #[test]
    fn rollback_forgets_rows_columns_and_errors() {
        let mut b = ReadingBatch::default();
        let z = b.intern("STANDARD");
        let r = b.push_row("a", Kind::Energy, z, z, 1, 0);
        b.set_canonical(r, 0, 1.0);
        let cp = b.checkpoint();
        let r = b.push_row("bb", Kind::Energy, z, z, 2, 1);
        b.set_canonical(r, 0, 2.0);
        b.set_canonical(r, 3, 2.0);
        b.set_unknown(r, "x", 3.0);
        b.errors.push(MessageError {
            index: 1,
            reason: "x",
            message: String::new(),
        });
        b.rollback(cp);
        b.finish();
        assert_eq!(b.len(), 1);
        assert!(b.errors.is_empty());
        assert_eq!(
            b.fields().map(|(n, v)| (n, v.to_vec())).collect::<Vec<_>>(),
            [("pressure_bar", vec![1.0])]
        );
        assert_eq!(b.sensor_ids().collect::<Vec<_>>(), ["a"]);
    }
}
