//! Fuzzing the parsers that take outside input (IDX, gzip, CIFAR-10 batches, pickles, SVHN .mat,
//! certificate JSON, audit TOML, the ledger) with proptest: arbitrary bytes, and mutations
//! (flips, truncations, insertions, splices) of the valid seeds in `fixtures/fuzz/` and the
//! fixtures. Every input must give `Ok` or a clear error; a panic fails the test.
//!
//! Cases per target: `FUZZ_CASES` (default 200, what `cargo test` runs). Longer runs:
//! `FUZZ_CASES=20000 cargo test --release --test fuzz_parsers`. proptest records any failing
//! input in `proptest-regressions/fuzz_parsers.txt`, which is committed.
use dpaudit::accounting::ledger::Ledger;
use dpaudit::audit::spec::AuditSpec;
use dpaudit::data::cifar::parse_cifar10_batch;
use dpaudit::data::idx::{parse_idx, read_idx};
use proptest::prelude::*;
use std::path::Path;

fn cases() -> u32 {
    std::env::var("FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(200)
}

fn seed(name: &str) -> Vec<u8> {
    std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join(name)).unwrap_or_else(|e| panic!("seed {name}: {e}"))
}

#[derive(Debug, Clone)]
enum Mutation {
    Flip(usize, u8),
    Truncate(usize),
    Insert(usize, Vec<u8>),
    Overwrite(usize, Vec<u8>),
}

fn mutations() -> impl Strategy<Value = Vec<Mutation>> {
    proptest::collection::vec(
        prop_oneof![
            (any::<usize>(), 1u8..=255).prop_map(|(i, b)| Mutation::Flip(i, b)),
            any::<usize>().prop_map(Mutation::Truncate),
            (any::<usize>(), proptest::collection::vec(any::<u8>(), 1..16)).prop_map(|(i, v)| Mutation::Insert(i, v)),
            // Large values in length fields: 0xff runs.
            (any::<usize>(), proptest::collection::vec(Just(0xffu8), 1..8))
                .prop_map(|(i, v)| Mutation::Overwrite(i, v)),
        ],
        1..4,
    )
}

fn mutate(mut bytes: Vec<u8>, ms: &[Mutation]) -> Vec<u8> {
    for m in ms {
        let n = bytes.len().max(1);
        match m {
            Mutation::Flip(i, b) => {
                if !bytes.is_empty() {
                    bytes[i % n] ^= b;
                }
            }
            Mutation::Truncate(i) => bytes.truncate(i % n),
            Mutation::Insert(i, v) => {
                let at = i % (bytes.len() + 1);
                bytes.splice(at..at, v.iter().copied());
            }
            Mutation::Overwrite(i, v) => {
                for (k, b) in v.iter().enumerate() {
                    if let Some(x) = bytes.get_mut((i % n) + k) {
                        *x = *b;
                    }
                }
            }
        }
    }
    bytes
}

fn with_file<T>(bytes: &[u8], name: &str, f: impl FnOnce(&Path) -> T) -> T {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join(name);
    std::fs::write(&p, bytes).unwrap();
    f(&p)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), failure_persistence: Some(Box::new(proptest::test_runner::FileFailurePersistence::WithSource("regressions"))), ..ProptestConfig::default() })]

    #[test]
    fn idx_never_panics(ms in mutations(), raw in proptest::collection::vec(any::<u8>(), 0..64), gz in any::<bool>()) {
        let _ = parse_idx(&raw, Path::new("arbitrary.idx"));
        let base = if gz { seed("fixtures/fuzz/seed.idx.gz") } else { seed("fixtures/fuzz/seed.idx") };
        let bytes = mutate(base, &ms);
        // Through the file reader, which also handles gzip (and gzip bombs: sizes are checked).
        if let Err(e) = with_file(&bytes, "m.idx.gz", read_idx) {
            prop_assert!(e.to_string().contains("m.idx.gz"), "the error must name the file: {e}");
        }
    }

    #[test]
    fn mnist_fixture_files_mutated_never_panic(ms in mutations()) {
        let bytes = mutate(seed("fixtures/mnist-small/t10k-labels-idx1-ubyte.gz"), &ms);
        let _ = with_file(&bytes, "labels.gz", read_idx);
    }

    #[test]
    fn cifar_batches_never_panic(ms in mutations(), raw in proptest::collection::vec(any::<u8>(), 0..8000)) {
        let (mut px, mut lb) = (Vec::new(), Vec::new());
        let _ = parse_cifar10_batch(&raw, Path::new("raw.bin"), &mut px, &mut lb);
        let (mut px, mut lb) = (Vec::new(), Vec::new());
        let r = parse_cifar10_batch(&mutate(seed("fixtures/fuzz/seed.cifar.bin"), &ms), Path::new("m.bin"), &mut px, &mut lb);
        if r.is_ok() {
            prop_assert_eq!(px.len(), lb.len() * 3072);
        }
    }

    #[test]
    fn pickles_never_panic(ms in mutations(), raw in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = dpaudit::data::pickle::load_pickle(&raw[..], Path::new("raw.pkl"));
        // A real pickle: the SVHN fixture is a .mat; build a small pickle by hand (protocol 2:
        // PROTO 2, EMPTY_LIST, BININT1 5, APPEND, STOP).
        let base = vec![0x80, 2, b']', b'K', 5, b'a', b'.'];
        let _ = dpaudit::data::pickle::load_pickle(&mutate(base, &ms)[..], Path::new("m.pkl"));
    }

    #[test]
    fn svhn_mat_files_never_panic(ms in mutations(), plain in any::<bool>()) {
        let name = if plain { "fixtures/svhn-tiny/tiny_plain_32x32.mat" } else { "fixtures/svhn-tiny/tiny_32x32.mat" };
        let bytes = mutate(seed(name), &ms);
        let _ = with_file(&bytes, "m.mat", dpaudit::data::svhn::load_svhn_mat);
    }

    #[test]
    fn ledgers_never_panic_and_never_accept_out_of_sequence_steps(ms in mutations()) {
        let bytes = mutate(seed("fixtures/fuzz/seed.ledger.jsonl"), &ms);
        let r = with_file(&bytes, "ledger.jsonl", |p| Ledger::open(p).map(|l| l.entries().to_vec()));
        if let Ok(entries) = r {
            for (i, e) in entries.iter().enumerate() {
                prop_assert_eq!(e.step, i as u64 + 1);
            }
        }
    }

    #[test]
    fn audit_specs_never_panic(ms in mutations(), raw in "\\PC{0,200}") {
        let _ = AuditSpec::from_toml(&raw, Path::new("raw.toml"));
        let bytes = mutate(seed("audits/dirac-eps2.toml"), &ms);
        if let Ok(text) = String::from_utf8(bytes) {
            let _ = AuditSpec::from_toml(&text, Path::new("m.toml"));
        }
    }
}

/// Certificates: arbitrary mutations of a real signed certificate never panic the verifier and
/// never verify (except a mutation that leaves the bytes unchanged, or only reorders/re-spaces
/// the JSON: canonical form makes those still valid).
#[test]
fn mutated_certificates_never_panic_the_verifier() {
    let dir = tempfile::tempdir().unwrap();
    let bin = env!("CARGO_BIN_EXE_dpaudit");
    let p = |n: &str| dir.path().join(n);
    let ok = |args: &[&std::ffi::OsStr]| {
        assert!(std::process::Command::new(bin).args(args).output().unwrap().status.success())
    };
    ok(&[
        "train".as_ref(),
        "--dataset".as_ref(),
        "fixture".as_ref(),
        "--model".as_ref(),
        "logreg".as_ref(),
        "--noise-multiplier".as_ref(),
        "2".as_ref(),
        "--epochs".as_ref(),
        "0.2".as_ref(),
        "--lot-size".as_ref(),
        "200".as_ref(),
        "--out".as_ref(),
        p("run").as_os_str(),
    ]);
    ok(&["keygen".as_ref(), "--out".as_ref(), p("keys").as_os_str()]);
    ok(&[
        "cert".as_ref(),
        "sign".as_ref(),
        "--run".as_ref(),
        p("run").as_os_str(),
        "--key".as_ref(),
        p("keys/dpaudit-cert.key").as_os_str(),
        "--out".as_ref(),
        p("cert.json").as_os_str(),
    ]);
    let cert = std::fs::read(p("cert.json")).unwrap();
    let pubkey = p("keys/dpaudit-cert.pub");
    let mut runner =
        proptest::test_runner::TestRunner::new(ProptestConfig { cases: cases(), ..ProptestConfig::default() });
    runner
        .run(&mutations(), |ms| {
            let bytes = mutate(cert.clone(), &ms);
            let path = p("m.json");
            std::fs::write(&path, &bytes).unwrap();
            let r = dpaudit::cert::verify::verify(&path, &pubkey, None, false);
            if r.is_ok() {
                // Only semantically identical JSON may verify.
                let a: serde_json::Value = serde_json::from_slice(&cert).unwrap();
                let b: serde_json::Value =
                    serde_json::from_slice(&bytes).map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert_eq!(a, b);
            }
            Ok(())
        })
        .unwrap();
}
