//! InfluxDB line protocol, written with the escaping rules of InfluxDB 1.x:
//! measurement: `,` and space; tag keys, tag values and field keys: `,`, `=` and space;
//! string field values: `"` and `\`. Floats use the shortest representation that round-trips
//! (ryu), integers carry the `i` suffix, non-finite floats are never written.

/// Appends points to one buffer, ready to POST to `/write`. Usage per point:
/// `begin(m)`, any `tag`s, one or more `field_*`, then `end(ts)`.
#[derive(Debug, Default, Clone)]
pub struct LineWriter {
    buf: Vec<u8>,
    fields_in_point: usize,
    points: usize,
    point_start: usize,
}

fn escape_into(buf: &mut Vec<u8>, s: &str, specials: &[u8]) {
    for &b in s.as_bytes() {
        if specials.contains(&b) {
            buf.push(b'\\');
        }
        buf.push(b);
    }
}

const MEASUREMENT_SPECIALS: &[u8] = b", ";
const KEY_SPECIALS: &[u8] = b",= ";
const STRING_SPECIALS: &[u8] = b"\"\\";

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

    pub fn begin(&mut self, measurement: &str) {
        self.point_start = self.buf.len();
        self.fields_in_point = 0;
        escape_into(&mut self.buf, measurement, MEASUREMENT_SPECIALS);
    }

    /// Tags must come before fields, ideally sorted by key (InfluxDB's fastest path).
    /// An empty value cannot be represented, so it is left out.
    pub fn tag(&mut self, key: &str, value: &str) {
        if value.is_empty() {
            return;
        }
        self.buf.push(b',');
        escape_into(&mut self.buf, key, KEY_SPECIALS);
        self.buf.push(b'=');
        escape_into(&mut self.buf, value, KEY_SPECIALS);
    }

    fn field_key(&mut self, key: &str) {
        self.buf.push(if self.fields_in_point == 0 {
            b' '
        } else {
            b','
        });
        self.fields_in_point += 1;
        escape_into(&mut self.buf, key, KEY_SPECIALS);
        self.buf.push(b'=');
    }

    /// Writes a float field; NaN and ±inf are skipped (line protocol cannot carry them).
    pub fn field_f64(&mut self, key: &str, v: f64) {
        if !v.is_finite() {
            return;
        }
        self.field_key(key);
        let mut b = ryu::Buffer::new();
        self.buf.extend_from_slice(b.format_finite(v).as_bytes());
    }

    pub fn field_i64(&mut self, key: &str, v: i64) {
        self.field_key(key);
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
        self.buf.push(b'"');
        for &b in v.as_bytes() {
            match b {
                b'\n' | b'\r' => self.buf.push(b' '),
                _ => {
                    if STRING_SPECIALS.contains(&b) {
                        self.buf.push(b'\\');
                    }
                    self.buf.push(b);
                }
            }
        }
        self.buf.push(b'"');
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
