//! Decoder tests: every reason code, both payload forms, gateway batches, and a cheap
//! property test (mutated payloads never panic and every message is accounted for).

use super::*;

const NOW: i64 = 1_769_337_000_000_000_000;

fn one(payload: &str, topic: Option<&str>) -> ReadingBatch {
    let topics = topic.map(|t| vec![t]);
    decode(&[payload.as_bytes()], topics.as_deref(), NOW)
}

fn reason(payload: &str, topic: Option<&str>) -> &'static str {
    let b = one(payload, topic);
    assert_eq!(b.len(), 0, "{payload}: expected an error, got a reading");
    assert_eq!(b.errors.len(), 1, "{payload}: {:?}", b.errors);
    b.errors[0].reason
}

const NESTED: &str = r#"{"sensor_id": "S001", "timestamp": "2026-01-25T10:30:00Z", "location": "Server Room A",
 "facility_zone": "CRITICAL",
 "measurements": {"pressure_bar": 3.2, "flow_rate_lps": 125.5, "temperature_c": 18.5},
 "device_metadata": {"battery_level": 85, "signal_strength": -45, "last_calibration": "2026-01-20T09:00:00Z"}}"#;

#[test]
fn nested_form_with_topic() {
    let b = one(NESTED, Some("infrawatch/plant/water_flow/S001/telemetry"));
    assert!(b.errors.is_empty(), "{:?}", b.errors);
    assert_eq!(b.len(), 1);
    assert_eq!(b.sensor_id(0), "S001");
    assert_eq!(b.kind(0), Kind::WaterFlow);
    assert_eq!(b.site(0), "plant");
    assert_eq!(b.zone(0), "CRITICAL");
    assert_eq!(b.timestamp_ns[0], NOW);
    assert_eq!(b.source, [0]);
    assert_eq!(
        b.field_names().collect::<Vec<_>>(),
        [
            "pressure_bar",
            "flow_rate_lps",
            "temperature_c",
            "battery_level",
            "signal_strength_dbm"
        ]
    );
    assert_eq!(b.field("pressure_bar"), Some(&[3.2][..]));
    assert_eq!(b.field("signal_strength_dbm"), Some(&[-45.0][..]));
}

#[test]
fn flat_form_without_topic() {
    let b = one(
        r#"{"sensor_id":"123","kind":"water_quality","pH":7.2,"temp":15.4,"Zone":"critical","foo_1":2}"#,
        None,
    );
    assert!(b.errors.is_empty(), "{:?}", b.errors);
    assert_eq!(b.site(0), DEFAULT_SITE);
    assert_eq!(b.zone(0), "CRITICAL");
    assert_eq!(b.kind(0), Kind::WaterQuality);
    assert_eq!(b.timestamp_ns[0], NOW);
    assert_eq!(
        b.field_names().collect::<Vec<_>>(),
        ["temperature_c", "ph", "foo_1"]
    );
    let b = one(r#"{"sensor_id":42,"kind":"energy","kwh":1}"#, None);
    assert_eq!(b.sensor_id(0), "42");
    assert_eq!(b.zone(0), DEFAULT_ZONE);
}

#[test]
fn gateway_batches_keep_good_elements() {
    let p = r#"[{"sensor_id":"a","kind":"energy","kwh":1.5},
               {"sensor_id":"b","kind":"energy","kwh":"x"},
               7,
               {"sensor_id":"c","kind":"water_flow","flow":2,"extra":3}]"#;
    let b = one(p, Some("infrawatch/hq/gateway/gw1/batch"));
    assert_eq!(b.sensor_ids().collect::<Vec<_>>(), ["a", "c"]);
    assert_eq!(b.source, [0, 0]);
    assert_eq!(b.site(1), "hq");
    let codes: Vec<_> = b
        .errors
        .iter()
        .map(|e| (e.reason, e.message.starts_with("element ")))
        .collect();
    assert_eq!(codes, [("bad_value", true), ("not_object", true)]);
    assert!(b.errors[0].message.starts_with("element 1:"));
    assert!(b.errors[1].message.starts_with("element 2:"));
    let kwh = b.field("energy_kwh").unwrap();
    assert_eq!(kwh[0], 1.5);
    assert!(kwh[1].is_nan());
    // Without a topic a top-level array is a gateway batch too.
    let b = one(p, None);
    assert_eq!(b.len(), 2);
    assert_eq!(b.site(0), DEFAULT_SITE);
}

#[test]
fn invalid_json_rolls_back_a_gateway_batch() {
    let p = r#"[{"sensor_id":"a","kind":"energy","kwh":1},{"sensor_id":"b","kind":"energy","kwh":"x"}, oops]"#;
    let b = one(p, None);
    assert_eq!(b.len(), 0);
    assert_eq!(b.errors.len(), 1);
    assert_eq!(b.errors[0].reason, "invalid_json");
    assert_eq!(b.field_names().count(), 0);
}

#[test]
fn every_reason_code_is_reachable() {
    let tele = Some("infrawatch/p/water_flow/S1/telemetry");
    let gw = Some("infrawatch/p/gateway/g/batch");
    let big = format!(
        r#"{{"sensor_id":"a","kind":"energy","kwh":1,"x":"{}"}}"#,
        "y".repeat(70_000)
    );
    let many = format!("[{}]", vec!["{}"; 10_001].join(","));
    let too_many_fields = format!(
        r#"{{"sensor_id":"a","kind":"energy",{}}}"#,
        (0..65)
            .map(|i| format!("\"f{i}\":1"))
            .collect::<Vec<_>>()
            .join(",")
    );
    let cases: Vec<(&str, &str, Option<&str>)> = vec![
        ("too_large", &big, None),
        ("invalid_json", "{", None),
        (
            "invalid_json",
            r#"{"sensor_id":"a","kind":"energy","kwh":1} x"#,
            None,
        ),
        ("invalid_json", "{\"sensor_id\":\"\u{0}\"}", None),
        ("not_object", "[1]", tele),
        ("not_object", "42", None),
        ("not_object", r#"{"sensor_id":"a"}"#, gw),
        (
            "bad_topic",
            r#"{"flow":1}"#,
            Some("infrawatch/p/water_flow/S1"),
        ),
        (
            "unknown_kind",
            r#"{"flow":1}"#,
            Some("infrawatch/p/steam/S1/telemetry"),
        ),
        ("unknown_kind", r#"{"sensor_id":"a","flow":1}"#, None),
        (
            "unknown_kind",
            r#"{"sensor_id":"a","kind":"steam","flow":1}"#,
            None,
        ),
        ("kind_mismatch", r#"{"kind":"energy","flow":1}"#, tele),
        ("missing_sensor_id", r#"{"kind":"energy","kwh":1}"#, None),
        (
            "bad_sensor_id",
            r#"{"sensor_id":"","kind":"energy","kwh":1}"#,
            None,
        ),
        (
            "bad_sensor_id",
            r#"{"sensor_id":"a\\b","kind":"energy","kwh":1}"#,
            None,
        ),
        (
            "bad_sensor_id",
            r#"{"sensor_id":"a\nb","kind":"energy","kwh":1}"#,
            None,
        ),
        (
            "bad_sensor_id",
            r#"{"sensor_id":1.5,"kind":"energy","kwh":1}"#,
            None,
        ),
        ("sensor_mismatch", r#"{"sensor_id":"S2","flow":1}"#, tele),
        (
            "bad_site",
            r#"{"sensor_id":"a","kind":"energy","site":7,"kwh":1}"#,
            None,
        ),
        ("site_mismatch", r#"{"site":"q","flow":1}"#, tele),
        ("bad_zone", r#"{"zone":"","flow":1}"#, tele),
        (
            "bad_timestamp",
            r#"{"timestamp":"yesterday","flow":1}"#,
            tele,
        ),
        ("bad_timestamp", r#"{"ts":-5,"flow":1}"#, tele),
        ("bad_timestamp", r#"{"time":true,"flow":1}"#, tele),
        ("bad_value", r#"{"flow":"1"}"#, tele),
        ("bad_value", r#"{"flow":NaN}"#, tele),
        ("bad_value", r#"{"flow":-Infinity}"#, tele),
        ("bad_value", r#"{"flow":1e999}"#, tele),
        ("bad_value", r#"{"flow":{"a":1}}"#, tele),
        ("bad_value", r#"{"measurements":[1]}"#, tele),
        ("bad_field_name", r#"{"flow":1,"9x":1}"#, tele),
        (
            "bad_field_name",
            r#"{"flow":1,"measurements":{"risk":1}}"#,
            tele,
        ),
        ("duplicate_field", r#"{"temp":1,"temperature":2}"#, tele),
        ("duplicate_field", r#"{"x":1,"X":2}"#, tele),
        (
            "duplicate_field",
            r#"{"zone":"a","facility_zone":"b","flow":1}"#,
            tele,
        ),
        (
            "duplicate_field",
            r#"{"flow":1,"measurements":{"flow_rate_lps":2}}"#,
            tele,
        ),
        ("too_many_fields", &too_many_fields, None),
        (
            "no_measurements",
            r#"{"sensor_id":"a","kind":"energy"}"#,
            None,
        ),
        ("no_measurements", r#"{"flow":null}"#, tele),
        ("too_many_readings", &many, gw),
        ("empty_batch", "[]", gw),
    ];
    let mut seen = std::collections::HashSet::new();
    for (want, payload, topic) in cases {
        assert_eq!(
            reason(payload, topic),
            want,
            "{}",
            &payload[..payload.len().min(80)]
        );
        seen.insert(want);
    }
    for code in REASON_CODES {
        assert!(seen.contains(code), "no test reaches {code}");
    }
}

#[test]
fn first_problem_in_document_order_wins() {
    let tele = Some("infrawatch/p/water_flow/S1/telemetry");
    assert_eq!(
        reason(r#"{"flow":"x","timestamp":"bad"}"#, tele),
        "bad_value"
    );
    assert_eq!(
        reason(r#"{"timestamp":"bad","flow":"x"}"#, tele),
        "bad_timestamp"
    );
    // Whole-object checks come after document-order ones.
    assert_eq!(reason(r#"{"kind":"energy","kwh":"x"}"#, None), "bad_value");
}

#[test]
fn null_is_missing_not_an_error() {
    let b = one(
        r#"{"flow":null,"pressure":2,"timestamp":null,"zone":null,"x":null}"#,
        Some("infrawatch/p/water_flow/S1/telemetry"),
    );
    assert!(b.errors.is_empty(), "{:?}", b.errors);
    assert_eq!(b.field_names().collect::<Vec<_>>(), ["pressure_bar"]);
    assert_eq!(b.timestamp_ns[0], NOW);
    assert_eq!(b.zone(0), DEFAULT_ZONE);
}

#[test]
fn escaped_keys_and_values() {
    let b = one(
        r#"{"sensor\u005fid":"S\u00e9","kind":"energy","k\u0057h":2}"#,
        None,
    );
    assert!(b.errors.is_empty(), "{:?}", b.errors);
    assert_eq!(b.sensor_id(0), "Sé");
    assert_eq!(b.field("energy_kwh"), Some(&[2.0][..]));
}

#[test]
fn topics_shorter_than_payloads_are_bad_topics() {
    let p: [&[u8]; 2] = [br#"{"flow":1}"#, br#"{"flow":1}"#];
    let b = decode(&p, Some(&["infrawatch/p/water_flow/S1/telemetry"]), NOW);
    assert_eq!(b.len(), 1);
    assert_eq!(b.errors[0].index, 1);
    assert_eq!(b.errors[0].reason, "bad_topic");
}

#[test]
fn decode_into_reuses_and_resets() {
    let mut b = ReadingBatch::default();
    decode_into(&mut b, &[NESTED.as_bytes()], None, NOW);
    assert_eq!(b.len(), 0); // no kind without a topic
    decode_into(
        &mut b,
        &[br#"{"sensor_id":"a","kind":"energy","kwh":1}"#],
        None,
        NOW,
    );
    assert_eq!(b.len(), 1);
    assert!(b.errors.is_empty());
    assert_eq!(b.field_names().collect::<Vec<_>>(), ["energy_kwh"]);
}

/// Every message has either readings or errors; a non-gateway message exactly one of them.
fn check_accounting(payloads: &[&[u8]], b: &ReadingBatch) {
    for (i, p) in payloads.iter().enumerate() {
        let readings = b.source.iter().filter(|&&s| s as usize == i).count();
        let errors = b.errors.iter().filter(|e| e.index == i).count();
        let gateway = p.iter().find(|c| !c.is_ascii_whitespace()) == Some(&b'[');
        if gateway {
            assert!(readings + errors >= 1, "{:?}", String::from_utf8_lossy(p));
        } else {
            assert_eq!(readings + errors, 1, "{:?}", String::from_utf8_lossy(p));
        }
    }
    for name in b.field_names() {
        assert_eq!(b.field(name).unwrap().len(), b.len());
    }
    assert_eq!(b.sensor_ids().count(), b.len());
}

#[test]
fn mutated_payloads_never_panic_and_are_accounted_for() {
    let seeds = [
        NESTED,
        r#"{"sensor_id":"123","kind":"water_quality","pH":7.2,"temp":15.4}"#,
        r#"[{"sensor_id":"a","kind":"energy","kwh":1.5,"ts":1769337000123},{"sensor_id":2,"kind":"energy","kwh":2}]"#,
    ];
    let mut x: u64 = 0x1234_5678_9ABC_DEF1;
    let mut rnd = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for seed in seeds {
        for _ in 0..3000 {
            let mut p = seed.as_bytes().to_vec();
            for _ in 0..=(rnd() % 3) {
                let at = (rnd() as usize) % (p.len() + 1);
                match rnd() % 4 {
                    0 if at < p.len() => p[at] = rnd() as u8,
                    1 => p.truncate(at),
                    2 => p.insert(at, b"{}[]\",:0-eE.\\nNaI \x80\xff"[(rnd() % 20) as usize]),
                    _ if at < p.len() => {
                        p.remove(at);
                    }
                    _ => {}
                }
            }
            let payloads = [p.as_slice()];
            let b = decode(&payloads, None, NOW);
            check_accounting(&payloads, &b);
            let b = decode(
                &payloads,
                Some(&["infrawatch/p/water_flow/S001/telemetry"]),
                NOW,
            );
            check_accounting(&payloads, &b);
        }
    }
}

#[test]
fn agrees_with_serde_json_on_validity() {
    // Whatever serde_json rejects must be invalid_json here, and vice versa (no NaN tokens).
    let samples = [
        r#"{"sensor_id":"a","kind":"energy","kwh":1}"#,
        r#"{"sensor_id":"a","kind":"energy","kwh":1,}"#,
        r#"{"sensor_id":"a","kind":"energy","kwh":01}"#,
        r#"{"sensor_id":"a","kind":"energy","kwh":1.}"#,
        r#"{"sensor_id":"a","kind":"energy","kwh":1}  "#,
        r#"{"sensor_id":"\ud800","kind":"energy","kwh":1}"#,
        r#"{"sensor_id":"a","kind":"energy","kwh":[1,2,]}"#,
        "{\"sensor_id\":\"a\",\"kind\":\"energy\",\"kwh\":1}\u{0}",
    ];
    for s in samples {
        let serde_ok = serde_json::from_str::<serde_json::Value>(s).is_ok();
        let b = one(s, None);
        let mine_ok = !b.errors.iter().any(|e| e.reason == "invalid_json");
        assert_eq!(mine_ok, serde_ok, "{s}");
    }
}

/// Readings as plain values, for comparing batches decoded in different groupings.
fn rows(b: &ReadingBatch) -> Vec<String> {
    let cols: Vec<(&str, &[f64])> = b.fields().collect();
    (0..b.len())
        .map(|i| {
            let mut r = format!(
                "{} {:?} {} {} {} |",
                b.sensor_id(i),
                b.kind(i),
                b.site(i),
                b.zone(i),
                b.timestamp_ns[i]
            );
            // By name: the column order depends on the other readings of the batch.
            let mut fields: Vec<String> = cols
                .iter()
                .filter(|(_, col)| !col[i].is_nan())
                .map(|(name, col)| format!(" {name}={:?}", col[i]))
                .collect();
            fields.sort();
            r.push_str(&fields.concat());
            r
        })
        .collect()
}

#[test]
fn remembered_keys_never_change_a_result() {
    // The decoder compares each key with the one at the same position of earlier readings:
    // decoding messages together must give what decoding each alone gives, whatever the keys
    // of the previous messages were (same keys, near misses, escapes, case, spacing).
    let variants = [
        r#"{"sensor_id": "S1", "kind": "energy", "kwh": 1.5, "ts": 1769337000}"#,
        r#"{"sensor_id": "S1", "kind": "energy", "kwh": 2.5, "ts": 1769337001}"#,
        r#"{"sensor_id":"S1","kind":"energy","kwh":3,"ts":1769337002}"#,
        r#"{"sensor_id" :  "S1" , "kind"	:"energy", "kwh" : 4, "ts": 1769337003}"#,
        r#"{"sensor_idx": "S1", "kind": "energy", "kwh": 1.5}"#,
        r#"{"sensor_i": "S1", "kind": "energy", "kwh": 1.5}"#,
        r#"{"Sensor_Id": "S1", "KIND": "Energy", "KWH": 1.5}"#,
        r#"{"sensor\u005fid": "S1", "kind": "energy", "k\u0077h": 1.5}"#,
        r#"{"sensor_id": "S1", "kind": "energy", "kwh": 1.5, "kwh": 2}"#,
        r#"{"sensor_id": "S1", "kind": "energy", "kWh": 1.5, "energy_kwh": 2}"#,
        r#"{"sensor_id": "S1", "kind": "energy", "kwh": "1.5"}"#,
        r#"{"sensor_id": "S1", "kind": "energy", "kwh"}"#,
        r#"{"sensor_id": "S1", "kind": "energy", "kwh": 1.5"#,
        r#"{"sensor_id": "S1", "kind": "energy", "kwh":: 1.5}"#,
        r#"{"sensor_id": "S1", "kind": "energy", "kwh" 1.5}"#,
        r#"{"sensor_id": "S1", "kind": "energy", "measurements": {"kwh": 1, "voltage": 230}}"#,
        r#"{"sensor_id": "S1", "kind": "energy", "measurements": {"kwh": 1, "voltage_x": 230}}"#,
        r#"{"sensor_id": "S1", "kind": "energy", "measurements": {"kwh": 1, "sensor_id": 230}}"#,
        r#"{"sensor_id": "S1", "kind": "energy", "a_very_long_unknown_field_name_xyz": 1}"#,
        r#"{"sensor_id": "S1", "kind": "energy", "a_very_long_unknown_field_name_xyw": 1}"#,
        r#"{"sensor_id": "S1", "kind": "energy", "é": 1}"#,
        r#"{"sensor_id": "S1", "kind": "energy", "éé": 1}"#,
        r#"[{"sensor_id": "S1", "kind": "energy", "kwh": 1}, {"sensor_id": "S2", "kind": "energy", "kwh": 2}]"#,
        r#"{"sensor_id": "S1", "kind": "energy", "kwh": 1.5, "zone": "a", "site": "b"}"#,
        r#"{"sensor_id": "S1", "kind": "energy", "kwh": 1.5, "facility_zone": "a", "zone": "b"}"#,
    ];
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    for _ in 0..300 {
        let mut msgs = Vec::new();
        for _ in 0..12 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            msgs.push(variants[(x % variants.len() as u64) as usize].as_bytes());
        }
        let together = decode(&msgs, None, NOW);
        let mut want_rows = Vec::new();
        let mut want_errors = Vec::new();
        for (i, m) in msgs.iter().enumerate() {
            let alone = decode(&[m], None, NOW);
            want_rows.extend(rows(&alone));
            want_errors.extend(
                alone
                    .errors
                    .iter()
                    .map(|e| (i, e.reason, e.message.clone())),
            );
        }
        assert_eq!(rows(&together), want_rows);
        let got: Vec<_> = together
            .errors
            .iter()
            .map(|e| (e.index, e.reason, e.message.clone()))
            .collect();
        assert_eq!(got, want_errors);
    }
}

#[test]
fn many_zones_in_one_batch() {
    // More distinct zone spellings than the decoder remembers, repeated and in mixed case.
    let msgs: Vec<String> = (0..120)
        .map(|i| {
            let z = i * 7 % 20;
            let zone = if i % 3 == 0 {
                format!("zone{z}")
            } else {
                format!("ZONE{z}")
            };
            let key = if i % 2 == 0 { "zone" } else { "facility_zone" };
            format!(r#"{{"sensor_id": "S{i}", "kind": "energy", "{key}": "{zone}", "kwh": {i}}}"#)
        })
        .chain(std::iter::once(
            r#"{"sensor_id": "D", "kind": "energy", "kwh": 1}"#.to_owned(),
        ))
        .collect();
    let payloads: Vec<&[u8]> = msgs.iter().map(|m| m.as_bytes()).collect();
    let b = decode(&payloads, None, NOW);
    assert!(b.errors.is_empty(), "{:?}", b.errors);
    for i in 0..120 {
        assert_eq!(b.zone(i), format!("ZONE{}", i * 7 % 20), "{i}");
    }
    assert_eq!(b.zone(120), DEFAULT_ZONE);
    let mut distinct: Vec<&str> = (0..b.len()).map(|i| b.zone(i)).collect();
    distinct.sort_unstable();
    distinct.dedup();
    assert_eq!(distinct.len(), 21);
    assert_eq!(b.interned().len(), 22); // the 21 zones and the default site
}

#[test]
fn gateway_sites_follow_their_topics() {
    let g = r#"[{"sensor_id": "a", "kind": "energy", "kwh": 1}, {"sensor_id": "b", "kind": "energy", "kwh": 2}]"#;
    let topics = [
        "infrawatch/p1/gateway/g/batch",
        "infrawatch/p2/gateway/g/batch",
        "infrawatch/p1/gateway/g/batch",
        "infrawatch/p2/water_flow/S1/telemetry",
    ];
    let payloads: [&[u8]; 4] = [g.as_bytes(), g.as_bytes(), g.as_bytes(), br#"{"flow": 1}"#];
    let b = decode(&payloads, Some(&topics), NOW);
    assert!(b.errors.is_empty(), "{:?}", b.errors);
    let sites: Vec<&str> = (0..b.len()).map(|i| b.site(i)).collect();
    assert_eq!(sites, ["p1", "p1", "p2", "p2", "p1", "p1", "p2"]);
}
