//! The pipeline benchmark's workload in plain Rust (perf / callgrind target; not a test).
//!
//! Dump the workload first (`examples/pipeline_workload.py DIR`), then
//! `cargo run --profile profiling -p infrawatch-core --example pipeline_bench -- DIR [REPS [DUMP]]`:
//! it folds the first two batches (warm windows) and then processes each later batch in
//! `measured`, printing the thread CPU time per batch (with DUMP, writing the measured batches'
//! line protocol and alerts there, to compare outputs across changes). Under callgrind, count only the measured
//! batches: `valgrind --tool=callgrind --collect-atstart=no --toggle-collect='*measured*' …`.

use std::sync::Arc;

use infrawatch_core::pipeline::{Models, Pipeline, PipelineConfig, ProcessOutput, WaterFlowModels};
use infrawatch_core::risk::WaterFlowPersistence;
use infrawatch_core::trees::Ensemble;

mod common;
use common::cpu_now;

type Batch = (Vec<Vec<u8>>, Vec<String>);

fn read_batches(data: &[u8]) -> Vec<Batch> {
    let mut pos = 0;
    let u32_at = |pos: &mut usize| {
        let v = u32::from_le_bytes(data[*pos..*pos + 4].try_into().expect("4 bytes"));
        *pos += 4;
        v as usize
    };
    let mut out = Vec::new();
    while pos < data.len() {
        let n = u32_at(&mut pos);
        let (mut payloads, mut topics) = (Vec::with_capacity(n), Vec::with_capacity(n));
        for _ in 0..n {
            let l = u32_at(&mut pos);
            payloads.push(data[pos..pos + l].to_vec());
            pos += l;
            let l = u32_at(&mut pos);
            topics.push(String::from_utf8(data[pos..pos + l].to_vec()).expect("utf-8 topic"));
            pos += l;
        }
        out.push((payloads, topics));
    }
    out
}

fn run(pipe: &mut Pipeline, b: &Batch, received_ns: i64) -> ProcessOutput {
    let payloads: Vec<&[u8]> = b.0.iter().map(Vec::as_slice).collect();
    let topics: Vec<&str> = b.1.iter().map(String::as_str).collect();
    pipe.process(&payloads, Some(&topics), received_ns, None)
        .expect("process")
}

#[inline(never)]
fn measured(pipe: &mut Pipeline, b: &Batch, received_ns: i64) -> ProcessOutput {
    run(pipe, b, received_ns)
}

fn main() {
    let a: Vec<String> = std::env::args().collect();
    let dir = std::path::Path::new(&a[1]);
    let reps: usize = a.get(2).map_or(1, |r| r.parse().expect("reps"));
    // optional: write the measured batches' line protocol and alerts there (output comparisons)
    let mut dump = a
        .get(3)
        .map(|p| std::fs::File::create(p).expect("dump file"));
    let load = |name: &str| {
        let bytes = std::fs::read(dir.join(name)).expect("model file");
        Arc::new(Ensemble::from_bytes(&bytes).expect("artifact"))
    };
    let models = Models {
        water_flow: Some(WaterFlowModels {
            version: "bench".into(),
            leak: load("leak.iwm"),
            burst: load("burst.iwm"),
            persistence: WaterFlowPersistence::default(),
        }),
        ..Models::default()
    };
    let batches = read_batches(&std::fs::read(dir.join("batches.bin")).expect("batches.bin"));
    let received_ns = 1_767_225_600_000_000_000 + 86_400_000_000_000;
    for _ in 0..reps {
        let mut pipe = Pipeline::new(&models, PipelineConfig::default()).expect("pipeline");
        for b in &batches[..2] {
            run(&mut pipe, b, received_ns);
        }
        for (k, b) in batches[2..].iter().enumerate() {
            let t = cpu_now();
            let out = measured(&mut pipe, b, received_ns);
            let dt = cpu_now() - t;
            if let Some(f) = dump.as_mut() {
                use std::io::Write as _;
                f.write_all(&out.line_protocol).expect("dump");
                for al in &out.alerts {
                    writeln!(f, "{al:?}").expect("dump");
                }
            }
            let high = out.risk.iter().filter(|&&r| r >= 2).count();
            println!(
                "batch {k}: {:.2} ms, {} readings ({high} HIGH+), {} alerts, {} bytes",
                dt * 1e3,
                out.count,
                out.alerts.len(),
                out.line_protocol.len()
            );
        }
    }
}
