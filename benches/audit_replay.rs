//! Replay throughput: one audit replay (train on D or D', score) of audits/dirac-eps2.toml
//! (logreg, 500 fixture examples, q = 1, 10 steps), on one libtorch thread as the engine runs it.
//! The engine runs one such worker per core; `benches/audit_throughput.sh` measures the whole
//! engine (5,000 + 5,000 replays, the 15-minute target).
use criterion::{criterion_group, criterion_main, Criterion};
use dpaudit::audit::engine;
use dpaudit::audit::replay::{Side, Worker};
use dpaudit::audit::spec::AuditSpec;
use std::path::Path;

fn replay(c: &mut Criterion) {
    tch::set_num_threads(1);
    let spec = AuditSpec::load(Path::new("audits/dirac-eps2.toml")).expect("spec");
    let ctx = engine::prepare(&spec).expect("fixture data");
    let worker = Worker::new(&ctx).expect("worker");
    let mut i = 0u64;
    c.bench_function("audit_replay/dirac-eps2 (logreg, 500 examples, 10 steps)", |b| {
        b.iter(|| {
            i += 1;
            let side = if i.is_multiple_of(2) { Side::With } else { Side::Without };
            worker.run(side, i).expect("replay")
        })
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30);
    targets = replay
}
criterion_main!(benches);
