//! Decoding micro-benchmark (perf / callgrind target; not part of the test suite).
//!
//! `cargo run --release -p infrawatch-core --example decode_bench -- PAYLOADS.jsonl [TOPICS.txt] REPS`
//! decodes the payloads (one per line) `REPS` times and prints the median thread CPU time per
//! call, plus a checksum of the batch so that two builds can be compared for identical output.

use infrawatch_core::batch::ReadingBatch;
use infrawatch_core::decode::decode;

mod common;
use common::cpu_now;

/// Not inlined, so that callgrind can count the instructions of decoding alone
/// (`--toggle-collect=decode_bench::run`).
#[inline(never)]
fn run(payloads: &[&[u8]], topics: Option<&[&str]>) -> ReadingBatch {
    decode(payloads, topics, 0)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let data = std::fs::read(&args[1]).expect("payload file");
    let payloads: Vec<&[u8]> = data.split(|&b| b == b'\n').collect();
    let (topics_text, reps) = if args.len() > 3 {
        (
            Some(std::fs::read_to_string(&args[2]).expect("topics file")),
            &args[3],
        )
    } else {
        (None, &args[2])
    };
    let topics: Option<Vec<&str>> = topics_text.as_deref().map(|t| t.lines().collect());
    let reps: usize = reps.parse().expect("REPS");
    let mut times = Vec::with_capacity(reps);
    let mut check = 0u64;
    for _ in 0..reps {
        let t0 = cpu_now();
        let b = run(&payloads, topics.as_deref());
        times.push(cpu_now() - t0);
        check = b.len() as u64 ^ (b.errors.len() as u64) << 32;
        for (name, col) in b.fields() {
            for v in col {
                check = check.rotate_left(5) ^ v.to_bits() ^ name.len() as u64;
            }
        }
        for i in 0..b.len() {
            check = check.rotate_left(7) ^ b.timestamp_ns[i] as u64 ^ b.sensor_id(i).len() as u64;
            check ^= (b.site(i).len() + b.zone(i).len()) as u64;
        }
    }
    times.sort_by(f64::total_cmp);
    println!(
        "{} payloads: median {:.1} us/call  (check {check:016x})",
        payloads.len(),
        times[times.len() / 2] * 1e6
    );
}
