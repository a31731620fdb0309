//! Payload keys: the reserved (non-measurement) keys, the canonical fields and their aliases
//! (case-insensitive), and the rules for the names of unknown measurement fields.

/// What a key means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Key {
    SensorId,
    Kind,
    Site,
    /// `facility_zone` or `zone`.
    Zone,
    /// `timestamp`, `ts` or `time`.
    Timestamp,
    Location,
    GatewayId,
    LastCalibration,
    DeviceMetadata,
    Measurements,
    /// A canonical field (index into `CANONICAL_FIELDS`), by name or alias.
    Field(u8),
    /// Anything else: an unknown measurement.
    Other,
}

impl Key {
    /// A distinct bit per reserved key, to catch a key given twice (`zone` and `facility_zone`
    /// count as the same key, as do `timestamp`/`ts`/`time`).
    #[must_use]
    pub fn reserved_bit(self) -> u16 {
        match self {
            Key::SensorId => 1,
            Key::Kind => 1 << 1,
            Key::Site => 1 << 2,
            Key::Zone => 1 << 3,
            Key::Timestamp => 1 << 4,
            Key::Location => 1 << 5,
            Key::GatewayId => 1 << 6,
            Key::LastCalibration => 1 << 7,
            Key::DeviceMetadata => 1 << 8,
            Key::Measurements => 1 << 9,
            Key::Field(_) | Key::Other => 0,
        }
    }
}

/// Longest key that can be reserved or canonical; longer keys are `Key::Other` unread.
const MAX_KNOWN_KEY: usize = 32;
/// Longest name of an unknown measurement field (InfluxDB accepts far more; dashboards do not).
pub const MAX_NAME_LEN: usize = 64;

/// Resolve a key (raw bytes, escapes already resolved) case-insensitively.
///
/// Payload keys are almost always spelled in lower case already: they are matched as they are,
/// and only a miss on a key that holds an upper-case ASCII letter pays for a lower-cased copy.
#[must_use]
#[inline]
pub fn resolve(key: &[u8]) -> Key {
    let k = resolve_lower(key);
    if k != Key::Other || key.len() > MAX_KNOWN_KEY || !key.iter().any(u8::is_ascii_uppercase) {
        return k;
    }
    let mut buf = [0u8; MAX_KNOWN_KEY];
    let lower = &mut buf[..key.len()];
    for (d, s) in lower.iter_mut().zip(key) {
        *d = s.to_ascii_lowercase();
    }
    resolve_lower(lower)
}

/// Resolve an already lower-cased key. The canonical indices follow `fields::CANONICAL_FIELDS`
/// (a unit test checks every name and alias against `fields::canonical_index`).
///
/// Dispatch on the length, then compare a [`fingerprint`] — two or three integer loads that
/// cover every byte — with the names' fingerprints computed at compile time: no `memcmp` calls.
#[must_use]
#[inline]
pub fn resolve_lower(key: &[u8]) -> Key {
    if key.len() > 24 {
        return Key::Other;
    }
    let f = fingerprint_of(key);
    match key.len() {
        2 => match f {
            f if f == const { fingerprint(b"ts") } => Key::Timestamp,
            f if f == const { fingerprint(b"ph") } => Key::Field(4),
            f if f == const { fingerprint(b"do") } => Key::Field(6),
            _ => Key::Other,
        },
        3 => match f {
            f if f == const { fingerprint(b"kwh") } => Key::Field(13),
            _ => Key::Other,
        },
        4 => match f {
            f if f == const { fingerprint(b"kind") } => Key::Kind,
            f if f == const { fingerprint(b"site") } => Key::Site,
            f if f == const { fingerprint(b"zone") } => Key::Zone,
            f if f == const { fingerprint(b"time") } => Key::Timestamp,
            f if f == const { fingerprint(b"flow") } => Key::Field(1),
            f if f == const { fingerprint(b"temp") } => Key::Field(2),
            f if f == const { fingerprint(b"rssi") } => Key::Field(21),
            _ => Key::Other,
        },
        5 => match f {
            f if f == const { fingerprint(b"redox") } => Key::Field(9),
            _ => Key::Other,
        },
        6 => match f {
            f if f == const { fingerprint(b"volume") } => Key::Field(3),
            _ => Key::Other,
        },
        7 => match f {
            f if f == const { fingerprint(b"voltage") } => Key::Field(14),
            f if f == const { fingerprint(b"current") } => Key::Field(15),
            f if f == const { fingerprint(b"battery") } => Key::Field(20),
            _ => Key::Other,
        },
        8 => match f {
            f if f == const { fingerprint(b"location") } => Key::Location,
            f if f == const { fingerprint(b"pressure") } => Key::Field(0),
            f if f == const { fingerprint(b"chlorine") } => Key::Field(8),
            f if f == const { fingerprint(b"redox_mv") } => Key::Field(9),
            f if f == const { fingerprint(b"nitrates") } => Key::Field(10),
            _ => Key::Other,
        },
        9 => match f {
            f if f == const { fingerprint(b"sensor_id") } => Key::SensorId,
            f if f == const { fingerprint(b"timestamp") } => Key::Timestamp,
            f if f == const { fingerprint(b"flow_rate") } => Key::Field(1),
            f if f == const { fingerprint(b"turbidity") } => Key::Field(5),
            f if f == const { fingerprint(b"voltage_v") } => Key::Field(14),
            f if f == const { fingerprint(b"current_a") } => Key::Field(15),
            f if f == const { fingerprint(b"occupancy") } => Key::Field(17),
            _ => Key::Other,
        },
        10 => match f {
            f if f == const { fingerprint(b"gateway_id") } => Key::GatewayId,
            f if f == const { fingerprint(b"total_flow") } => Key::Field(3),
            f if f == const { fingerprint(b"phosphates") } => Key::Field(11),
            f if f == const { fingerprint(b"energy_kwh") } => Key::Field(13),
            _ => Key::Other,
        },
        11 => match f {
            f if f == const { fingerprint(b"temperature") } => Key::Field(2),
            f if f == const { fingerprint(b"nitrate_mgl") } => Key::Field(10),
            _ => Key::Other,
        },
        12 => match f {
            f if f == const { fingerprint(b"measurements") } => Key::Measurements,
            f if f == const { fingerprint(b"pressure_bar") } => Key::Field(0),
            f if f == const { fingerprint(b"conductivity") } => Key::Field(7),
            f if f == const { fingerprint(b"chlorine_mgl") } => Key::Field(8),
            f if f == const { fingerprint(b"heavy_metals") } => Key::Field(12),
            f if f == const { fingerprint(b"power_factor") } => Key::Field(16),
            f if f == const { fingerprint(b"humidity_pct") } => Key::Field(19),
            _ => Key::Other,
        },
        13 => match f {
            f if f == const { fingerprint(b"facility_zone") } => Key::Zone,
            f if f == const { fingerprint(b"flow_rate_lps") } => Key::Field(1),
            f if f == const { fingerprint(b"temperature_c") } => Key::Field(2),
            f if f == const { fingerprint(b"total_flow_m3") } => Key::Field(3),
            f if f == const { fingerprint(b"turbidity_ntu") } => Key::Field(5),
            f if f == const { fingerprint(b"phosphate_mgl") } => Key::Field(11),
            f if f == const { fingerprint(b"battery_level") } => Key::Field(20),
            _ => Key::Other,
        },
        15 => match f {
            f if f == const { fingerprint(b"device_metadata") } => Key::DeviceMetadata,
            f if f == const { fingerprint(b"signal_strength") } => Key::Field(21),
            _ => Key::Other,
        },
        16 => match f {
            f if f == const { fingerprint(b"last_calibration") } => Key::LastCalibration,
            f if f == const { fingerprint(b"dissolved_oxygen") } => Key::Field(6),
            f if f == const { fingerprint(b"heavy_metals_ugl") } => Key::Field(12),
            _ => Key::Other,
        },
        17 => match f {
            f if f == const { fingerprint(b"conductivity_uscm") } => Key::Field(7),
            _ => Key::Other,
        },
        19 => match f {
            f if f == const { fingerprint(b"signal_strength_dbm") } => Key::Field(21),
            _ => Key::Other,
        },
        20 => match f {
            f if f == const { fingerprint(b"dissolved_oxygen_mgl") } => Key::Field(6),
            _ => Key::Other,
        },
        21 => match f {
            f if f == const { fingerprint(b"outdoor_temperature_c") } => Key::Field(18),
            _ => Key::Other,
        },
        _ => Key::Other,
    }
}

/// [`fingerprint`] at run time: the same words, each one plain load.
#[inline(always)]
fn fingerprint_of(b: &[u8]) -> [u64; 3] {
    fn w8(b: &[u8], at: usize) -> u64 {
        b.get(at..)
            .and_then(<[u8]>::first_chunk::<8>)
            .map_or(0, |c| u64::from_le_bytes(*c))
    }
    fn w4(b: &[u8], at: usize) -> u64 {
        b.get(at..)
            .and_then(<[u8]>::first_chunk::<4>)
            .map_or(0, |c| u64::from(u32::from_le_bytes(*c)))
    }
    fn w2(b: &[u8], at: usize) -> u64 {
        b.get(at..)
            .and_then(<[u8]>::first_chunk::<2>)
            .map_or(0, |c| u64::from(u16::from_le_bytes(*c)))
    }
    let n = b.len();
    match n {
        0 => [0, 0, 0],
        1 => [u64::from(b[0]), 0, 0],
        2..=3 => [w2(b, 0), w2(b, n - 2), 0],
        4..=7 => [w4(b, 0), w4(b, n - 4), 0],
        8..=16 => [w8(b, 0), w8(b, n - 8), 0],
        _ => [w8(b, 0), w8(b, 8), w8(b, n - 8)],
    }
}

/// `n` ≤ 8 bytes of `b` from `at`, little-endian (0 for bytes past the end, which the callers
/// never ask for).
const fn load(b: &[u8], at: usize, n: usize) -> u64 {
    let mut v = 0u64;
    let mut k = 0;
    while k < n {
        if at + k < b.len() {
            v |= (b[at + k] as u64) << (8 * k);
        }
        k += 1;
    }
    v
}

/// Integer words covering every byte of a key of at most 24 bytes (overlapping loads): two keys
/// of the same length are equal exactly when their fingerprints are. For the compile-time
/// constants; [`fingerprint_of`] computes the same at run time.
const fn fingerprint(b: &[u8]) -> [u64; 3] {
    let n = b.len();
    match n {
        0 => [0, 0, 0],
        1 => [b[0] as u64, 0, 0],
        2..=3 => [load(b, 0, 2), load(b, n - 2, 2), 0],
        4..=7 => [load(b, 0, 4), load(b, n - 4, 4), 0],
        8..=16 => [load(b, 0, 8), load(b, n - 8, 8), 0],
        _ => [load(b, 0, 8), load(b, 8, 8), load(b, n - 8, 8)],
    }
}

/// Names an unknown measurement may not take: the reserved keys, the tag keys, InfluxDB's
/// `time`, and the verdict fields written on the same point (DESIGN.md §3, §4).
const RESERVED_NAMES: &[&str] = &[
    "sensor_id",
    "kind",
    "site",
    "zone",
    "facility_zone",
    "timestamp",
    "ts",
    "time",
    "location",
    "gateway_id",
    "last_calibration",
    "device_metadata",
    "measurements",
    "leak_probability",
    "burst_probability",
    "contamination_probability",
    "anomaly_score",
    "expected_kwh",
    "anomaly_type",
    "risk",
    "risk_level",
    "confidence",
    "model_version",
    "severity",
    "alert_type",
    "message",
];

/// Why an unknown field's name is refused, or `None` when `lower` (the lower-cased key) is a
/// valid name: `[a-z][a-z0-9_]{0,63}` and not reserved.
#[must_use]
pub fn unknown_name_problem(lower: &str) -> Option<&'static str> {
    let b = lower.as_bytes();
    if b.is_empty() || b.len() > MAX_NAME_LEN {
        return Some("must be 1 to 64 characters");
    }
    if !b[0].is_ascii_lowercase()
        || !b
            .iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'_')
    {
        return Some("must match [a-z][a-z0-9_]* (case-insensitive)");
    }
    if RESERVED_NAMES.contains(&lower) {
        return Some("is reserved");
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fields::{canonical_index, CANONICAL_FIELDS};

    #[test]
    fn every_canonical_name_and_alias_resolves_like_fields_rs() {
        for (i, f) in CANONICAL_FIELDS.iter().enumerate() {
            for name in std::iter::once(&f.name).chain(f.aliases) {
                assert_eq!(
                    resolve(name.as_bytes()),
                    Key::Field(u8::try_from(i).unwrap()),
                    "{name}"
                );
                assert_eq!(
                    resolve(name.to_ascii_uppercase().as_bytes()),
                    Key::Field(i as u8),
                    "{name}"
                );
                assert_eq!(canonical_index(name), Some(i));
            }
        }
    }

    #[test]
    fn resolve_agrees_with_canonical_index_elsewhere() {
        for k in [
            "x",
            "Ph_",
            "sensor_id",
            "Timestamp",
            "TS",
            "phosphate",
            "energy",
            "tempc",
            "",
            "do2",
        ] {
            let mine = match resolve(k.as_bytes()) {
                Key::Field(i) => Some(usize::from(i)),
                _ => None,
            };
            assert_eq!(mine, canonical_index(k), "{k}");
        }
        assert_eq!(resolve(b"Facility_Zone"), Key::Zone);
        assert_eq!(resolve(b"TIME"), Key::Timestamp);
    }

    #[test]
    fn fingerprints_agree_and_identify_keys() {
        let text = b"abcdefghijklmnopqrstuvwxyz0123456789";
        for n in 0..=24 {
            for at in 0..4 {
                let k = &text[at..at + n];
                assert_eq!(fingerprint(k), fingerprint_of(k), "{n}");
                // Changing any one byte changes the fingerprint.
                for j in 0..n {
                    let mut m = k.to_vec();
                    m[j] = b'_';
                    assert_ne!(fingerprint_of(&m), fingerprint_of(k), "{n} {j}");
                }
            }
        }
    }

    #[test]
    fn reserved_names_are_not_canonical_and_are_refused() {
        for n in RESERVED_NAMES {
            assert_eq!(canonical_index(n), None, "{n}");
            assert_eq!(unknown_name_problem(n), Some("is reserved"));
        }
        assert_eq!(unknown_name_problem("flow_2"), None);
        assert!(unknown_name_problem("2flow").is_some());
        assert!(unknown_name_problem("_x").is_some());
        assert!(unknown_name_problem("a-b").is_some());
        assert!(unknown_name_problem(&"a".repeat(64)).is_none());
        assert!(unknown_name_problem(&"a".repeat(65)).is_some());
    }
}
