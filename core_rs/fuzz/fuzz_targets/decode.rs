//! Fuzz target `decode`: arbitrary bytes through `infrawatch_core::decode::decode`.
//!
//! Input layout: byte 0 picks the topics (0: none, 1: a telemetry topic, 2: a gateway topic,
//! 3: the text up to the first newline, lossy UTF-8); the rest is split on 0x1E into up to 8
//! payloads. Besides "never panics", it checks the batch invariants Python relies on: every
//! input index is accounted for, columns are as long as the batch, sources are in range, reason
//! codes are the documented ones, decoding the payloads together equals decoding each alone
//! (the decoder's per-call caches change nothing), and `decode_into` on a reused batch gives the
//! same result.
#![no_main]

use infrawatch_core::batch::ReadingBatch;
use infrawatch_core::decode::{decode, decode_into, REASON_CODES};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let (topic, body): (String, &[u8]) = match mode & 3 {
        0 => (String::new(), rest),
        1 => ("infrawatch/p/water_flow/S001/telemetry".into(), rest),
        2 => ("infrawatch/p/gateway/g1/batch".into(), rest),
        _ => match rest.iter().position(|&b| b == b'\n') {
            Some(i) => (String::from_utf8_lossy(&rest[..i]).into_owned(), &rest[i + 1..]),
            None => (String::new(), rest),
        },
    };
    let payloads: Vec<&[u8]> = body.split(|&b| b == 0x1e).take(8).collect();
    let topics: Vec<&str> = vec![topic.as_str(); payloads.len()];
    let topics = (mode & 3 != 0).then_some(topics.as_slice());

    let batch = decode(&payloads, topics, 1_769_337_000_000_000_000);
    let n = batch.len();
    assert_eq!(batch.timestamp_ns.len(), n);
    assert_eq!(batch.source.len(), n);
    let mut seen = vec![false; payloads.len()];
    for (i, &s) in batch.source.iter().enumerate() {
        let s = usize::try_from(s).expect("source is non-negative");
        assert!(s < payloads.len());
        seen[s] = true;
        assert!(!batch.sensor_id(i).is_empty());
        assert!(batch.timestamp_ns[i] >= 0);
    }
    for e in &batch.errors {
        assert!(e.index < payloads.len());
        assert!(REASON_CODES.contains(&e.reason), "{}", e.reason);
        seen[e.index] = true;
    }
    assert!(seen.iter().all(|&s| s), "an input index is unaccounted for");
    for (name, column) in batch.fields() {
        assert_eq!(column.len(), n, "{name}");
        assert!(column.iter().all(|v| !v.is_infinite()));
    }

    // The decoder remembers keys, zones and dates across the messages of a call: decoding the
    // messages together must give what decoding each alone gives.
    let mut alone_rows = Vec::new();
    let mut alone_errors = Vec::new();
    for (i, p) in payloads.iter().enumerate() {
        let t = topics.map(|t| &t[i..=i]);
        let b = decode(&[p], t, 1_769_337_000_000_000_000);
        alone_rows.extend(rows(&b));
        alone_errors.extend(b.errors.iter().map(|e| (i, e.reason, e.message.clone())));
    }
    assert_eq!(rows(&batch), alone_rows);
    let together: Vec<_> = batch.errors.iter().map(|e| (e.index, e.reason, e.message.clone())).collect();
    assert_eq!(together, alone_errors);

    // Reusing a batch (the pipeline does) must not leak state from the previous call.
    let mut reused = ReadingBatch::default();
    decode_into(&mut reused, &[b"{\"sensor_id\":\"x\",\"kind\":\"energy\",\"q\":1}"], None, 0);
    decode_into(&mut reused, &payloads, topics, 1_769_337_000_000_000_000);
    assert_eq!(reused.len(), n);
    assert_eq!(reused.timestamp_ns, batch.timestamp_ns);
    assert_eq!(reused.source, batch.source);
    assert_eq!(reused.errors.len(), batch.errors.len());
    let a: Vec<_> = batch.fields().map(|(k, v)| (k.to_owned(), v.to_vec())).collect();
    let b: Vec<_> = reused.fields().map(|(k, v)| (k.to_owned(), v.to_vec())).collect();
    assert_eq!(a.len(), b.len());
    for ((ka, va), (kb, vb)) in a.iter().zip(&b) {
        assert_eq!(ka, kb);
        assert!(va.iter().zip(vb).all(|(x, y)| x.to_bits() == y.to_bits()));
    }
});

/// Each reading as plain values (its fields with a value, sorted by name, as bits).
fn rows(b: &ReadingBatch) -> Vec<(String, String, String, String, i64, Vec<(String, u64)>)> {
    let cols: Vec<(&str, &[f64])> = b.fields().collect();
    (0..b.len())
        .map(|i| {
            // By name: the column order depends on the other readings of the batch.
            let mut fields: Vec<(String, u64)> = cols
                .iter()
                .filter(|(_, c)| !c[i].is_nan())
                .map(|(n, c)| ((*n).to_owned(), c[i].to_bits()))
                .collect();
            fields.sort();
            (
                b.sensor_id(i).to_owned(),
                b.kind(i).as_str().to_owned(),
                b.site(i).to_owned(),
                b.zone(i).to_owned(),
                b.timestamp_ns[i],
                fields,
            )
        })
        .collect()
}
