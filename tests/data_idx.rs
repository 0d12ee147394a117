//! IDX reader/writer corruptions, the MNIST-format fixture, and CIFAR-10 / SVHN format round trips
//! on small made-up files. No network.
use std::io::Write;
use std::path::{Path, PathBuf};

use dpaudit::data::cifar::{encode_cifar10_batch, load_cifar10_dir, parse_cifar10_batch, CIFAR10_RECORD};
use dpaudit::data::idx::{encode_idx, gzip_bytes, read_idx, write_idx, IdxArray};
use dpaudit::data::svhn::{encode_svhn_mat, load_svhn_mat};
use dpaudit::data::{load_mnist_dir, sha256_file, write_mnist_dir, Dataset, ImageShape, Split};
use dpaudit::Error;

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/mnist-small");

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::File::create(&p).unwrap().write_all(bytes).unwrap();
    p
}

/// Reads `bytes` (raw and gzip-compressed) and returns the error text, checking it names the file.
fn idx_error(bytes: &[u8]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let mut msgs = Vec::new();
    for (name, content) in [("raw-idx", bytes.to_vec()), ("gz-idx.gz", gzip_bytes(bytes).unwrap())] {
        let p = write(dir.path(), name, &content);
        let err = read_idx(&p).expect_err("corrupt file must not parse");
        assert!(matches!(err, Error::Data { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(msg.contains(name), "error must name the file: {msg}");
        msgs.push(msg.split_once(": ").unwrap().1.to_string());
    }
    assert_eq!(msgs[0], msgs[1], "raw and gzip give the same diagnosis");
    msgs.pop().unwrap()
}

fn images(n: u32) -> Vec<u8> {
    let mut b = vec![0, 0, 8, 3];
    for d in [n, 2, 3] {
        b.extend_from_slice(&d.to_be_bytes());
    }
    b.extend((0..n * 6).map(|i| (i * 37 % 256) as u8));
    b
}

#[test]
fn round_trip_raw_and_gzip() {
    let dir = tempfile::tempdir().unwrap();
    let a = IdxArray::new(vec![4, 2, 3], (0..24).map(|i| i * 10).collect()).unwrap();
    for gzip in [false, true] {
        let p = dir.path().join(format!("a-{gzip}"));
        write_idx(&p, &a, gzip).unwrap();
        assert_eq!(read_idx(&p).unwrap(), a);
        let on_disk = std::fs::read(&p).unwrap();
        assert_eq!(on_disk, encode_idx(&a, gzip).unwrap());
        assert_eq!(on_disk[..2] == [0x1f, 0x8b], gzip);
    }
    assert_eq!(encode_idx(&a, false).unwrap(), images_like(&a));
}

fn images_like(a: &IdxArray) -> Vec<u8> {
    let mut b = vec![0, 0, 8, a.dims().len() as u8];
    for &d in a.dims() {
        b.extend_from_slice(&(d as u32).to_be_bytes());
    }
    b.extend_from_slice(a.data());
    b
}

#[test]
fn gzip_output_is_deterministic() {
    let a = IdxArray::new(vec![3], vec![1, 2, 3]).unwrap();
    assert_eq!(encode_idx(&a, true).unwrap(), encode_idx(&a, true).unwrap());
}

#[test]
fn empty_file() {
    assert!(idx_error(&[]).contains("empty file"));
}

#[test]
fn bad_magic() {
    let mut b = images(2);
    b[0] = 0x1f;
    b[1] = 0x00;
    let msg = idx_error(&b);
    assert!(msg.contains("not an IDX file"), "{msg}");
    let msg = idx_error(b"PK\x03\x04 this is a zip");
    assert!(msg.contains("not an IDX file"), "{msg}");
}

#[test]
fn wrong_element_type() {
    let mut b = images(2);
    b[2] = 0x0D;
    let msg = idx_error(&b);
    assert!(msg.contains("0x0d (f32) is not supported"), "{msg}");
}

#[test]
fn bad_dimension_count() {
    let mut b = images(2);
    b[3] = 0;
    assert!(idx_error(&b).contains("0 dimensions"));
    b[3] = 200;
    assert!(idx_error(&b).contains("200 dimensions"));
}

#[test]
fn truncated_header_and_data() {
    let b = images(10);
    assert!(idx_error(&b[..3]).contains("truncated IDX magic"));
    assert!(idx_error(&b[..9]).contains("truncated IDX header"));
    let msg = idx_error(&b[..b.len() - 1]);
    assert!(msg.contains("expected 60 element bytes after the header, found 59"), "{msg}");
    let msg = idx_error(&b[..16]);
    assert!(msg.contains("expected 60 element bytes after the header, found 0"), "{msg}");
}

#[test]
fn trailing_bytes() {
    let mut b = images(2);
    b.extend_from_slice(&[1, 2, 3]);
    let msg = idx_error(&b);
    assert!(msg.contains("3 trailing bytes"), "{msg}");
}

#[test]
fn huge_header_is_rejected_without_allocating() {
    // 0xffffffff^3 overflows 64 bits.
    let mut b = vec![0, 0, 8, 3];
    for _ in 0..3 {
        b.extend_from_slice(&u32::MAX.to_be_bytes());
    }
    b.extend_from_slice(&[0; 32]);
    let msg = idx_error(&b);
    assert!(msg.contains("overflow"), "{msg}");
    // 47,040,000 claimed, 1,000 present: fails as truncated, quickly.
    let mut b = vec![0, 0, 8, 3];
    for d in [60_000u32, 28, 28] {
        b.extend_from_slice(&d.to_be_bytes());
    }
    b.extend_from_slice(&[0; 1000]);
    let msg = idx_error(&b);
    assert!(msg.contains("expected 47040000 element bytes after the header, found 1000"), "{msg}");
}

#[test]
fn bad_gzip() {
    let dir = tempfile::tempdir().unwrap();
    let mut gz = gzip_bytes(&images(4)).unwrap();
    let truncated = write(dir.path(), "cut.gz", &gz[..gz.len() / 2]);
    let msg = read_idx(&truncated).unwrap_err().to_string();
    assert!(msg.contains("cut.gz") && msg.contains("gzip"), "{msg}");
    let mid = gz.len() / 2;
    gz[mid] ^= 0xff;
    gz[mid + 1] ^= 0xff;
    let corrupt = write(dir.path(), "flip.gz", &gz);
    let err = read_idx(&corrupt).unwrap_err();
    assert!(matches!(err, Error::Data { .. }), "{err:?}");
    let header_only = write(dir.path(), "hdr.gz", &[0x1f, 0x8b, 8, 0]);
    assert!(read_idx(&header_only).unwrap_err().to_string().contains("gzip"));
}

#[test]
fn missing_file_is_an_io_error() {
    let err = read_idx(Path::new("/nonexistent/x.idx")).unwrap_err();
    assert!(matches!(err, Error::Io { .. }));
    assert!(err.to_string().contains("/nonexistent/x.idx"));
}

#[test]
fn fixture_loads_with_known_content() {
    let train = load_mnist_dir(Path::new(FIXTURE), Split::Train, 10).unwrap();
    let test = load_mnist_dir(Path::new(FIXTURE), Split::Test, 10).unwrap();
    assert_eq!((train.len(), test.len()), (2000, 500));
    assert_eq!(train.shape(), ImageShape { channels: 1, height: 28, width: 28 });
    assert_eq!(train.pixels().len(), 2000 * 784);
    // Known values, computed independently with numpy from the fixture files.
    let sum = |d: &Dataset| d.pixels().iter().map(|&p| p as u64).sum::<u64>();
    assert_eq!(sum(&train), 52_050_445);
    assert_eq!(sum(&test), 12_054_721);
    assert_eq!(train.image(0).iter().map(|&p| p as u64).sum::<u64>(), 27_525);
    assert_eq!(&train.labels()[..10], &[5, 0, 4, 1, 9, 2, 1, 3, 1, 4]);
    assert_eq!(train.class_counts(), vec![191, 220, 198, 191, 214, 180, 200, 224, 172, 210]);
    assert_eq!(test.class_counts(), vec![42, 67, 55, 45, 55, 50, 43, 49, 40, 54]);
    assert!(train.labels().iter().all(|&l| l < 10));
    assert_eq!(train.source_files().len(), 2);
}

#[test]
fn fixture_matches_its_sha256sums() {
    let sums = std::fs::read_to_string(Path::new(FIXTURE).join("SHA256SUMS")).unwrap();
    assert_eq!(sums.lines().count(), 4);
    for line in sums.lines() {
        let (hash, name) = line.split_once("  ").unwrap();
        let a = read_idx(&Path::new(FIXTURE).join(format!("{name}.gz"))).unwrap();
        assert_eq!(dpaudit::data::sha256_hex(&a.to_bytes()), hash, "{name}");
    }
}

#[test]
fn mnist_dir_checks_counts_and_labels() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_idx(&d.join("train-images-idx3-ubyte"), &IdxArray::new(vec![3, 2, 2], vec![0; 12]).unwrap(), false).unwrap();
    write_idx(&d.join("train-labels-idx1-ubyte.gz"), &IdxArray::new(vec![2], vec![0, 1]).unwrap(), true).unwrap();
    let msg = load_mnist_dir(d, Split::Train, 10).unwrap_err().to_string();
    assert!(msg.contains("2 labels but") && msg.contains("3 images"), "{msg}");
    write_idx(&d.join("train-labels-idx1-ubyte.gz"), &IdxArray::new(vec![3], vec![0, 1, 10]).unwrap(), true).unwrap();
    let msg = load_mnist_dir(d, Split::Train, 10).unwrap_err().to_string();
    assert!(msg.contains("label 10 of example 2"), "{msg}");
    write_idx(&d.join("train-labels-idx1-ubyte.gz"), &IdxArray::new(vec![3], vec![0, 1, 9]).unwrap(), true).unwrap();
    let ok = load_mnist_dir(d, Split::Train, 10).unwrap();
    assert_eq!((ok.len(), ok.shape().height), (3, 2));
    let msg = load_mnist_dir(d, Split::Test, 10).unwrap_err().to_string();
    assert!(msg.contains("t10k-images-idx3-ubyte"), "{msg}");
}

#[test]
fn mnist_dir_write_then_load() {
    let src = load_mnist_dir(Path::new(FIXTURE), Split::Test, 10).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (img, lbl) = write_mnist_dir(dir.path(), Split::Test, &src).unwrap();
    let back = load_mnist_dir(dir.path(), Split::Test, 10).unwrap();
    assert_eq!(back.content_sha256(), src.content_sha256());
    assert_eq!(sha256_file(&img).unwrap().len(), 64);
    assert!(lbl.ends_with("t10k-labels-idx1-ubyte.gz"));
}

fn made_up_color(n: usize, seed: u8) -> Dataset {
    let shape = ImageShape { channels: 3, height: 32, width: 32 };
    let pixels = (0..n * 3072).map(|i| ((i * 31 + seed as usize * 7) % 256) as u8).collect();
    let labels = (0..n).map(|i| ((i + seed as usize) % 10) as u8).collect();
    Dataset::new(format!("made-up-{seed}"), shape, 10, pixels, labels).unwrap()
}

#[test]
fn cifar10_round_trip_from_made_up_batches() {
    let dir = tempfile::tempdir().unwrap();
    let parts: Vec<Dataset> = (0..5).map(|k| made_up_color(k + 1, k as u8)).collect();
    for (k, part) in parts.iter().enumerate() {
        write(dir.path(), &format!("data_batch_{}.bin", k + 1), &encode_cifar10_batch(part).unwrap());
    }
    let test = made_up_color(4, 9);
    write(dir.path(), "test_batch.bin", &encode_cifar10_batch(&test).unwrap());
    let train = load_cifar10_dir(dir.path(), Split::Train).unwrap();
    assert_eq!(train.len(), 15);
    let expected: Vec<u8> = parts.iter().flat_map(|p| p.pixels().to_vec()).collect();
    assert_eq!(train.pixels(), &expected[..]);
    let loaded_test = load_cifar10_dir(dir.path(), Split::Test).unwrap();
    assert_eq!((loaded_test.pixels(), loaded_test.labels()), (test.pixels(), test.labels()));
    // Record layout: label byte, then red plane of the first image.
    let raw = std::fs::read(dir.path().join("test_batch.bin")).unwrap();
    assert_eq!(raw[0], test.label(0));
    assert_eq!(&raw[1..1025], &test.image(0)[..1024]);
}

#[test]
fn cifar10_corruptions() {
    let p = Path::new("batch.bin");
    let (mut px, mut lb) = (Vec::new(), Vec::new());
    let msg = parse_cifar10_batch(&[0; CIFAR10_RECORD + 5], p, &mut px, &mut lb).unwrap_err().to_string();
    assert!(msg.contains("1 complete records and 5 bytes left over"), "{msg}");
    let mut rec = vec![0u8; CIFAR10_RECORD];
    rec[0] = 10;
    let msg = parse_cifar10_batch(&rec, p, &mut px, &mut lb).unwrap_err().to_string();
    assert!(msg.contains("label 10"), "{msg}");
    assert!(parse_cifar10_batch(&[], p, &mut px, &mut lb).is_err());
    let dir = tempfile::tempdir().unwrap();
    let msg = load_cifar10_dir(dir.path(), Split::Test).unwrap_err().to_string();
    assert!(msg.contains("test_batch.bin is missing"), "{msg}");
}

#[test]
fn svhn_mat_round_trip_plain_and_compressed() {
    let d = made_up_color(7, 3);
    let dir = tempfile::tempdir().unwrap();
    for compress in [false, true] {
        let p = write(dir.path(), &format!("train_32x32-{compress}.mat"), &encode_svhn_mat(&d, compress).unwrap());
        let back = load_svhn_mat(&p).unwrap();
        assert_eq!(back.pixels(), d.pixels());
        assert_eq!(back.labels(), d.labels());
    }
}

#[test]
fn svhn_mat_corruptions() {
    let d = made_up_color(2, 1);
    let dir = tempfile::tempdir().unwrap();
    let good = encode_svhn_mat(&d, false).unwrap();
    for (name, bytes, needle) in [
        ("empty.mat", vec![], "empty file"),
        ("short.mat", good[..100].to_vec(), "128 bytes"),
        ("cut.mat", good[..good.len() - 40].to_vec(), "truncated"),
        ("hdf5.mat", b"MATLAB 7.3 MAT-file".iter().copied().chain(std::iter::repeat_n(0, 200)).collect(), "v7.3"),
    ] {
        let p = write(dir.path(), name, &bytes);
        let msg = load_svhn_mat(&p).unwrap_err().to_string();
        assert!(msg.contains(name) && msg.contains(needle), "{name}: {msg}");
    }
}

/// Files written by scipy.io.savemat (scripts/make_svhn_fixture.py), an independent MAT v5 writer.
#[test]
fn svhn_reads_scipy_written_files() {
    for name in ["tiny_32x32.mat", "tiny_plain_32x32.mat"] {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/svhn-tiny").join(name);
        let d = load_svhn_mat(&p).unwrap();
        assert_eq!(d.len(), 5);
        assert_eq!(d.labels(), &[0, 1, 2, 9, 0]);
        for k in 0..5 {
            for ch in 0..3 {
                for r in 0..32 {
                    for c in 0..32 {
                        let want = ((r + 2 * c + 5 * ch + 11 * k) % 256) as u8;
                        assert_eq!(d.image(k)[1024 * ch + 32 * r + c], want, "{name} k={k} ch={ch} r={r} c={c}");
                    }
                }
            }
        }
    }
}

#[test]
fn a_single_idx_file_is_checked_as_a_folder_checks_it() {
    use dpaudit::data::{check_mnist_file, write_idx, IdxArray, MnistFile};
    let tmp = tempfile::tempdir().unwrap();
    let file = |name: &str, dims: Vec<usize>, data: Vec<u8>| {
        let p = tmp.path().join(name);
        write_idx(&p, &IdxArray::new(dims, data).unwrap(), false).unwrap();
        p
    };
    let ok = file("labels", vec![4], vec![0, 9, 9, 3]);
    match check_mnist_file(&ok, 10).unwrap() {
        MnistFile::Labels { examples, class_counts } => {
            assert_eq!(examples, 4);
            assert_eq!((class_counts[9], class_counts[3], class_counts[1]), (2, 1, 0));
        }
        other => panic!("{other:?}"),
    }
    let e = check_mnist_file(&file("bad-labels", vec![3], vec![0, 12, 1]), 10).unwrap_err().to_string();
    assert!(e.contains("label 12 of example 1 is not below 10 classes") && e.contains("bad-labels"), "{e}");
    let e = check_mnist_file(&file("zero", vec![2, 0, 28], vec![]), 10).unwrap_err().to_string();
    assert!(e.contains("none may be zero"), "{e}");
    let e = check_mnist_file(&file("no-labels", vec![0], vec![]), 10).unwrap_err().to_string();
    assert!(e.contains("no labels"), "{e}");
    let e = check_mnist_file(&file("4d", vec![1, 1, 1, 1], vec![0]), 10).unwrap_err().to_string();
    assert!(e.contains("expected images (n, rows, cols) or labels (n)"), "{e}");
    assert_eq!(
        check_mnist_file(&file("images", vec![2, 2, 3], vec![0; 12]), 10).unwrap(),
        MnistFile::Images { dims: [2, 2, 3] }
    );
}
