//! Payload decoding: MQTT/HTTP payloads (nested, flat, gateway arrays) → a columnar `ReadingBatch`.
//!
//! One pass per payload with a hand-written JSON scanner ([`json`]); readings are staged in a
//! reusable draft and appended to the batch's columns when complete. Every problem is a
//! per-message error with a stable reason code ([`reasons`], docs/reason-codes.md); nothing
//! here panics on any input.
//!
//! Rules, in the order they apply to a message:
//! 1. larger than 64 KiB → `too_large` (unread);
//! 2. a topic that is not `infrawatch/{site}/{kind}/{sensor_id}/telemetry` or
//!    `infrawatch/{site}/gateway/{gateway_id}/batch` → `bad_topic` / `unknown_kind`;
//! 3. not JSON (syntax, trailing bytes, invalid UTF-8, nesting deeper than 16) → `invalid_json`,
//!    even when earlier readings of a gateway batch were fine;
//! 4. shape: a telemetry message must be an object, a gateway message an array (1..=10,000
//!    elements) of objects; without a topic an object is one reading, an array a gateway batch;
//! 5. per reading, the first problem in document order (type errors, duplicates, mismatches with
//!    the topic), then the checks that need the whole object (sensor id, kind, measurements).
//!
//! A gateway batch yields one error per bad element (its message names the element index) and
//! keeps the good elements.

pub mod json;
pub mod keys;
pub mod reasons;
pub mod timestamp;
pub mod topic;

use std::fmt::Write as _;

use crate::batch::{MessageError, ReadingBatch};
use crate::fields::{Kind, CANONICAL_FIELDS, MAX_FIELDS, MAX_PAYLOAD_BYTES};
use json::{JStr, KeyLit, PResult, Scanner, ValueType};
use keys::Key;
pub use reasons::{Reason, REASON_CODES};
use topic::{tag_value_ok, Topic};

/// At most this many readings in one gateway batch.
pub const MAX_GATEWAY_READINGS: usize = 10_000;
/// The site of a reading that names none (and has no topic).
pub const DEFAULT_SITE: &str = "default";
/// The zone of a reading that names none.
pub const DEFAULT_ZONE: &str = "STANDARD";

const N_CANONICAL: usize = CANONICAL_FIELDS.len();

/// Decode `payloads` (with their MQTT topics, when known) received at `received_ns`.
/// Never panics; every per-message problem becomes a `MessageError` in `batch.errors`.
#[must_use]
pub fn decode(payloads: &[&[u8]], topics: Option<&[&str]>, received_ns: i64) -> ReadingBatch {
    let mut batch = ReadingBatch::default();
    decode_into(&mut batch, payloads, topics, received_ns);
    batch
}

/// [`decode`] into an existing batch (cleared first), reusing its allocations.
/// When `topics` is shorter than `payloads`, the messages without a topic get `bad_topic`.
pub fn decode_into(
    batch: &mut ReadingBatch,
    payloads: &[&[u8]],
    topics: Option<&[&str]>,
    received_ns: i64,
) {
    batch.clear();
    batch.messages = payloads.len();
    // A telemetry message is one reading: size the columns for that (gateways grow them).
    batch.reserve_rows(payloads.len());
    let mut d = Decoder::new(batch, received_ns);
    for (i, payload) in payloads.iter().enumerate() {
        let topic = match topics {
            None => None,
            Some(t) => Some(t.get(i).copied().unwrap_or("")),
        };
        d.message(i, payload, topic);
    }
    batch.finish();
}

/// A byte string for an error message: lossy UTF-8, quoted and escaped, cut at 40 characters.
pub(crate) fn show(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut out = String::from("'");
    for (n, c) in text.chars().enumerate() {
        if n == 40 {
            out.push('…');
            break;
        }
        if c == '\'' {
            out.push_str("\\'");
        } else {
            let _ = write!(out, "{}", c.escape_debug());
        }
    }
    out.push('\'');
    out
}

/// A reading being parsed. Reused across readings to avoid allocation.
struct Draft {
    error: Option<(Reason, String)>,
    reserved_seen: u16,
    sensor: String,
    has_sensor: bool,
    kind: Option<Kind>,
    site: String,
    has_site: bool,
    zone: String,
    has_zone: bool,
    timestamp_ns: Option<i64>,
    /// Bit i set: canonical field i was given (value in `canonical[i]`, NaN for null).
    canonical_mask: u32,
    canonical: [f64; N_CANONICAL],
    /// Unknown fields: `(start, end)` of the lower-cased name in `names`, and the value.
    unknown: Vec<(u32, u32, f64)>,
    names: String,
    /// Measurement keys seen (null included) and non-null values among them.
    keys: usize,
    values: usize,
}

impl Draft {
    fn new() -> Self {
        Draft {
            error: None,
            reserved_seen: 0,
            sensor: String::new(),
            has_sensor: false,
            kind: None,
            site: String::new(),
            has_site: false,
            zone: String::new(),
            has_zone: false,
            timestamp_ns: None,
            canonical_mask: 0,
            canonical: [f64::NAN; N_CANONICAL],
            unknown: Vec::new(),
            names: String::new(),
            keys: 0,
            values: 0,
        }
    }

    fn reset(&mut self) {
        self.error = None;
        self.reserved_seen = 0;
        self.has_sensor = false;
        self.kind = None;
        self.has_site = false;
        self.has_zone = false;
        self.timestamp_ns = None;
        self.canonical_mask = 0;
        self.unknown.clear();
        self.names.clear();
        self.keys = 0;
        self.values = 0;
    }

    fn failed(&self) -> bool {
        self.error.is_some()
    }

    /// Record a problem unless an earlier one was recorded (the message is built only then).
    fn fail(&mut self, reason: Reason, message: impl FnOnce() -> String) {
        first_error(&mut self.error, reason, message);
    }

    fn unknown_name(&self, i: usize) -> &str {
        let (s, e, _) = self.unknown[i];
        self.names.get(s as usize..e as usize).unwrap_or("")
    }
}

/// Keep the first problem of a reading (its message is built only then).
fn first_error(
    slot: &mut Option<(Reason, String)>,
    reason: Reason,
    message: impl FnOnce() -> String,
) {
    if slot.is_none() {
        *slot = Some((reason, message()));
    }
}

/// Where the reading being parsed came from.
#[derive(Clone, Copy)]
struct Ctx<'t> {
    index: usize,
    topic: Option<Topic<'t>>,
    /// Element index within a gateway batch.
    element: Option<usize>,
}

/// A key seen at some position of an earlier reading: its bytes and closing quote, and what it
/// resolved to. Readings of one batch mostly repeat their keys in the same order, so the key at
/// position `n` of a reading is first compared with the one at position `n` of the previous
/// readings: a match skips the string scan and the key lookup.
#[derive(Clone, Copy)]
struct KnownKey {
    lit: KeyLit,
    key: Key,
}

/// Distinct zone spellings remembered per batch (more are looked up in the batch's table).
const ZONE_CACHE: usize = 8;

/// Key positions remembered per reading (document order, nested sections included).
const KNOWN_KEYS: usize = 32;

/// A problem with a whole message, found after its JSON was validated.
type MessageProblem = Option<(Reason, String)>;

struct Decoder<'b> {
    batch: &'b mut ReadingBatch,
    received_ns: i64,
    draft: Draft,
    key_buf: String,
    scratch: String,
    last_site: Option<u32>,
    /// Zones as spelled in payloads and their interned (upper-cased) ids: a batch has few.
    zones: Vec<(String, u32)>,
    /// The ids of `DEFAULT_ZONE` and `DEFAULT_SITE`, once interned.
    default_zone: Option<u32>,
    default_site: Option<u32>,
    /// The last topic site looked up (address and length of the caller's topic text) and its
    /// id: the readings of a gateway batch share one topic.
    topic_site: Option<(usize, usize, u32)>,
    dates: timestamp::DateCache,
    known: [KnownKey; KNOWN_KEYS],
    /// Position of the next key within the current reading.
    key_pos: usize,
}

impl<'b> Decoder<'b> {
    fn new(batch: &'b mut ReadingBatch, received_ns: i64) -> Self {
        Decoder {
            batch,
            received_ns,
            draft: Draft::new(),
            key_buf: String::new(),
            scratch: String::new(),
            last_site: None,
            zones: Vec::new(),
            default_zone: None,
            default_site: None,
            topic_site: None,
            dates: timestamp::DateCache::default(),
            known: [KnownKey {
                lit: KeyLit::NONE,
                key: Key::Other,
            }; KNOWN_KEYS],
            key_pos: 0,
        }
    }

    fn error(&mut self, ctx: &Ctx<'_>, reason: Reason, message: String) {
        let message = match ctx.element {
            Some(e) => format!("element {e}: {message}"),
            None => message,
        };
        self.batch.errors.push(MessageError {
            index: ctx.index,
            reason: reason.code(),
            message,
        });
    }

    fn message(&mut self, index: usize, payload: &[u8], topic: Option<&str>) {
        let mut ctx = Ctx {
            index,
            topic: None,
            element: None,
        };
        if payload.len() > MAX_PAYLOAD_BYTES {
            let m = format!(
                "payload is {} bytes; the limit is {MAX_PAYLOAD_BYTES}",
                payload.len()
            );
            self.error(&ctx, Reason::TooLarge, m);
            return;
        }
        if let Some(t) = topic {
            match topic::parse(t) {
                Ok(t) => ctx.topic = Some(t),
                Err((reason, m)) => {
                    self.error(&ctx, reason, m);
                    return;
                }
            }
        }
        let cp = self.batch.checkpoint();
        let mut sc = Scanner::new(payload);
        let outcome = self.document(&mut sc, ctx).and_then(|problem| {
            if sc.at_end() {
                Ok(problem)
            } else {
                Err(Box::new(json::SyntaxError {
                    pos: sc.pos(),
                    what: "trailing characters after the JSON value",
                }))
            }
        });
        match outcome {
            Ok(None) => {}
            Ok(Some((reason, m))) => {
                self.batch.rollback(cp);
                self.error(&ctx, reason, m);
            }
            Err(e) => {
                self.batch.rollback(cp);
                let m = format!("{} at byte {}", e.what, e.pos);
                self.error(&ctx, Reason::InvalidJson, m);
            }
        }
    }

    fn document<'a>(&mut self, sc: &mut Scanner<'a>, ctx: Ctx<'_>) -> PResult<MessageProblem> {
        match sc.peek_type()? {
            ValueType::Object => {
                if let Some(Topic::Gateway { .. }) = ctx.topic {
                    sc.skip_value()?;
                    return Ok(Some((
                        Reason::NotObject,
                        "a gateway batch must be a JSON array of readings".into(),
                    )));
                }
                self.reading(sc, ctx)?;
                Ok(None)
            }
            ValueType::Array => {
                if let Some(Topic::Telemetry { .. }) = ctx.topic {
                    sc.skip_value()?;
                    return Ok(Some((
                        Reason::NotObject,
                        "a telemetry message must be a JSON object (arrays go to a gateway /batch topic)".into(),
                    )));
                }
                self.gateway(sc, ctx)
            }
            t => {
                sc.skip_value()?;
                Ok(Some((
                    Reason::NotObject,
                    format!("payload is {}, not a JSON object", t.name()),
                )))
            }
        }
    }

    fn gateway<'a>(&mut self, sc: &mut Scanner<'a>, ctx: Ctx<'_>) -> PResult<MessageProblem> {
        let mut more = sc.begin_array()?;
        if !more {
            return Ok(Some((
                Reason::EmptyBatch,
                "gateway batch is an empty array".into(),
            )));
        }
        let mut n = 0usize;
        while more {
            let element = Ctx {
                element: Some(n),
                ..ctx
            };
            if n >= MAX_GATEWAY_READINGS {
                sc.skip_value()?; // still validated: invalid JSON wins over too many readings
            } else if sc.peek_type()? == ValueType::Object {
                let start = sc.pos();
                self.reading(sc, element)?;
                if n == 0 {
                    // Size the columns for elements like the first one.
                    let per_reading = (sc.pos() - start).max(16);
                    self.batch.reserve_rows(sc.len() / per_reading);
                }
            } else {
                let t = sc.skip_value()?;
                self.error(
                    &element,
                    Reason::NotObject,
                    format!("reading is {}, not a JSON object", t.name()),
                );
            }
            n += 1;
            more = sc.next_element()?;
        }
        if n > MAX_GATEWAY_READINGS {
            let m = format!("gateway batch has {n} readings; the limit is {MAX_GATEWAY_READINGS}");
            return Ok(Some((Reason::TooManyReadings, m)));
        }
        Ok(None)
    }

    /// Resolve a key, unescaping it first when needed.
    fn key(&mut self, k: &JStr<'_>) -> Key {
        if k.escaped() {
            self.key_buf.clear();
            k.unescape_into(&mut self.key_buf);
            keys::resolve(self.key_buf.as_bytes())
        } else {
            keys::resolve(k.raw())
        }
    }

    /// The next key of the reading (the scanner is at its opening quote) and what it means:
    /// compared first with the key at the same position of the previous readings.
    #[inline(always)]
    fn member_key<'a>(&mut self, sc: &mut Scanner<'a>) -> PResult<(JStr<'a>, Key)> {
        let n = self.key_pos;
        self.key_pos = n + 1;
        if let Some(known) = self.known.get(n) {
            if let Some(k) = sc.key_literal(&known.lit)? {
                return Ok((k, known.key));
            }
        }
        let quote = sc.pos();
        let k = sc.key()?;
        let key = self.key(&k);
        if let Some(slot) = self.known.get_mut(n) {
            if let Some(lit) = sc.learn_key(quote, &k) {
                *slot = KnownKey { lit, key };
            }
        }
        Ok((k, key))
    }

    /// Parse one reading object and append it to the batch (or record its error).
    fn reading<'a>(&mut self, sc: &mut Scanner<'a>, ctx: Ctx<'_>) -> PResult<()> {
        self.draft.reset();
        self.key_pos = 0;
        // The payload's sensor_id when it is a plain string (else it is in `draft.sensor`).
        let mut sensor: Option<&'a str> = None;
        let mut more = sc.begin_members()?;
        while more {
            let (k, key) = self.member_key(sc)?;
            let bit = key.reserved_bit();
            if bit != 0 {
                if self.draft.reserved_seen & bit != 0 {
                    self.draft.fail(Reason::DuplicateField, || {
                        format!("key {} given twice", show(k.raw()))
                    });
                }
                self.draft.reserved_seen |= bit;
            }
            match key {
                Key::SensorId => sensor = self.sensor_id(sc, ctx)?,
                Key::Kind => self.kind(sc, ctx)?,
                Key::Site => self.site(sc, ctx)?,
                Key::Zone => self.zone(sc)?,
                Key::Timestamp => self.timestamp(sc)?,
                Key::Location | Key::GatewayId | Key::LastCalibration => self.ignored(sc, &k)?,
                Key::Measurements | Key::DeviceMetadata => {
                    self.section(sc, &k, key == Key::DeviceMetadata)?
                }
                Key::Field(i) => self.canonical(sc, usize::from(i), &k)?,
                Key::Other => self.unknown(sc, &k)?,
            }
            more = sc.next_member()?;
        }
        self.complete(&ctx, sensor);
        Ok(())
    }

    /// A value that is not stored (location, gateway_id, last_calibration): any JSON will do,
    /// but Python's NaN/Infinity tokens are still refused.
    fn ignored(&mut self, sc: &mut Scanner<'_>, k: &JStr<'_>) -> PResult<()> {
        if sc.peek() == Some(b'"') {
            sc.string()?;
            return Ok(());
        }
        if sc.skip_value()? == ValueType::NonFinite {
            self.draft.fail(Reason::BadValue, || {
                format!("{} holds NaN or Infinity", show(k.raw()))
            });
        }
        Ok(())
    }

    /// Read a string value into `self.scratch`; `Ok(Err(type))` for another type (skipped),
    /// `Ok(Ok(false))` for null.
    fn string_value(&mut self, sc: &mut Scanner<'_>) -> PResult<Result<bool, ValueType>> {
        match sc.peek_type()? {
            ValueType::String => {
                let s = sc.string()?;
                self.scratch.clear();
                s.unescape_into(&mut self.scratch);
                Ok(Ok(true))
            }
            ValueType::Null => {
                sc.null()?;
                Ok(Ok(false))
            }
            t => {
                sc.skip_value()?;
                Ok(Err(t))
            }
        }
    }

    /// The payload's `sensor_id`, checked. A plain string is returned as a slice of the payload
    /// (no copy); other forms are copied into the draft (`Ok(None)`).
    #[inline(always)]
    fn sensor_id<'a>(&mut self, sc: &mut Scanner<'a>, ctx: Ctx<'_>) -> PResult<Option<&'a str>> {
        let d = &mut self.draft;
        d.sensor.clear();
        let mut borrowed = None;
        match sc.peek_type()? {
            ValueType::String => {
                let s = sc.string()?;
                match s.plain() {
                    Some(text) => borrowed = Some(text),
                    None => s.unescape_into(&mut d.sensor),
                }
                d.has_sensor = true;
            }
            ValueType::Number => {
                let n = sc.number()?;
                if !n.integer || n.negative {
                    d.fail(Reason::BadSensorId, || {
                        format!(
                            "sensor_id {} is not a string or a non-negative integer",
                            show(n.raw)
                        )
                    });
                    return Ok(None);
                }
                // JSON integers have no leading zeros: the text is the canonical decimal form.
                d.sensor.push_str(std::str::from_utf8(n.raw).unwrap_or(""));
                d.has_sensor = true;
            }
            ValueType::Null => {
                sc.null()?;
                return Ok(None);
            }
            t => {
                sc.skip_value()?;
                d.fail(Reason::BadSensorId, || {
                    format!("sensor_id is {}, not a string or integer", t.name())
                });
                return Ok(None);
            }
        }
        let text: &str = borrowed.unwrap_or(&d.sensor);
        if !tag_value_ok(text) {
            first_error(&mut d.error, Reason::BadSensorId, || {
                format!(
                    "sensor_id {} must be 1 to 128 bytes without control characters or backslash",
                    show(text.as_bytes())
                )
            });
        } else if let Some(Topic::Telemetry { sensor_id, .. }) = ctx.topic {
            if text != sensor_id {
                first_error(&mut d.error, Reason::SensorMismatch, || {
                    format!(
                        "payload sensor_id {} differs from the topic's {}",
                        show(text.as_bytes()),
                        show(sensor_id.as_bytes())
                    )
                });
            }
        }
        Ok(borrowed)
    }

    #[inline(always)]
    fn kind(&mut self, sc: &mut Scanner<'_>, ctx: Ctx<'_>) -> PResult<()> {
        let k = match sc.peek_type()? {
            ValueType::String => {
                let s = sc.string()?;
                // Usually spelled exactly; otherwise matched after ASCII lower-casing.
                if let Some(k) = s.plain().and_then(Kind::parse) {
                    k
                } else {
                    self.scratch.clear();
                    s.unescape_into(&mut self.scratch);
                    self.scratch.make_ascii_lowercase();
                    if let Some(k) = Kind::parse(&self.scratch) {
                        k
                    } else {
                        self.draft.fail(Reason::UnknownKind, || {
                            format!(
                                "kind {} is not water_flow, water_quality or energy",
                                show(self.scratch.as_bytes())
                            )
                        });
                        return Ok(());
                    }
                }
            }
            ValueType::Null => return sc.null(),
            t => {
                sc.skip_value()?;
                self.draft.fail(Reason::UnknownKind, || {
                    format!("kind is {}, not a string", t.name())
                });
                return Ok(());
            }
        };
        let d = &mut self.draft;
        if let Some(Topic::Telemetry { kind, .. }) = ctx.topic {
            if k != kind {
                d.fail(Reason::KindMismatch, || {
                    format!(
                        "payload kind {} differs from the topic's {}",
                        k.as_str(),
                        kind.as_str()
                    )
                });
            }
        }
        d.kind = Some(k);
        Ok(())
    }

    fn site(&mut self, sc: &mut Scanner<'_>, ctx: Ctx<'_>) -> PResult<()> {
        let got = self.string_value(sc)?;
        let d = &mut self.draft;
        match got {
            Ok(false) => {}
            Err(t) => d.fail(Reason::BadSite, || {
                format!("site is {}, not a string", t.name())
            }),
            Ok(true) => {
                if !tag_value_ok(&self.scratch) {
                    d.fail(Reason::BadSite, || {
                        format!(
                            "site {} must be 1 to 128 bytes without control characters or backslash",
                            show(self.scratch.as_bytes())
                        )
                    });
                } else if let Some(t) = ctx.topic {
                    if self.scratch != t.site() {
                        d.fail(Reason::SiteMismatch, || {
                            format!(
                                "payload site {} differs from the topic's {}",
                                show(self.scratch.as_bytes()),
                                show(t.site().as_bytes())
                            )
                        });
                    }
                }
                d.site.clear();
                d.site.push_str(&self.scratch);
                d.has_site = true;
            }
        }
        Ok(())
    }

    #[inline(always)]
    fn zone(&mut self, sc: &mut Scanner<'_>) -> PResult<()> {
        let got = self.string_value(sc)?;
        let d = &mut self.draft;
        match got {
            Ok(false) => {}
            Err(t) => d.fail(Reason::BadZone, || {
                format!("zone is {}, not a string", t.name())
            }),
            Ok(true) => {
                if tag_value_ok(&self.scratch) {
                    d.zone.clear();
                    d.zone.push_str(&self.scratch);
                    d.has_zone = true;
                } else {
                    d.fail(Reason::BadZone, || {
                        format!(
                            "zone {} must be 1 to 128 bytes without control characters or backslash",
                            show(self.scratch.as_bytes())
                        )
                    });
                }
            }
        }
        Ok(())
    }

    #[inline(always)]
    fn timestamp(&mut self, sc: &mut Scanner<'_>) -> PResult<()> {
        let parsed = match sc.peek_type()? {
            ValueType::String => {
                let s = sc.string()?;
                let text = if s.escaped() {
                    self.scratch.clear();
                    s.unescape_into(&mut self.scratch);
                    self.scratch.as_bytes()
                } else {
                    s.raw()
                };
                timestamp::parse_rfc3339_cached(text, &mut self.dates)
                    .map_err(|why| format!("timestamp {}: {why}", show(text)))
            }
            ValueType::Number => {
                if let Some((v, digits)) = sc.plain_integer() {
                    // The token's text is the integer's decimal form (JSON has no leading zeros).
                    timestamp::from_epoch_integer(v, digits).map_err(|why| {
                        format!("timestamp {}: {why}", show(v.to_string().as_bytes()))
                    })
                } else {
                    let n = sc.number()?;
                    timestamp::from_epoch_number(&n)
                        .map_err(|why| format!("timestamp {}: {why}", show(n.raw)))
                }
            }
            ValueType::Null => {
                sc.null()?;
                return Ok(());
            }
            t => {
                sc.skip_value()?;
                Err(format!("timestamp is {}, not a string or number", t.name()))
            }
        };
        match parsed {
            Ok(ns) => self.draft.timestamp_ns = Some(ns),
            Err(m) => self.draft.fail(Reason::BadTimestamp, || m),
        }
        Ok(())
    }

    /// `measurements` or `device_metadata`: an object of measurements (or null).
    fn section(&mut self, sc: &mut Scanner<'_>, name: &JStr<'_>, metadata: bool) -> PResult<()> {
        match sc.peek_type()? {
            ValueType::Object => {}
            ValueType::Null => return sc.null(),
            t => {
                sc.skip_value()?;
                self.draft.fail(Reason::BadValue, || {
                    format!("{} is {}, not an object", show(name.raw()), t.name())
                });
                return Ok(());
            }
        }
        let mut more = sc.begin_members()?;
        while more {
            let (k, key) = self.member_key(sc)?;
            match key {
                Key::Field(i) => self.canonical(sc, usize::from(i), &k)?,
                Key::LastCalibration if metadata => self.ignored(sc, &k)?,
                _ => self.unknown(sc, &k)?,
            }
            more = sc.next_member()?;
        }
        Ok(())
    }

    /// A measurement value: `Ok(Ok(Some(v)))` finite, `Ok(Ok(None))` null, `Ok(Err(why))` refused.
    #[inline(always)]
    fn value(sc: &mut Scanner<'_>) -> PResult<Result<Option<f64>, &'static str>> {
        if let Some(v) = sc.short_decimal() {
            return Ok(Ok(Some(v)));
        }
        match sc.peek_type()? {
            ValueType::Number => {
                let v = sc.number_f64()?;
                Ok(if v.is_finite() {
                    Ok(Some(v))
                } else {
                    Err("a number too large for a 64-bit float")
                })
            }
            ValueType::Null => {
                sc.null()?;
                Ok(Ok(None))
            }
            ValueType::NonFinite => {
                sc.skip_value()?;
                Ok(Err("NaN or Infinity (not a finite number)"))
            }
            t => {
                sc.skip_value()?;
                Ok(Err(t.name()))
            }
        }
    }

    /// Count a measurement key; false (and an error) past the limit.
    fn count_key(d: &mut Draft) -> bool {
        d.keys += 1;
        if d.keys > MAX_FIELDS {
            d.fail(Reason::TooManyFields, || {
                format!("more than {MAX_FIELDS} measurement fields")
            });
            return false;
        }
        true
    }

    #[inline(always)]
    fn canonical(&mut self, sc: &mut Scanner<'_>, i: usize, k: &JStr<'_>) -> PResult<()> {
        let v = Self::value(sc)?;
        let d = &mut self.draft;
        if d.failed() {
            return Ok(());
        }
        let bit = 1u32 << i;
        let name = CANONICAL_FIELDS.get(i).map_or("", |f| f.name);
        if d.canonical_mask & bit != 0 {
            d.fail(Reason::DuplicateField, || {
                format!("{} is field {name} given twice", show(k.raw()))
            });
            return Ok(());
        }
        d.canonical_mask |= bit;
        if !Self::count_key(d) {
            return Ok(());
        }
        match v {
            Ok(Some(v)) => {
                d.canonical[i] = v;
                d.values += 1;
            }
            Ok(None) => d.canonical[i] = f64::NAN,
            Err(why) => d.fail(Reason::BadValue, || {
                format!("measurement {} ({name}) is {why}", show(k.raw()))
            }),
        }
        Ok(())
    }

    fn unknown(&mut self, sc: &mut Scanner<'_>, k: &JStr<'_>) -> PResult<()> {
        let v = Self::value(sc)?;
        let d = &mut self.draft;
        if d.failed() {
            return Ok(());
        }
        let start = d.names.len();
        k.unescape_into(&mut d.names);
        d.names[start..].make_ascii_lowercase();
        if let Some(why) = keys::unknown_name_problem(&d.names[start..]) {
            d.fail(Reason::BadFieldName, || {
                format!("field name {} {why}", show(k.raw()))
            });
            return Ok(());
        }
        let dup = (0..d.unknown.len()).any(|j| d.unknown_name(j) == &d.names[start..]);
        if dup {
            d.fail(Reason::DuplicateField, || {
                format!("field {} given twice", show(k.raw()))
            });
            return Ok(());
        }
        if !Self::count_key(d) {
            return Ok(());
        }
        match v {
            Ok(value) => {
                let (s, e) = (
                    u32::try_from(start).unwrap_or(0),
                    u32::try_from(d.names.len()).unwrap_or(0),
                );
                d.unknown.push((s, e, value.unwrap_or(f64::NAN)));
                d.values += usize::from(value.is_some());
            }
            Err(why) => d.fail(Reason::BadValue, || {
                format!("measurement {} is {why}", show(k.raw()))
            }),
        }
        Ok(())
    }

    /// The whole-object checks, then append the reading or record its error.
    fn complete(&mut self, ctx: &Ctx<'_>, payload_sensor: Option<&str>) {
        let telemetry = match ctx.topic {
            Some(Topic::Telemetry {
                sensor_id, kind, ..
            }) => Some((sensor_id, kind)),
            _ => None,
        };
        let d = &mut self.draft;
        if !d.has_sensor && telemetry.is_none() {
            d.fail(Reason::MissingSensorId, || "missing sensor_id".into());
        }
        let kind = telemetry.map(|t| t.1).or(d.kind);
        if kind.is_none() {
            d.fail(Reason::UnknownKind, || {
                "missing kind (required unless the topic names it)".into()
            });
        }
        if d.values == 0 {
            d.fail(Reason::NoMeasurements, || "no measurement values".into());
        }
        if let Some((reason, m)) = d.error.take() {
            self.error(ctx, reason, m);
            return;
        }
        let Some(kind) = kind else { return };
        let site = match ctx.topic {
            Some(t) => self.topic_site_id(t.site()),
            None if d.has_site => {
                let site = std::mem::take(&mut self.draft.site);
                let id = self.site_id(&site);
                self.draft.site = site;
                id
            }
            None => match self.default_site {
                Some(id) => id,
                None => *self.default_site.insert(self.batch.intern(DEFAULT_SITE)),
            },
        };
        let zone = self.zone_id();
        let d = &self.draft;
        let sensor = match telemetry {
            Some((s, _)) => s,
            None => payload_sensor.unwrap_or(d.sensor.as_str()),
        };
        let ts = d.timestamp_ns.unwrap_or(self.received_ns);
        let source = i32::try_from(ctx.index).unwrap_or(i32::MAX);
        let row = self.batch.push_row(sensor, kind, site, zone, ts, source);
        let mut mask = d.canonical_mask;
        while mask != 0 {
            let i = mask.trailing_zeros() as usize;
            mask &= mask - 1;
            let v = d.canonical[i];
            if !v.is_nan() {
                self.batch.set_canonical(row, i, v);
            }
        }
        for j in 0..d.unknown.len() {
            let v = d.unknown[j].2;
            if !v.is_nan() {
                self.batch.set_unknown(row, d.unknown_name(j), v);
            }
        }
    }

    /// [`Self::site_id`] for a site that is a slice of a topic. Topics are borrowed for the
    /// whole call, so the same address and length mean the same text.
    fn topic_site_id(&mut self, site: &str) -> u32 {
        let at = (site.as_ptr() as usize, site.len());
        if let Some((p, n, id)) = self.topic_site {
            if (p, n) == at {
                return id;
            }
        }
        let id = self.site_id(site);
        self.topic_site = Some((at.0, at.1, id));
        id
    }

    fn site_id(&mut self, site: &str) -> u32 {
        if let Some(id) = self.last_site {
            if self.batch.interned_str(id) == site {
                return id;
            }
        }
        let id = self.batch.intern(site);
        self.last_site = Some(id);
        id
    }

    /// The interned, upper-cased zone of the draft (or the default).
    fn zone_id(&mut self) -> u32 {
        if !self.draft.has_zone {
            return match self.default_zone {
                Some(id) => id,
                None => *self.default_zone.insert(self.batch.intern(DEFAULT_ZONE)),
            };
        }
        let raw = self.draft.zone.as_str();
        if let Some(&(_, id)) = self.zones.iter().find(|(z, _)| z == raw) {
            return id;
        }
        let id = if raw.bytes().any(|b| b.is_ascii_lowercase() || !b.is_ascii()) {
            self.batch.intern(&raw.to_uppercase())
        } else {
            self.batch.intern(raw)
        };
        if self.zones.len() == ZONE_CACHE {
            self.zones.pop();
        }
        self.zones.push((raw.to_owned(), id));
        id
    }
}

#[cfg(test)]
mod tests;
