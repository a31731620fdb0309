//! Scoring micro-benchmark for `trees` (perf / callgrind target; not part of the test suite).
//!
//! `cargo run --release -p infrawatch-core --example trees_bench -- MODEL.iwt X.bin N_ROWS REPS [check.bin]`
//! scores the first `N_ROWS` rows of X (raw little-endian f64, row-major) `REPS` times and prints
//! the median thread CPU time per call; with `check.bin` it writes the outputs there the first time and
//! compares them bit for bit afterwards (a quick parity guard while optimising).

use infrawatch_core::trees::Ensemble;

mod common;
use common::cpu_now;

fn main() {
    let a: Vec<String> = std::env::args().collect();
    let e = Ensemble::from_bytes(&std::fs::read(&a[1]).expect("model")).expect("artifact");
    let raw = std::fs::read(&a[2]).expect("X");
    let n: usize = a[3].parse().expect("rows");
    let reps: usize = a[4].parse().expect("reps");
    let nf = e.n_features();
    let x: Vec<f64> = raw[..n * nf * 8]
        .chunks_exact(8)
        .map(|b| f64::from_le_bytes(b.try_into().unwrap_or_default()))
        .collect();
    let score = |x: &[f64]| -> Vec<f64> {
        if e.is_isolation() {
            e.score_samples(x, n).expect("score")
        } else {
            e.predict_proba(x, n).expect("score")
        }
    };
    let mut times = Vec::with_capacity(reps);
    let mut out = Vec::new();
    for _ in 0..reps {
        let t = cpu_now();
        out = score(&x);
        times.push(cpu_now() - t);
    }
    times.sort_by(f64::total_cmp);
    println!(
        "{} rows={n}: median {:.3} µs, min {:.3} µs",
        a[1],
        times[reps / 2] * 1e6,
        times[0] * 1e6
    );
    if let Some(p) = a.get(5) {
        let bytes: Vec<u8> = out.iter().flat_map(|v| v.to_le_bytes()).collect();
        match std::fs::read(p) {
            Ok(old) => assert!(old == bytes, "outputs differ from {p}"),
            Err(_) => std::fs::write(p, bytes).expect("write check"),
        }
    }
}
