//! MQTT topics: `infrawatch/{site}/{kind}/{sensor_id}/telemetry` and
//! `infrawatch/{site}/gateway/{gateway_id}/batch` (DESIGN.md §1).

use super::reasons::Reason;
use crate::fields::Kind;

/// What a well-formed topic says about its messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Topic<'t> {
    /// One reading from one sensor.
    Telemetry {
        site: &'t str,
        kind: Kind,
        sensor_id: &'t str,
    },
    /// A JSON array of readings forwarded by a gateway.
    Gateway { site: &'t str, gateway_id: &'t str },
}

impl<'t> Topic<'t> {
    #[must_use]
    pub fn site(&self) -> &'t str {
        match self {
            Topic::Telemetry { site, .. } | Topic::Gateway { site, .. } => site,
        }
    }
}

/// Per byte: bit 0 when it is printable ASCII other than `\\` (a tag value may hold it without a
/// closer look), bit 1 when it is also not `+` or `#` (likewise for a topic segment).
static PLAIN: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut b = 0x20;
    while b < 0x7f {
        if b != b'\\' as usize {
            t[b] = if b == b'+' as usize || b == b'#' as usize {
                1
            } else {
                3
            };
        }
        b += 1;
    }
    t
};

/// Whether `s` is 1..=128 bytes whose every byte has `bit` in [`PLAIN`].
#[inline]
fn plain(s: &str, bit: u8) -> bool {
    !s.is_empty() && s.len() <= 128 && s.bytes().all(|b| PLAIN[b as usize] & bit != 0)
}

/// Whether `s` can be stored as an InfluxDB tag value and shown safely: 1..=128 bytes, no control
/// characters and no backslash (line protocol escaping of a trailing backslash is ambiguous).
#[must_use]
pub fn tag_value_ok(s: &str) -> bool {
    if s.is_empty() || s.len() > 128 {
        return false;
    }
    // Fast path: printable ASCII (0x20..=0x7E) except the backslash.
    if plain(s, 1) {
        return true;
    }
    !s.chars().any(|c| c == '\\' || c.is_control())
}

/// The '/'-separated levels of a topic (like `str::split('/')`, with a byte search).
struct Levels<'t> {
    rest: Option<&'t str>,
}

impl<'t> Iterator for Levels<'t> {
    type Item = &'t str;

    #[inline]
    fn next(&mut self) -> Option<&'t str> {
        let rest = self.rest?;
        match rest.bytes().position(|b| b == b'/') {
            Some(i) => {
                self.rest = Some(&rest[i + 1..]);
                Some(&rest[..i])
            }
            None => {
                self.rest = None;
                Some(rest)
            }
        }
    }
}

/// Why a topic was rejected: `bad_topic` or `unknown_kind`, and a message.
pub type TopicError = (Reason, String);

/// Parse a topic. A kind segment that is none of the three kinds (nor `gateway`) is
/// `unknown_kind`; anything else malformed is `bad_topic`.
pub fn parse(topic: &str) -> Result<Topic<'_>, TopicError> {
    let bad = |why: &str| {
        (
            Reason::BadTopic,
            format!(
                "topic {} {why}: expected infrawatch/{{site}}/{{kind}}/{{sensor_id}}/telemetry or \
                 infrawatch/{{site}}/gateway/{{gateway_id}}/batch",
                super::show(topic.as_bytes())
            ),
        )
    };
    // Split on '/' by hand: `str::split` showed up in profiles (one topic per message).
    let mut parts = Levels { rest: Some(topic) };
    let (Some(root), Some(site), Some(kind), Some(id), Some(leaf), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return Err(bad("does not have 5 levels"));
    };
    if root != "infrawatch" {
        return Err(bad("does not start with infrawatch/"));
    }
    // Fast path: printable ASCII without `\\`, `+` or `#`.
    let segment_ok = |s: &str| plain(s, 2) || (tag_value_ok(s) && !s.contains(['+', '#']));
    if !segment_ok(site) {
        return Err(bad("has an invalid site"));
    }
    if !segment_ok(id) {
        return Err(bad("has an invalid sensor or gateway id"));
    }
    if kind == "gateway" {
        return if leaf == "batch" {
            Ok(Topic::Gateway {
                site,
                gateway_id: id,
            })
        } else {
            Err(bad("is a gateway topic not ending in /batch"))
        };
    }
    let Some(kind) = Kind::parse(kind) else {
        return Err((
            Reason::UnknownKind,
            format!(
                "topic kind {} is not water_flow, water_quality, energy or gateway",
                super::show(kind.as_bytes())
            ),
        ));
    };
    if leaf != "telemetry" {
        return Err(bad("is a sensor topic not ending in /telemetry"));
    }
    Ok(Topic::Telemetry {
        site,
        kind,
        sensor_id: id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics() {
        assert_eq!(
            parse("infrawatch/plant-1/water_flow/S001/telemetry"),
            Ok(Topic::Telemetry {
                site: "plant-1",
                kind: Kind::WaterFlow,
                sensor_id: "S001"
            })
        );
        assert_eq!(
            parse("infrawatch/plant-1/gateway/gw7/batch"),
            Ok(Topic::Gateway {
                site: "plant-1",
                gateway_id: "gw7"
            })
        );
        let code = |t: &str| parse(t).unwrap_err().0;
        assert_eq!(
            code("infrawatch/plant-1/steam/S001/telemetry"),
            Reason::UnknownKind
        );
        for t in [
            "",
            "infrawatch",
            "infrawatch/p/water_flow/S001",
            "infrawatch/p/water_flow/S001/telemetry/x",
            "other/p/water_flow/S001/telemetry",
            "infrawatch//water_flow/S001/telemetry",
            "infrawatch/p/water_flow//telemetry",
            "infrawatch/p/water_flow/S+1/telemetry",
            "infrawatch/p/water_flow/S\\1/telemetry",
            "infrawatch/p/water_flow/S\n1/telemetry",
            "infrawatch/p/water_flow/S001/batch",
            "infrawatch/p/gateway/g1/telemetry",
        ] {
            assert_eq!(code(t), Reason::BadTopic, "{t:?}");
        }
    }
}

#[cfg(test)]
mod plain_tests {
    use super::*;

    #[test]
    fn plain_table_matches_its_definition() {
        for b in 0..=255u8 {
            let printable = (0x20..0x7f).contains(&b) && b != b'\\';
            assert_eq!(PLAIN[b as usize] & 1 != 0, printable, "{b}");
            assert_eq!(
                PLAIN[b as usize] & 2 != 0,
                printable && b != b'+' && b != b'#',
                "{b}"
            );
        }
        assert!(tag_value_ok("a+b") && !tag_value_ok("a\\b") && tag_value_ok("é"));
        assert!(parse("infrawatch/p+/water_flow/S1/telemetry").is_err());
        assert!(parse("infrawatch/pé/water_flow/S1/telemetry").is_ok());
        assert!(parse("infrawatch/pé#/water_flow/S1/telemetry").is_err());
    }
}
