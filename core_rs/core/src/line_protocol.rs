//! InfluxDB line protocol, written with the escaping rules of InfluxDB 1.x:
//! measurement: `,` and space; tag keys, tag values and field keys: `,`, `=` and space;
//! string field values: `"` and `\`. Floats use the shortest representation that round-trips
//! (Żmij, written as ryu writes it), integers carry the `i` suffix, non-finite floats are never written.

/// Appends points to one buffer, ready to POST to `/write`. Usage per point:
/// `begin(m)`, any `tag`s, one or more `field_*`, then `end(ts)`.
///
/// Keys written for every point can be escaped once ([`Key`], [`OwnedKey`]) and written with the
/// `*_key` methods; values are escaped as they are written, with a fast path (one table lookup
/// per byte, then a plain copy) for the common text that needs no escaping.
#[derive(Debug, Default, Clone)]
pub struct LineWriter {
    buf: Vec<u8>,
    fields_in_point: usize,
    points: usize,
    point_start: usize,
}

/// Byte classes: which bytes each part of a line must escape (or, in strings, replace).
const MEASUREMENT: u8 = 1; // `,` and space
const KEY: u8 = 2; // `,`, `=` and space (tag keys, tag values, field keys)
const STRING: u8 = 4; // `"` and `\`
const NEWLINE: u8 = 8; // `\n`, `\r`: a line is a point, so strings carry them as spaces

const CLASS: [u8; 256] = {
    let mut c = [0u8; 256];
    c[b',' as usize] = MEASUREMENT | KEY;
    c[b' ' as usize] = MEASUREMENT | KEY;
    c[b'=' as usize] = KEY;
    c[b'"' as usize] = STRING;
    c[b'\\' as usize] = STRING;
    c[b'\n' as usize] = NEWLINE;
    c[b'\r' as usize] = NEWLINE;
    c
};

#[inline]
fn needs(s: &[u8], mask: u8) -> bool {
    s.iter().any(|&b| CLASS[b as usize] & mask != 0)
}

#[inline]
fn escape_into(buf: &mut Vec<u8>, s: &str, mask: u8) {
    let s = s.as_bytes();
    if !needs(s, mask) {
        buf.extend_from_slice(s);
        return;
    }
    for &b in s {
        if CLASS[b as usize] & mask != 0 {
            buf.push(b'\\');
        }
        buf.push(b);
    }
}

/// A measurement name, tag key or field key that needs no escaping anywhere (checked when the
/// constant is built), written as is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Key<'a>(&'a [u8]);

impl Key<'static> {
    /// # Panics
    /// If `s` contains a byte that a key or measurement must escape (at compile time in a const).
    #[must_use]
    pub const fn plain(s: &'static str) -> Self {
        let b = s.as_bytes();
        let mut i = 0;
        while i < b.len() {
            assert!(
                CLASS[b[i] as usize] & (MEASUREMENT | KEY) == 0,
                "key needs escaping"
            );
            i += 1;
        }
        Key(b)
    }
}

/// A key escaped once at run time (e.g. a batch's field names), for writing many points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnedKey(Vec<u8>);

impl OwnedKey {
    /// A tag or field key (escapes `,`, `=` and space).
    #[must_use]
    pub fn new(key: &str) -> Self {
        let mut b = Vec::with_capacity(key.len());
        escape_into(&mut b, key, KEY);
        OwnedKey(b)
    }

    #[must_use]
    pub fn key(&self) -> Key<'_> {
        Key(&self.0)
    }
}

/// Shortest round-trip text of a finite float, byte for byte what `ryu` writes: Żmij's digits
/// (the same shortest digits, about twice as fast) with ryu's exponent form `1e16` (Żmij writes
/// `1e+16`; both parse, this keeps the output stable).
#[inline]
fn write_f64(buf: &mut Vec<u8>, v: f64) {
    // whole numbers below 1e15 (counts, percentages, dBm): ryu writes the integer and ".0"
    #[allow(clippy::float_cmp, clippy::cast_possible_truncation)]
    if v != 0.0 && v.abs() < 1e15 && v == v.trunc() {
        buf.extend_from_slice(itoa::Buffer::new().format(v as i64).as_bytes());
        buf.extend_from_slice(b".0");
        return;
    }
    let mut b = zmij::Buffer::new();
    let s = b.format_finite(v).as_bytes();
    // a positive exponent only from 1e16 up (smaller magnitudes are written out in full)
    if v.abs() < 1e16 {
        buf.extend_from_slice(s);
    } else if let Some(p) = s.windows(2).position(|w| w == b"e+") {
        buf.extend_from_slice(&s[..=p]);
        buf.extend_from_slice(&s[p + 2..]);
    } else {
        buf.extend_from_slice(s);
    }
}

impl LineWriter {
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    #[must_use]
    pub fn with_capacity(bytes: usize) -> Self {
        LineWriter {
            buf: Vec::with_capacity(bytes),
            ..Self::default()
        }
    }

    /// Bytes written so far.
    #[must_use]
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    pub fn reserve(&mut self, additional: usize) {
        self.buf.reserve(additional);
    }

    pub fn begin(&mut self, measurement: &str) {
        self.point_start = self.buf.len();
        self.fields_in_point = 0;
        escape_into(&mut self.buf, measurement, MEASUREMENT);
    }

    /// `begin` with a measurement name that needs no escaping.
    pub fn begin_key(&mut self, measurement: Key<'_>) {
        self.point_start = self.buf.len();
        self.fields_in_point = 0;
        self.buf.extend_from_slice(measurement.0);
    }

    /// Tags must come before fields, ideally sorted by key (InfluxDB's fastest path).
    /// An empty value cannot be represented, so it is left out.
    pub fn tag(&mut self, key: &str, value: &str) {
        if value.is_empty() {
            return;
        }
        self.buf.push(b',');
        escape_into(&mut self.buf, key, KEY);
        self.buf.push(b'=');
        escape_into(&mut self.buf, value, KEY);
    }

    /// `tag` with an escaped key.
    pub fn tag_key(&mut self, key: Key<'_>, value: &str) {
        if value.is_empty() {
            return;
        }
        self.buf.push(b',');
        self.buf.extend_from_slice(key.0);
        self.buf.push(b'=');
        escape_into(&mut self.buf, value, KEY);
    }

    /// `tag` with an escaped key and an escaped value (e.g. a batch's interned sites).
    pub fn tag_escaped(&mut self, key: Key<'_>, value: Key<'_>) {
        if value.0.is_empty() {
            return;
        }
        self.buf.push(b',');
        self.buf.extend_from_slice(key.0);
        self.buf.push(b'=');
        self.buf.extend_from_slice(value.0);
    }

    #[inline]
    fn sep(&mut self) {
        self.buf.push(if self.fields_in_point == 0 {
            b' '
        } else {
            b','
        });
        self.fields_in_point += 1;
    }

    fn field_key(&mut self, key: &str) {
        self.sep();
        escape_into(&mut self.buf, key, KEY);
        self.buf.push(b'=');
    }

    #[inline]
    fn field_key_escaped(&mut self, key: Key<'_>) {
        self.sep();
        self.buf.extend_from_slice(key.0);
        self.buf.push(b'=');
    }

    /// Writes a float field; NaN and ±inf are skipped (line protocol cannot carry them).
    pub fn field_f64(&mut self, key: &str, v: f64) {
        if !v.is_finite() {
            return;
        }
        self.field_key(key);
        write_f64(&mut self.buf, v);
    }

    /// `field_f64` with an escaped key.
    #[inline]
    pub fn field_f64_key(&mut self, key: Key<'_>, v: f64) {
        if !v.is_finite() {
            return;
        }
        self.field_key_escaped(key);
        write_f64(&mut self.buf, v);
    }

    pub fn field_i64(&mut self, key: &str, v: i64) {
        self.field_key(key);
        self.write_i64(v);
    }

    /// `field_i64` with an escaped key.
    pub fn field_i64_key(&mut self, key: Key<'_>, v: i64) {
        self.field_key_escaped(key);
        self.write_i64(v);
    }

    fn write_i64(&mut self, v: i64) {
        let mut b = itoa::Buffer::new();
        self.buf.extend_from_slice(b.format(v).as_bytes());
        self.buf.push(b'i');
    }

    pub fn field_bool(&mut self, key: &str, v: bool) {
        self.field_key(key);
        self.buf
            .extend_from_slice(if v { b"true" } else { b"false" });
    }

    /// Writes a string field. Newlines become spaces: a line is a point.
    pub fn field_str(&mut self, key: &str, v: &str) {
        self.field_key(key);
        self.string_value(&[v], "");
    }

    /// `field_str` with an escaped key.
    pub fn field_str_key(&mut self, key: Key<'_>, v: &str) {
        self.field_key_escaped(key);
        self.string_value(&[v], "");
    }

    /// A string field whose value is `parts` joined by `sep` (no joined copy is made).
    pub fn field_str_joined(&mut self, key: Key<'_>, parts: &[&str], sep: &str) {
        self.field_key_escaped(key);
        self.string_value(parts, sep);
    }

    fn string_value(&mut self, parts: &[&str], sep: &str) {
        self.buf.push(b'"');
        for (k, part) in parts.iter().enumerate() {
            if k > 0 {
                self.string_text(sep);
            }
            self.string_text(part);
        }
        self.buf.push(b'"');
    }

    #[inline]
    fn string_text(&mut self, v: &str) {
        let v = v.as_bytes();
        if !needs(v, STRING | NEWLINE) {
            self.buf.extend_from_slice(v);
            return;
        }
        for &b in v {
            match CLASS[b as usize] & (STRING | NEWLINE) {
                0 => self.buf.push(b),
                NEWLINE => self.buf.push(b' '),
                _ => {
                    self.buf.push(b'\\');
                    self.buf.push(b);
                }
            }
        }
    }

    /// Finishes the point with its timestamp (ns). A point without fields is invalid line
    /// protocol, so it is dropped; returns whether the point was kept.
    pub fn end(&mut self, timestamp_ns: i64) -> bool {
        if self.fields_in_point == 0 {
            self.buf.truncate(self.point_start);
            return false;
        }
        self.buf.push(b' ');
        let mut b = itoa::Buffer::new();
        self.buf
            .extend_from_slice(b.format(timestamp_ns).as_bytes());
        self.buf.push(b'\n');
        self.points += 1;
        true
    }

    #[must_use]
    pub fn points(&self) -> usize {
        self.points
    }

    #[must_use]
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf
    }

    #[must_use]
    pub fn into_bytes(self) -> Vec<u8> {
        self.buf
    }
}

#[cfg(test)]
pub(crate) mod parse {
    //! A minimal line-protocol reader for round-trip tests (not used in production).

    #[derive(Debug, PartialEq, Clone)]
    pub enum Value {
        F(f64),
        I(i64),
        S(String),
        B(bool),
    }

    #[derive(Debug, PartialEq, Clone)]
    pub struct Point {
        pub measurement: String,
        pub tags: Vec<(String, String)>,
        pub fields: Vec<(String, Value)>,
        pub ts: i64,
    }

    fn split_unescaped(s: &str, sep: char, respect_quotes: bool) -> Vec<String> {
        let mut out = vec![String::new()];
        let mut chars = s.chars();
        let mut in_q = false;
        while let Some(c) = chars.next() {
            if c == '\\' {
                if let Some(n) = chars.next() {
                    out.last_mut().unwrap().push('\\');
                    out.last_mut().unwrap().push(n);
                }
                continue;
            }
            if respect_quotes && c == '"' {
                in_q = !in_q;
            }
            if c == sep && !in_q {
                out.push(String::new());
            } else {
                out.last_mut().unwrap().push(c);
            }
        }
        out
    }

    fn unescape(s: &str) -> String {
        let mut out = String::new();
        let mut chars = s.chars();
        while let Some(c) = chars.next() {
            if c == '\\' {
                if let Some(n) = chars.next() {
                    out.push(n);
                }
            } else {
                out.push(c);
            }
        }
        out
    }

    pub fn parse_line(line: &str) -> Point {
        let parts = split_unescaped(line, ' ', true);
        assert_eq!(parts.len(), 3, "{line}");
        let head = split_unescaped(&parts[0], ',', false);
        let tags = head[1..]
            .iter()
            .map(|kv| {
                let kv = split_unescaped(kv, '=', false);
                (unescape(&kv[0]), unescape(&kv[1]))
            })
            .collect();
        let fields = split_unescaped(&parts[1], ',', true)
            .iter()
            .map(|kv| {
                let kv = split_unescaped(kv, '=', true);
                let v = &kv[1];
                let val = if let Some(s) = v.strip_prefix('"') {
                    Value::S(unescape(s.strip_suffix('"').unwrap()))
                } else if let Some(i) = v.strip_suffix('i') {
                    Value::I(i.parse().unwrap())
                } else if v == "true" || v == "false" {
                    Value::B(v == "true")
                } else {
                    Value::F(v.parse().unwrap())
                };
                (unescape(&kv[0]), val)
            })
            .collect();
        Point {
            measurement: unescape(&head[0]),
            tags,
            fields,
            ts: parts[2].parse().unwrap(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse::{parse_line, Value};
    use super::*;

    #[test]
    fn escapes_round_trip() {
        let mut w = LineWriter::new();
        w.begin("read ing,x");
        w.tag("site", "Plant A,North=1");
        w.tag("sensor_id", "S 001");
        w.tag("zone", "");
        w.field_f64("flow rate", 1.5);
        w.field_i64("risk", 3);
        w.field_str("message", "say \"hi\" \\ back\nslash");
        w.field_bool("ok", true);
        assert!(w.end(1_700_000_000_000_000_123));
        let text = String::from_utf8(w.into_bytes()).unwrap();
        assert_eq!(text.matches('\n').count(), 1);
        let p = parse_line(text.trim_end());
        assert_eq!(p.measurement, "read ing,x");
        assert_eq!(
            p.tags,
            vec![
                ("site".into(), "Plant A,North=1".into()),
                ("sensor_id".into(), "S 001".into())
            ]
        );
        assert_eq!(p.fields[0], ("flow rate".into(), Value::F(1.5)));
        assert_eq!(p.fields[1], ("risk".into(), Value::I(3)));
        assert_eq!(
            p.fields[2],
            (
                "message".into(),
                Value::S("say \"hi\" \\ back slash".into())
            )
        );
        assert_eq!(p.fields[3], ("ok".into(), Value::B(true)));
        assert_eq!(p.ts, 1_700_000_000_000_000_123);
    }

    #[test]
    fn floats_round_trip_exactly() {
        let vals = [
            0.1,
            -2.5e-300,
            1e300,
            123_456_789.123_456_78,
            f64::MIN_POSITIVE,
            5e-324,
            -0.0,
            7.0,
        ];
        let mut w = LineWriter::new();
        for (i, v) in vals.iter().enumerate() {
            w.begin("m");
            w.field_f64("v", *v);
            w.end(i as i64);
        }
        let text = String::from_utf8(w.into_bytes()).unwrap();
        for (line, v) in text.lines().zip(vals) {
            match &parse_line(line).fields[0].1 {
                Value::F(x) => assert_eq!(x.to_bits(), v.to_bits(), "{line}"),
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn floats_are_written_as_ryu_writes_them() {
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut vals = vec![
            0.0,
            -0.0,
            1e15,
            1e16,
            1e17,
            1e-5,
            1e-4,
            1e-7,
            80.0,
            -50.0,
            0.1,
            1e21,
            1e22,
            f64::MAX,
            f64::MIN_POSITIVE,
            5e-324,
            1.797_693_134_862_315_7e308,
        ];
        for _ in 0..200_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let v = f64::from_bits(state);
            if v.is_finite() {
                vals.push(v);
            }
            #[allow(clippy::cast_precision_loss)]
            let u = (state >> 11) as f64 / (1u64 << 53) as f64;
            vals.push(u);
            vals.push(u * 200.0 - 50.0);
            // whole numbers of every magnitude, and their neighbours
            let w = (u * 2f64.powi((state % 64) as i32)).round();
            vals.extend([w, -w, w + 0.5, f64::from_bits(w.to_bits() + 1)]);
        }
        for v in vals {
            let mut got = Vec::new();
            write_f64(&mut got, v);
            assert_eq!(
                std::str::from_utf8(&got).unwrap(),
                ryu::Buffer::new().format_finite(v),
                "{v:e}"
            );
        }
    }

    #[test]
    fn escaped_keys_and_joined_strings_write_what_the_plain_calls_write() {
        const READING: Key<'static> = Key::plain("reading");
        const RISK: Key<'static> = Key::plain("risk");
        let odd = OwnedKey::new("flow rate,x=1");
        let mut a = LineWriter::new();
        a.begin_key(READING);
        a.tag_key(Key::plain("site"), "Plant A,North=1");
        a.field_f64_key(odd.key(), 1.5);
        a.field_i64_key(RISK, 2);
        a.field_str_joined(Key::plain("explanation"), &["a \"b\"", "c\nd"], "; ");
        a.field_str_key(Key::plain("level"), "HIGH");
        a.end(7);
        let mut b = LineWriter::new();
        b.begin("reading");
        b.tag("site", "Plant A,North=1");
        b.field_f64("flow rate,x=1", 1.5);
        b.field_i64("risk", 2);
        b.field_str("explanation", "a \"b\"; c\nd");
        b.field_str("level", "HIGH");
        b.end(7);
        assert_eq!(a.as_bytes(), b.as_bytes());
        let p = parse_line(std::str::from_utf8(a.as_bytes()).unwrap().trim_end());
        assert_eq!(
            p.fields[2],
            ("explanation".into(), Value::S("a \"b\"; c d".into()))
        );
    }

    #[test]
    fn non_finite_is_skipped_and_empty_points_dropped() {
        let mut w = LineWriter::new();
        w.begin("m");
        w.tag("a", "b");
        w.field_f64("x", f64::NAN);
        w.field_f64("y", f64::INFINITY);
        assert!(!w.end(1));
        assert!(w.as_bytes().is_empty());
        w.begin("m");
        w.field_f64("x", f64::NAN);
        w.field_f64("z", 2.0);
        assert!(w.end(2));
        assert_eq!(w.as_bytes(), b"m z=2.0 2\n");
        assert_eq!(w.points(), 1);
    }
}
