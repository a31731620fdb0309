//! A zero-copy JSON scanner specialised for sensor payloads: it validates the whole document
//! (RFC 8259 plus Python's `NaN`/`Infinity`/`-Infinity` tokens, reported as [`ValueType::NonFinite`]
//! so the reading can be rejected with `bad_value` rather than `invalid_json`) while the reading
//! parser pulls only the tokens it needs. Nothing is allocated; strings and numbers are slices of
//! the payload.

/// Containers nested deeper than this are rejected (a bound on work and on recursion).
pub const MAX_DEPTH: u32 = 16;

/// Why the payload is not JSON, and where.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyntaxError {
    pub pos: usize,
    pub what: &'static str,
}

/// Boxed so that `PResult<()>`, `PResult<bool>` and `PResult<ValueType>` come back in registers:
/// the hot path threads these through every call, and a 24-byte error made each `?` read its
/// discriminant back from the stack (store-forwarding stalls in profiles). Errors are rare.
pub type PResult<T> = Result<T, Box<SyntaxError>>;

/// The type of a JSON value, as seen from its first byte (and, for numbers, their value).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueType {
    Object,
    Array,
    String,
    Number,
    Bool,
    Null,
    /// `NaN`, `Infinity` or `-Infinity`: not JSON, but what Python's `json.dumps` writes.
    NonFinite,
}

impl ValueType {
    /// The name used in error messages.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            ValueType::Object => "an object",
            ValueType::Array => "an array",
            ValueType::String => "a string",
            ValueType::Number => "a number",
            ValueType::Bool => "a boolean",
            ValueType::Null => "null",
            ValueType::NonFinite => "a non-finite number",
        }
    }
}

/// A scanned string: the bytes between the quotes, validated (escapes well formed, UTF-8 valid,
/// no raw control characters). When `escaped`, [`JStr::unescape_into`] gives the text.
///
/// Only this module builds a `JStr` (the fields are private), always from bytes the scanner has
/// validated: `raw` is valid UTF-8, which [`JStr::plain`] relies on.
#[derive(Debug, Clone, Copy)]
pub struct JStr<'a> {
    raw: &'a [u8],
    escaped: bool,
}

impl<'a> JStr<'a> {
    /// The bytes between the quotes, escapes not resolved.
    #[must_use]
    #[inline(always)]
    pub fn raw(&self) -> &'a [u8] {
        self.raw
    }

    /// Whether the string holds escapes (then [`JStr::unescape_into`] gives its text).
    #[must_use]
    #[inline(always)]
    pub fn escaped(&self) -> bool {
        self.escaped
    }

    /// The text when there are no escapes.
    #[must_use]
    #[inline(always)]
    pub fn plain(&self) -> Option<&'a str> {
        if self.escaped {
            None
        } else {
            // SAFETY: a `JStr` is only built by the scanner from a string body it validated as
            // UTF-8 (`Scanner::string`, or `Scanner::key_literal` from a `KeyLit` that was made
            // from such a body).
            Some(unsafe { std::str::from_utf8_unchecked(self.raw) })
        }
    }

    /// Append the decoded text to `out` (escapes resolved).
    #[inline]
    pub fn unescape_into(&self, out: &mut String) {
        match self.plain() {
            Some(text) => out.push_str(text),
            None => unescape(self.raw, out),
        }
    }
}

/// The bytes of an unescaped key seen before, from after its opening quote up to its value:
/// the key, its closing quote, the `:` and the whitespace around it (`sensor_id": `), for
/// [`Scanner::key_literal`]. Only [`Scanner::learn_key`] makes one, from scanned bytes.
#[derive(Debug, Clone, Copy)]
pub struct KeyLit {
    bytes: [u8; 32],
    /// Bytes to match; 0 for none.
    len: u8,
    /// Length of the key itself.
    key_len: u8,
}

impl KeyLit {
    /// Matches no key.
    pub const NONE: KeyLit = KeyLit {
        bytes: [0; 32],
        len: 0,
        key_len: 0,
    };
}

/// A scanned number: its text plus, for the fast paths, up to 19 significant decimal digits
/// (`mantissa`) and the power of ten that scales them (`exp10`).
#[derive(Debug, Clone, Copy)]
pub struct Num<'a> {
    pub raw: &'a [u8],
    pub negative: bool,
    pub mantissa: u64,
    /// Number of significant digits held in `mantissa` (leading zeros excluded).
    pub digits: u32,
    pub exp10: i32,
    /// More than 19 significant digits: `mantissa`/`exp10` are a truncation of the value.
    pub truncated: bool,
    /// No fraction and no exponent in the text.
    pub integer: bool,
}

const POW10: [f64; 23] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
    1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
];

impl Num<'_> {
    /// The nearest f64 (correctly rounded; ±inf when it overflows).
    #[must_use]
    pub fn to_f64(&self) -> f64 {
        // Clinger's fast path: both the mantissa and the power of ten are exact doubles, so one
        // IEEE multiplication or division rounds correctly. Typical sensor values take it.
        if !self.truncated && self.mantissa <= (1u64 << 53) && (-22..=22).contains(&self.exp10) {
            #[allow(clippy::cast_precision_loss)] // exact: mantissa ≤ 2^53
            let m = self.mantissa as f64;
            #[allow(clippy::cast_sign_loss)]
            let v = if self.exp10 < 0 {
                m / POW10[(-self.exp10) as usize]
            } else {
                m * POW10[self.exp10 as usize]
            };
            return if self.negative { -v } else { v };
        }
        // The JSON number grammar is a subset of Rust's float syntax.
        std::str::from_utf8(self.raw)
            .ok()
            .and_then(|s| s.parse::<f64>().ok())
            .unwrap_or(f64::NAN)
    }
}

/// Byte classes inside a string: 0 plain ASCII, 1 quote, 2 backslash, 3 control, 4 non-ASCII.
static STR_CLASS: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = if i < 0x20 {
            3
        } else if i == b'"' as usize {
            1
        } else if i == b'\\' as usize {
            2
        } else if i >= 0x80 {
            4
        } else {
            0
        };
        i += 1;
    }
    t
};

const LO: u64 = 0x0101_0101_0101_0101;
const HI: u64 = 0x8080_8080_8080_8080;

/// Bit 7 of each byte of the result is set where `v`'s byte may need attention inside a string
/// (`"`, `\`, a control character or a non-ASCII byte). The lowest set bit is exact (the
/// "has zero byte" trick can only err above a true match), which is all the caller uses.
#[inline]
fn string_specials(v: u64) -> u64 {
    let quote = v ^ (LO * u64::from(b'"'));
    let backslash = v ^ (LO * u64::from(b'\\'));
    let zero_quote = quote.wrapping_sub(LO) & !quote;
    let zero_backslash = backslash.wrapping_sub(LO) & !backslash;
    let control = v.wrapping_sub(LO * 0x20) & !v;
    (zero_quote | zero_backslash | control | v) & HI
}

/// Bit k of the result is set when byte k of `chunk` (16 bytes) may need attention inside a
/// string: `"`, `\\`, a control character or a non-ASCII byte. Exact for every bit.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn specials16(chunk: &[u8; 16]) -> u32 {
    use std::arch::x86_64::{
        _mm_cmpeq_epi8, _mm_cmplt_epi8, _mm_loadu_si128, _mm_movemask_epi8, _mm_or_si128,
        _mm_set1_epi8,
    };
    #[allow(clippy::cast_possible_wrap, clippy::cast_sign_loss)]
    // SAFETY: SSE2 is part of the x86_64 baseline, and the unaligned load reads the 16 bytes of
    // `chunk`.
    unsafe {
        let v = _mm_loadu_si128(chunk.as_ptr().cast());
        let quote = _mm_cmpeq_epi8(v, _mm_set1_epi8(b'"' as i8));
        let backslash = _mm_cmpeq_epi8(v, _mm_set1_epi8(b'\\' as i8));
        // Signed compare: below 0x20 is a control character, and every byte ≥ 0x80 is negative.
        let other = _mm_cmplt_epi8(v, _mm_set1_epi8(0x20));
        _mm_movemask_epi8(_mm_or_si128(_mm_or_si128(quote, backslash), other)) as u32
    }
}

/// Portable fallback of the x86_64 version: two 8-byte words.
#[cfg(not(target_arch = "x86_64"))]
#[inline(always)]
fn specials16(chunk: &[u8; 16]) -> u32 {
    let mut out = 0u32;
    for (k, &b) in chunk.iter().enumerate() {
        if STR_CLASS[b as usize] != 0 {
            out |= 1 << k;
        }
    }
    out
}

/// Whether the first `len` (≤ 32) bytes of `a` and `b` are equal.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn eq_prefix32(a: &[u8; 32], b: &[u8; 32], len: usize) -> bool {
    use std::arch::x86_64::{_mm_cmpeq_epi8, _mm_loadu_si128, _mm_movemask_epi8};
    #[allow(clippy::cast_sign_loss)]
    // SAFETY: SSE2 is part of the x86_64 baseline; each unaligned load reads 16 of the 32 bytes
    // of `a` or `b`.
    let eq = unsafe {
        let lo = _mm_movemask_epi8(_mm_cmpeq_epi8(
            _mm_loadu_si128(a.as_ptr().cast()),
            _mm_loadu_si128(b.as_ptr().cast()),
        )) as u32;
        let hi = _mm_movemask_epi8(_mm_cmpeq_epi8(
            _mm_loadu_si128(a.as_ptr().add(16).cast()),
            _mm_loadu_si128(b.as_ptr().add(16).cast()),
        )) as u32;
        u64::from(lo | (hi << 16))
    };
    let want = (1u64 << len) - 1;
    eq & want == want
}

#[cfg(not(target_arch = "x86_64"))]
#[inline(always)]
fn eq_prefix32(a: &[u8; 32], b: &[u8; 32], len: usize) -> bool {
    a[..len] == b[..len]
}

/// A cursor over one payload.
pub struct Scanner<'a> {
    buf: &'a [u8],
    pos: usize,
    depth: u32,
}

impl<'a> Scanner<'a> {
    #[must_use]
    pub fn new(buf: &'a [u8]) -> Self {
        Scanner {
            buf,
            pos: 0,
            depth: 0,
        }
    }

    #[must_use]
    pub fn pos(&self) -> usize {
        self.pos
    }

    /// Length of the payload.
    #[must_use]
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    fn fail<T>(&self, what: &'static str) -> PResult<T> {
        Err(Box::new(SyntaxError {
            pos: self.pos,
            what,
        }))
    }

    #[inline]
    fn byte(&self) -> Option<u8> {
        self.buf.get(self.pos).copied()
    }

    #[inline(always)]
    fn skip_ws(&mut self) {
        while let Some(&b) = self.buf.get(self.pos) {
            // Every token byte is above the space: one comparison for the common case.
            if b > b' ' || !(b == b' ' || b == b'\n' || b == b'\r' || b == b'\t') {
                break;
            }
            self.pos += 1;
        }
    }

    /// The next non-whitespace byte, not consumed.
    #[inline(always)]
    pub fn peek(&mut self) -> Option<u8> {
        self.skip_ws();
        self.byte()
    }

    /// True when only whitespace remains.
    pub fn at_end(&mut self) -> bool {
        self.skip_ws();
        self.pos >= self.buf.len()
    }

    fn enter(&mut self) -> PResult<()> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return self.fail("nested deeper than 16 levels");
        }
        Ok(())
    }

    /// Consume `{` (the caller has peeked it) and return the first key, or `None` for `{}`.
    #[inline(always)]
    pub fn begin_object(&mut self) -> PResult<Option<JStr<'a>>> {
        if self.begin_members()? {
            self.key().map(Some)
        } else {
            Ok(None)
        }
    }

    /// After a member's value: the next key, or `None` at the closing `}`.
    #[inline(always)]
    pub fn next_key(&mut self) -> PResult<Option<JStr<'a>>> {
        if self.next_member()? {
            self.key().map(Some)
        } else {
            Ok(None)
        }
    }

    /// Consume `{` (the caller has peeked it): true when a key follows (the scanner is then at
    /// its opening quote, for [`Self::key`] or [`Self::key_literal`]), false for `{}`.
    #[inline(always)]
    pub fn begin_members(&mut self) -> PResult<bool> {
        self.enter()?;
        self.pos += 1;
        match self.peek() {
            Some(b'}') => {
                self.pos += 1;
                self.depth -= 1;
                Ok(false)
            }
            Some(b'"') => Ok(true),
            _ => self.fail("expected a key or '}'"),
        }
    }

    /// After a member's value: true when another key follows (the scanner is at its opening
    /// quote), false at the closing `}`.
    #[inline(always)]
    pub fn next_member(&mut self) -> PResult<bool> {
        // Fast path: `,"` or `, "` right after the value (what serializers write).
        let buf = self.buf;
        if buf.get(self.pos) == Some(&b',') {
            match buf.get(self.pos + 1) {
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(true);
                }
                Some(b' ') if buf.get(self.pos + 2) == Some(&b'"') => {
                    self.pos += 2;
                    return Ok(true);
                }
                _ => {}
            }
        }
        match self.peek() {
            Some(b',') => {
                self.pos += 1;
                if self.peek() == Some(b'"') {
                    Ok(true)
                } else {
                    self.fail("expected a key after ','")
                }
            }
            Some(b'}') => {
                self.pos += 1;
                self.depth -= 1;
                Ok(false)
            }
            _ => self.fail("expected ',' or '}'"),
        }
    }

    /// At a key's opening quote: when the bytes that follow are exactly `lit`'s (a key seen
    /// before, its `:` and the whitespace up to its value), consume them and return the key.
    /// Such a key needs no scanning: the literal was a validated, unescaped string body.
    /// `None` (nothing consumed) when the bytes differ.
    #[inline(always)]
    pub fn key_literal(&mut self, lit: &KeyLit) -> PResult<Option<JStr<'a>>> {
        let len = usize::from(lit.len);
        if len == 0 {
            return Ok(None);
        }
        let key_len = lit.key_len;
        let lit = &lit.bytes;
        let buf = self.buf;
        let start = self.pos + 1;
        let same = match buf.get(start..).and_then(<[u8]>::first_chunk::<32>) {
            Some(chunk) => eq_prefix32(chunk, lit, len),
            None => buf.get(start..start + len) == lit.get(..len),
        };
        if !same {
            return Ok(None);
        }
        let raw = &buf[start..start + usize::from(key_len)];
        self.pos = start + len;
        Ok(Some(JStr {
            raw,
            escaped: false,
        }))
    }

    /// Right after [`Self::key`] scanned `k` from the opening quote at `quote`: skip the
    /// whitespace before the value and return the literal that [`Self::key_literal`] matches
    /// next time — `None` when the key holds escapes or the literal would exceed 32 bytes.
    pub fn learn_key(&mut self, quote: usize, k: &JStr<'a>) -> Option<KeyLit> {
        self.skip_ws();
        let body = self.buf.get(quote + 1..self.pos)?;
        let n = k.raw.len();
        // The bytes must be the key (a validated string body), its closing quote, then only
        // whitespace and one ':' — true after `key()`, checked anyway (misses are rare).
        let shape_ok = !k.escaped
            && body.len() <= 32
            && body.get(..n) == Some(k.raw)
            && body.get(n) == Some(&b'"')
            && body[n + 1..].iter().filter(|&&b| b == b':').count() == 1
            && body[n + 1..]
                .iter()
                .all(|&b| matches!(b, b':' | b' ' | b'\n' | b'\r' | b'\t'));
        if !shape_ok {
            return None;
        }
        let mut bytes = [0u8; 32];
        bytes[..body.len()].copy_from_slice(body);
        Some(KeyLit {
            bytes,
            len: u8::try_from(body.len()).ok()?,
            key_len: u8::try_from(n).ok()?,
        })
    }

    /// Scan a key (the scanner is at its opening quote) and its `:`.
    #[inline(always)]
    pub fn key(&mut self) -> PResult<JStr<'a>> {
        let k = self.string()?;
        if self.peek() != Some(b':') {
            return self.fail("expected ':'");
        }
        self.pos += 1;
        Ok(k)
    }

    /// Consume `[` (peeked by the caller); true when an element follows, false for `[]`.
    #[inline]
    pub fn begin_array(&mut self) -> PResult<bool> {
        self.enter()?;
        self.pos += 1;
        if self.peek() == Some(b']') {
            self.pos += 1;
            self.depth -= 1;
            return Ok(false);
        }
        Ok(true)
    }

    /// After an element: true when another follows, false at the closing `]`.
    #[inline]
    pub fn next_element(&mut self) -> PResult<bool> {
        match self.peek() {
            Some(b',') => {
                self.pos += 1;
                Ok(true)
            }
            Some(b']') => {
                self.pos += 1;
                self.depth -= 1;
                Ok(false)
            }
            _ => self.fail("expected ',' or ']'"),
        }
    }

    /// The type of the next value, from its first byte (not consumed). Errors on a byte that
    /// cannot start a value.
    #[inline(always)]
    pub fn peek_type(&mut self) -> PResult<ValueType> {
        Ok(match self.peek() {
            Some(b'{') => ValueType::Object,
            Some(b'[') => ValueType::Array,
            Some(b'"') => ValueType::String,
            Some(b'-') if self.buf.get(self.pos + 1) == Some(&b'I') => ValueType::NonFinite,
            Some(b'-' | b'0'..=b'9') => ValueType::Number,
            Some(b't' | b'f') => ValueType::Bool,
            Some(b'n') => ValueType::Null,
            Some(b'N' | b'I') => ValueType::NonFinite,
            None => return self.fail("unexpected end of input"),
            Some(_) => return self.fail("unexpected character"),
        })
    }

    /// Scan a string value (the next non-whitespace byte must be `"`).
    ///
    /// Inline fast path: a string of plain ASCII closing within the next 16 bytes (the first
    /// byte needing attention is its closing quote). Anything else goes to the full scan.
    #[inline(always)]
    pub fn string(&mut self) -> PResult<JStr<'a>> {
        if self.peek() == Some(b'"') {
            let buf = self.buf;
            let start = self.pos + 1;
            if let Some(chunk) = buf.get(start..).and_then(<[u8]>::first_chunk::<16>) {
                let special = specials16(chunk);
                if special != 0 {
                    let end = start + special.trailing_zeros() as usize;
                    if buf.get(end) == Some(&b'"') {
                        self.pos = end + 1;
                        return Ok(JStr {
                            raw: &buf[start..end],
                            escaped: false,
                        });
                    }
                }
            }
        }
        self.string_scan()
    }

    /// The full string scan behind [`Self::string`].
    #[inline(never)]
    fn string_scan(&mut self) -> PResult<JStr<'a>> {
        if self.peek() != Some(b'"') {
            return self.fail("expected a string");
        }
        let buf = self.buf;
        let start = self.pos + 1;
        let mut i = start;
        let mut escaped = false;
        let mut ascii = true;
        loop {
            // Sixteen, then eight bytes at a time up to the first byte that is not plain ASCII.
            i = 'find: {
                while let Some(chunk) = buf.get(i..).and_then(<[u8]>::first_chunk::<16>) {
                    let special = specials16(chunk);
                    if special != 0 {
                        break 'find i + special.trailing_zeros() as usize;
                    }
                    i += 16;
                }
                while let Some(chunk) = buf.get(i..).and_then(<[u8]>::first_chunk::<8>) {
                    let special = string_specials(u64::from_le_bytes(*chunk));
                    if special != 0 {
                        break 'find i + (special.trailing_zeros() / 8) as usize;
                    }
                    i += 8;
                }
                while i < buf.len() && STR_CLASS[buf[i] as usize] == 0 {
                    i += 1;
                }
                i
            };
            let Some(&b) = buf.get(i) else {
                self.pos = i;
                return self.fail("unterminated string");
            };
            match STR_CLASS[b as usize] {
                1 => break,
                2 => {
                    escaped = true;
                    i = self.escape(i)?;
                }
                3 => {
                    self.pos = i;
                    return self.fail("control character in string");
                }
                _ => {
                    ascii = false;
                    i += 1;
                }
            }
        }
        let raw = &buf[start..i];
        if !ascii && std::str::from_utf8(raw).is_err() {
            self.pos = start;
            return self.fail("invalid UTF-8 in string");
        }
        self.pos = i + 1;
        Ok(JStr { raw, escaped })
    }

    /// Validate the escape at `i` (a backslash); return the index after it.
    fn escape(&mut self, i: usize) -> PResult<usize> {
        let buf = self.buf;
        match buf.get(i + 1) {
            Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => Ok(i + 2),
            Some(b'u') => {
                let Some(hi) = hex4(buf, i + 2) else {
                    self.pos = i;
                    return self.fail("bad \\u escape");
                };
                if (0xDC00..0xE000).contains(&hi) {
                    self.pos = i;
                    return self.fail("lone low surrogate");
                }
                if !(0xD800..0xDC00).contains(&hi) {
                    return Ok(i + 6);
                }
                // A high surrogate must be followed by an escaped low surrogate.
                let lo = if buf.get(i + 6) == Some(&b'\\') && buf.get(i + 7) == Some(&b'u') {
                    hex4(buf, i + 8)
                } else {
                    None
                };
                match lo {
                    Some(lo) if (0xDC00..0xE000).contains(&lo) => Ok(i + 12),
                    _ => {
                        self.pos = i;
                        self.fail("lone high surrogate")
                    }
                }
            }
            _ => {
                self.pos = i;
                self.fail("bad escape")
            }
        }
    }

    /// Scan a number (the next non-whitespace byte must be `-` or a digit).
    #[inline]
    pub fn number(&mut self) -> PResult<Num<'a>> {
        self.skip_ws();
        let buf = self.buf;
        let start = self.pos;
        let mut i = start;
        let negative = buf.get(i) == Some(&b'-');
        if negative {
            i += 1;
        }
        let mut mantissa: u64 = 0;
        let mut digits: u32 = 0;
        let mut exp10: i64 = 0;
        let mut truncated = false;
        // Integer part: `0` or a non-zero digit followed by digits.
        match buf.get(i) {
            Some(b'0') => {
                i += 1;
                if matches!(buf.get(i), Some(b'0'..=b'9')) {
                    self.pos = i;
                    return self.fail("leading zero in number");
                }
            }
            Some(b'1'..=b'9') => {
                while let Some(&d @ b'0'..=b'9') = buf.get(i) {
                    if digits < 19 {
                        mantissa = mantissa * 10 + u64::from(d - b'0');
                        digits += 1;
                    } else {
                        truncated |= d != b'0';
                        exp10 += 1;
                    }
                    i += 1;
                }
            }
            _ => {
                self.pos = i;
                return self.fail("bad number");
            }
        }
        let mut integer = true;
        if buf.get(i) == Some(&b'.') {
            integer = false;
            i += 1;
            if !matches!(buf.get(i), Some(b'0'..=b'9')) {
                self.pos = i;
                return self.fail("expected a digit after '.'");
            }
            while let Some(&d @ b'0'..=b'9') = buf.get(i) {
                if digits == 0 && d == b'0' {
                    exp10 -= 1; // a leading zero of the fraction: not significant
                } else if digits < 19 {
                    mantissa = mantissa * 10 + u64::from(d - b'0');
                    digits += 1;
                    exp10 -= 1;
                } else {
                    truncated |= d != b'0';
                }
                i += 1;
            }
        }
        if matches!(buf.get(i), Some(b'e' | b'E')) {
            integer = false;
            i += 1;
            let exp_negative = match buf.get(i) {
                Some(b'-') => {
                    i += 1;
                    true
                }
                Some(b'+') => {
                    i += 1;
                    false
                }
                _ => false,
            };
            if !matches!(buf.get(i), Some(b'0'..=b'9')) {
                self.pos = i;
                return self.fail("expected a digit in exponent");
            }
            let mut e: i64 = 0;
            while let Some(&d @ b'0'..=b'9') = buf.get(i) {
                e = (e * 10 + i64::from(d - b'0')).min(1_000_000); // saturate: only sign matters beyond
                i += 1;
            }
            exp10 += if exp_negative { -e } else { e };
        }
        self.pos = i;
        #[allow(clippy::cast_possible_truncation)] // clamped
        let exp10 = exp10.clamp(-2_000_000, 2_000_000) as i32;
        Ok(Num {
            raw: &buf[start..i],
            negative,
            mantissa,
            digits,
            exp10,
            truncated,
            integer,
        })
    }

    /// Scan a number (the next non-whitespace byte must be `-` or a digit) straight to the
    /// nearest f64, like `self.number()?.to_f64()`.
    ///
    /// Fast path for the usual sensor value — at most 15 digits, an optional fraction, no
    /// exponent: the digits make an integer below 2^53 and the fraction length a power of ten
    /// up to 10^15, both exact doubles, so one IEEE division rounds correctly (Clinger) and the
    /// result is the same bits as the full parser's. Anything else is re-scanned by [`Self::number`].
    #[inline(always)]
    pub fn number_f64(&mut self) -> PResult<f64> {
        if let Some(v) = self.short_decimal() {
            return Ok(v);
        }
        Ok(self.number()?.to_f64())
    }

    /// The fast path of [`Self::number_f64`]: a number of at most 15 digits with an optional
    /// fraction and no exponent, consumed and converted; `None` (nothing consumed) for anything
    /// else (other numbers, malformed ones, other values).
    #[inline(always)]
    pub fn short_decimal(&mut self) -> Option<f64> {
        self.skip_ws();
        let buf = self.buf;
        let start = self.pos;
        let mut i = start;
        let negative = buf.get(i) == Some(&b'-');
        i += usize::from(negative);
        let mut mantissa: u64 = 0;
        let int_start = i;
        while let Some(&d @ b'0'..=b'9') = buf.get(i) {
            mantissa = mantissa.wrapping_mul(10).wrapping_add(u64::from(d - b'0'));
            i += 1;
        }
        let int_digits = i - int_start;
        // JSON: at least one digit, and no leading zero before another digit.
        if int_digits == 0 || (buf[int_start] == b'0' && int_digits > 1) {
            return None;
        }
        let mut frac_digits = 0;
        if buf.get(i) == Some(&b'.') {
            i += 1;
            let frac_start = i;
            while let Some(&d @ b'0'..=b'9') = buf.get(i) {
                mantissa = mantissa.wrapping_mul(10).wrapping_add(u64::from(d - b'0'));
                i += 1;
            }
            frac_digits = i - frac_start;
            if frac_digits == 0 {
                return None;
            }
        }
        if int_digits + frac_digits > 15 || matches!(buf.get(i), Some(b'e' | b'E')) {
            return None;
        }
        self.pos = i;
        #[allow(clippy::cast_precision_loss)] // exact: at most 15 digits, below 2^53
        let v = mantissa as f64 / POW10[frac_digits];
        Some(if negative { -v } else { v })
    }

    /// A number token that is a plain non-negative integer of at most 19 digits (no fraction,
    /// no exponent), consumed: its value and number of digits. `None` (nothing consumed) for
    /// any other number and for malformed ones, which [`Self::number`] then scans or rejects.
    #[inline]
    pub fn plain_integer(&mut self) -> Option<(u64, u32)> {
        self.skip_ws();
        let buf = self.buf;
        let start = self.pos;
        let mut i = start;
        let mut v: u64 = 0;
        // Eight digits at a time while they last (epoch milliseconds have 13), then one by one.
        while i - start <= 11 {
            let Some(chunk) = buf.get(i..).and_then(<[u8]>::first_chunk::<8>) else {
                break;
            };
            let Some(eight) = eight_digits(u64::from_le_bytes(*chunk)) else {
                break;
            };
            v = v * 100_000_000 + eight;
            i += 8;
        }
        while let Some(&d @ b'0'..=b'9') = buf.get(i) {
            if i - start == 19 {
                return None;
            }
            v = v * 10 + u64::from(d - b'0');
            i += 1;
        }
        let digits = i - start;
        if digits == 0
            || (buf[start] == b'0' && digits > 1)
            || matches!(buf.get(i), Some(b'.' | b'e' | b'E'))
        {
            return None;
        }
        self.pos = i;
        u32::try_from(digits).ok().map(|d| (v, d))
    }

    /// Consume one of the literals `true`, `false`, `null`, `NaN`, `Infinity`, `-Infinity`.
    fn literal(&mut self) -> PResult<ValueType> {
        let rest = &self.buf[self.pos..];
        let (len, t) = if rest.starts_with(b"true") {
            (4, ValueType::Bool)
        } else if rest.starts_with(b"false") {
            (5, ValueType::Bool)
        } else if rest.starts_with(b"null") {
            (4, ValueType::Null)
        } else if rest.starts_with(b"NaN") {
            (3, ValueType::NonFinite)
        } else if rest.starts_with(b"Infinity") {
            (8, ValueType::NonFinite)
        } else if rest.starts_with(b"-Infinity") {
            (9, ValueType::NonFinite)
        } else {
            return self.fail("invalid literal");
        };
        self.pos += len;
        Ok(t)
    }

    /// Validate and skip the next value of any type; return its type.
    pub fn skip_value(&mut self) -> PResult<ValueType> {
        // Strings are what gets skipped most (location, last_calibration).
        if self.peek() == Some(b'"') {
            self.string()?;
            return Ok(ValueType::String);
        }
        let t = self.peek_type()?;
        match t {
            ValueType::Object => {
                let mut key = self.begin_object()?;
                while key.is_some() {
                    self.skip_value()?;
                    key = self.next_key()?;
                }
            }
            ValueType::Array => {
                let mut more = self.begin_array()?;
                while more {
                    self.skip_value()?;
                    more = self.next_element()?;
                }
            }
            ValueType::String => {
                self.string()?;
            }
            ValueType::Number => {
                self.number()?;
            }
            ValueType::Bool | ValueType::Null | ValueType::NonFinite => {
                self.literal()?;
            }
        }
        Ok(t)
    }

    /// Consume a `null` (peeked by the caller).
    pub fn null(&mut self) -> PResult<()> {
        self.literal().map(|_| ())
    }
}

/// The value of eight ASCII digits (little-endian word, first digit in the low byte), or
/// `None` when any byte is not a digit (SWAR, as in simdjson).
#[inline(always)]
fn eight_digits(word: u64) -> Option<u64> {
    let digits = word.wrapping_sub(0x3030_3030_3030_3030);
    // A byte is a digit when it is >= '0' (no borrow into bit 7) and <= '9' (adding 0x46 does
    // not reach bit 7).
    if (word.wrapping_add(0x4646_4646_4646_4646) | digits) & 0x8080_8080_8080_8080 != 0 {
        return None;
    }
    let pairs = (digits.wrapping_mul(10) + (digits >> 8)) & 0x00FF_00FF_00FF_00FF;
    let quads = (pairs.wrapping_mul(100) + (pairs >> 16)) & 0x0000_FFFF_0000_FFFF;
    Some((quads.wrapping_mul(10_000) + (quads >> 32)) & 0xFFFF_FFFF)
}

fn hex4(buf: &[u8], at: usize) -> Option<u32> {
    let s = buf.get(at..at + 4)?;
    let mut v = 0u32;
    for &b in s {
        let d = match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'f' => b - b'a' + 10,
            b'A'..=b'F' => b - b'A' + 10,
            _ => return None,
        };
        v = v * 16 + u32::from(d);
    }
    Some(v)
}

/// Decode a validated escaped string body into `out`. Written defensively: malformed input
/// (impossible after the scanner) yields U+FFFD instead of a panic.
fn unescape(raw: &[u8], out: &mut String) {
    let mut i = 0;
    while i < raw.len() {
        let run_end = raw[i..]
            .iter()
            .position(|&b| b == b'\\')
            .map_or(raw.len(), |p| i + p);
        out.push_str(std::str::from_utf8(&raw[i..run_end]).unwrap_or("\u{FFFD}"));
        i = run_end;
        if i >= raw.len() {
            break;
        }
        let c = match raw.get(i + 1) {
            Some(b'"') => '"',
            Some(b'\\') => '\\',
            Some(b'/') => '/',
            Some(b'b') => '\u{8}',
            Some(b'f') => '\u{c}',
            Some(b'n') => '\n',
            Some(b'r') => '\r',
            Some(b't') => '\t',
            Some(b'u') => {
                let hi = hex4(raw, i + 2).unwrap_or(0xFFFD);
                if (0xD800..0xDC00).contains(&hi) {
                    let lo = hex4(raw, i + 8).unwrap_or(0);
                    i += 6;
                    char::from_u32(
                        0x10000 + ((hi - 0xD800) << 10) + (lo.wrapping_sub(0xDC00) & 0x3FF),
                    )
                    .unwrap_or('\u{FFFD}')
                } else {
                    char::from_u32(hi).unwrap_or('\u{FFFD}')
                }
            }
            _ => '\u{FFFD}',
        };
        out.push(c);
        i += if raw.get(i + 1) == Some(&b'u') { 6 } else { 2 };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid(s: &str) -> bool {
        let mut sc = Scanner::new(s.as_bytes());
        sc.skip_value().is_ok() && sc.at_end()
    }

    #[test]
    fn accepts_and_rejects_like_a_json_parser() {
        let good = [
            "{}",
            "[]",
            r#"{"a":[1,2.5,-3e-2,true,false,null,"x\n\u00e9\ud83d\ude00"]}"#,
            " 0 ",
            "-0.0e+0",
            r#""é""#,
            "[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]",
        ];
        for s in good {
            assert!(valid(s), "{s}");
            assert!(serde_json::from_str::<serde_json::Value>(s).is_ok(), "{s}");
        }
        let bad = [
            "",
            "{",
            "{\"a\"}",
            "{\"a\":1,}",
            "[1,]",
            "01",
            "1.",
            "1e",
            "-",
            ".5",
            "\"\\x\"",
            "\"\\ud800\"",
            "\"\\udc00x\"",
            "\"a\u{1}\"",
            "tru",
            "{\"a\":1}}",
            "[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]",
            "[1 2]",
            "{\"a\" 1}",
            "{1:2}",
        ];
        for s in bad {
            assert!(!valid(s), "{s:?}");
        }
        // Invalid UTF-8 inside a string.
        let mut sc = Scanner::new(b"\"\xff\"");
        assert!(sc.skip_value().is_err());
    }

    #[test]
    fn non_finite_tokens_are_typed_not_errors() {
        for s in ["NaN", "Infinity", "-Infinity"] {
            let mut sc = Scanner::new(s.as_bytes());
            assert_eq!(sc.skip_value(), Ok(ValueType::NonFinite));
            assert!(sc.at_end());
        }
    }

    #[test]
    fn numbers_round_like_std() {
        let cases = [
            "0",
            "-0",
            "1",
            "3.2",
            "125.5",
            "-45",
            "0.1",
            "1e308",
            "1e309",
            "-1e400",
            "4.9e-324",
            "2e-400",
            "123456789012345678901234567890",
            "0.000000000000000000000000123",
            "9007199254740993",
            "1.7976931348623157e308",
            "12345678901234567.5e-3",
            "7.2",
            "0.30000000000000004",
            "1e22",
            "1e23",
            "123.456e-5",
        ];
        for s in cases {
            let mut sc = Scanner::new(s.as_bytes());
            let n = sc.number().unwrap();
            let want: f64 = s.parse().unwrap();
            assert_eq!(n.to_f64().to_bits(), want.to_bits(), "{s}");
        }
    }

    #[test]
    fn numbers_fast_path_matches_std_on_many_values() {
        // Deterministic pseudo-random decimals with few digits, the common sensor shape.
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let int = x % 100_000;
            let frac = (x >> 20) % 10_000;
            let s = format!("{int}.{frac:0width$}", width = ((x >> 40) % 5 + 1) as usize);
            let mut sc = Scanner::new(s.as_bytes());
            let want: f64 = s.parse().unwrap();
            assert_eq!(
                sc.number().unwrap().to_f64().to_bits(),
                want.to_bits(),
                "{s}"
            );
        }
    }

    #[test]
    fn number_f64_is_bit_identical_to_the_full_parser() {
        // Random short decimals (both sides of the 15-digit fast-path limit, signs, leading
        // zeros of the fraction, exponents) and malformed numbers: same bits, same errors.
        let mut x: u64 = 0x2545_F491_4F6C_DD1D;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for _ in 0..50_000 {
            let r = next();
            let int_len = (r % 18) as usize;
            let frac_len = ((r >> 8) % 20) as usize;
            let digits = format!("{:020}{:020}", next(), next());
            let mut s = String::new();
            if r & (1 << 20) != 0 {
                s.push('-');
            }
            let int = digits[..int_len.max(1)].trim_start_matches('0');
            s.push_str(if int.is_empty() { "0" } else { int });
            if r & (1 << 21) != 0 {
                s.push('.');
                s.push_str(&digits[20..20 + frac_len]);
            }
            if r & (7 << 22) == 0 {
                s.push_str(&format!("e{}", (r >> 30) % 40));
            }
            let mut fast = Scanner::new(s.as_bytes());
            let mut full = Scanner::new(s.as_bytes());
            match (fast.number_f64(), full.number()) {
                (Ok(a), Ok(b)) => {
                    assert_eq!(a.to_bits(), b.to_f64().to_bits(), "{s}");
                    assert_eq!(a.to_bits(), s.parse::<f64>().unwrap().to_bits(), "{s}");
                    assert_eq!(fast.pos(), full.pos(), "{s}");
                }
                (Err(a), Err(b)) => assert_eq!(a, b, "{s}"),
                (a, b) => panic!("{s}: {a:?} vs {b:?}"),
            }
        }
        for s in [
            "-",
            "01",
            "1.",
            "-.5",
            "00",
            "0.e1",
            "1e",
            "-0",
            "0",
            "9007199254740993",
            "1.5E3",
        ] {
            let (mut a, mut b) = (Scanner::new(s.as_bytes()), Scanner::new(s.as_bytes()));
            let (x, y) = (a.number_f64(), b.number().map(|n| n.to_f64()));
            assert_eq!(x.map(f64::to_bits), y.map(f64::to_bits), "{s}");
        }
    }

    #[test]
    fn eight_digits_matches_the_scalar_parse() {
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..100_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let mut bytes = *format!("{:08}", x % 100_000_000)
                .as_bytes()
                .first_chunk::<8>()
                .unwrap();
            assert_eq!(
                eight_digits(u64::from_le_bytes(bytes)),
                Some(x % 100_000_000)
            );
            // Any non-digit byte is refused.
            let at = (x >> 32) as usize % 8;
            bytes[at] = [b'/', b':', b'.', b'e', b' ', 0, 0xB0, b'0' + 10][(x >> 40) as usize % 8];
            assert_eq!(eight_digits(u64::from_le_bytes(bytes)), None, "{bytes:?}");
        }
        assert_eq!(
            eight_digits(u64::from_le_bytes(*b"99999999")),
            Some(99_999_999)
        );
        assert_eq!(eight_digits(u64::from_le_bytes(*b"00000000")), Some(0));
    }

    #[test]
    fn unescape_decodes() {
        let s = r#""a\"b\\c\/d\b\f\n\r\t\u00e9\ud83d\ude00z""#;
        let mut sc = Scanner::new(s.as_bytes());
        let j = sc.string().unwrap();
        let mut out = String::new();
        j.unescape_into(&mut out);
        let want: String = serde_json::from_str(s).unwrap();
        assert_eq!(out, want);
    }
}
