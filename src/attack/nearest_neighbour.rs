//! Nearest-neighbour analyses of released synthetic images against the generator's training set
//! (`train`) and records it never saw from the same distribution (`holdout`).
//!
//! Two kinds of output, kept apart:
//!
//! - **Distances (a heuristic).** Distance to closest record (DCR) from each synthetic image to
//!   the training set and to the holdout set, the share of synthetic images closer to a training
//!   record than to any holdout record (1/2 on average when the generator learned the
//!   distribution rather than the records, with equal-size exchangeable sets; tested by
//!   re-splitting the pooled records at random, which accounts for many synthetic images sharing
//!   one nearest record), exact copies of training images, and the
//!   nearest-neighbour distance ratio (NNDR: nearest over second-nearest training record; near 0
//!   means the synthetic image sits on one training record). These flag blatant copying; they
//!   are **not a privacy guarantee**: a large DCR does not mean the release is private, and DP
//!   makes no statement about DCR (`proofs/attack/nearest_neighbour.md`).
//! - **A membership attack (evidence).** GAN-Leaks' full black-box attack (Chen et al. 2020,
//!   "GAN-Leaks: A Taxonomy of Membership Inference Attacks against Generative Models"): a
//!   candidate's score is minus its distance to the nearest synthetic image; training records
//!   are the members, holdout records the non-members; AUC and TPR at low FPR as for any
//!   membership attack. For a DP generator, TPR <= e^epsilon FPR + delta.
//!
//! Distances are Euclidean on pixels scaled to [0, 1], computed in f64.
use crate::attack::metrics::{attack_metrics, thin_roc, AttackMetrics};
use crate::data::idx::read_idx;
use crate::error::{Error, Result};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use tch::{Kind, Tensor};

/// Queries per distance block (memory: block x reference-set x 8 bytes).
const BLOCK: i64 = 256;
/// The significance level of the one-sided permutation test on the share closer to train.
pub const CLOSER_TO_TRAIN_ALPHA: f64 = 1e-3;
/// Random re-splits of the pooled train and holdout records in that test (its smallest p-value is
/// 1 / (PERMUTATIONS + 1) = 1e-4, below [`CLOSER_TO_TRAIN_ALPHA`]).
pub const PERMUTATIONS: usize = 9_999;
/// Seed of the re-splits: the report of a given release is reproducible.
const PERMUTATION_SEED: u64 = 0x6e6e_7065_726d;
/// NNDR below this counts as "sits on one training record".
pub const NNDR_LOW: f64 = 0.5;

/// Images read from an MNIST-format folder (labels are not needed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageSet {
    /// The file read.
    pub path: PathBuf,
    /// Number of images.
    pub len: usize,
    /// Pixels per image.
    pub pixels: usize,
    /// `len * pixels` bytes.
    pub data: Vec<u8>,
}

impl ImageSet {
    /// Image `i`'s bytes.
    pub fn image(&self, i: usize) -> &[u8] {
        &self.data[i * self.pixels..(i + 1) * self.pixels]
    }

    /// The first `n` images (all if fewer).
    pub fn truncate(mut self, n: usize) -> Self {
        if n < self.len {
            self.len = n;
            self.data.truncate(n * self.pixels);
        }
        self
    }

    /// Images from bytes (`data.len()` must be `len * pixels`).
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] when the sizes disagree.
    pub fn from_bytes(path: impl Into<PathBuf>, pixels: usize, data: Vec<u8>) -> Result<Self> {
        if pixels == 0 || !data.len().is_multiple_of(pixels) {
            return Err(Error::invalid(
                "image bytes",
                data.len(),
                format!("must be a whole number of {pixels}-pixel images"),
            ));
        }
        Ok(ImageSet { path: path.into(), len: data.len() / pixels, pixels, data })
    }
}

fn find_images(dir: &Path, prefix: &str) -> Option<PathBuf> {
    [format!("{prefix}-images-idx3-ubyte.gz"), format!("{prefix}-images-idx3-ubyte")]
        .into_iter()
        .map(|f| dir.join(f))
        .find(|p| p.is_file())
}

/// Reads the images of an MNIST-format folder: `train-images-idx3-ubyte[.gz]`, or
/// `t10k-images-idx3-ubyte[.gz]` when there is no training file or `prefer_test` is set.
///
/// # Errors
/// [`Error::Data`] for a missing folder or file, an IDX file that is not `n x rows x cols`, or
/// no images.
pub fn load_images(dir: &Path, prefer_test: bool) -> Result<ImageSet> {
    if !dir.is_dir() {
        return Err(Error::data(dir, "is not a folder (expected an MNIST-format folder of IDX files)"));
    }
    let order = if prefer_test { ["t10k", "train"] } else { ["train", "t10k"] };
    let path = order.iter().find_map(|p| find_images(dir, p)).ok_or_else(|| {
        Error::data(dir, "holds neither train-images-idx3-ubyte[.gz] nor t10k-images-idx3-ubyte[.gz]")
    })?;
    let (dims, data) = read_idx(&path)?.into_parts();
    if dims.len() != 3 || dims[1] == 0 || dims[2] == 0 {
        return Err(Error::data(&path, format!("expected images of shape (n, rows, cols), found {dims:?}")));
    }
    if dims[0] == 0 {
        return Err(Error::data(&path, "holds no images"));
    }
    Ok(ImageSet { path, len: dims[0], pixels: dims[1] * dims[2], data })
}

fn to_tensor(s: &ImageSet) -> Result<Tensor> {
    Ok(Tensor::f_from_slice(&s.data)?
        .f_view([s.len as i64, s.pixels as i64])?
        .f_to_kind(Kind::Double)?
        .f_div_scalar(255.0)?)
}

/// The distances from each query row to its nearest and second-nearest reference row (the
/// second is `f64::INFINITY` with a single reference), and the nearest row's index.
fn nearest_two(queries: &Tensor, refs: &Tensor) -> Result<Vec<(f64, f64, usize)>> {
    let _g = tch::no_grad_guard();
    let q = queries.size()[0];
    let r = refs.size()[0];
    let rn = refs.f_square()?.f_sum_dim_intlist(&[1i64][..], false, Kind::Double)?;
    let k = r.min(2);
    let mut out = Vec::with_capacity(q as usize);
    let mut start = 0;
    while start < q {
        let len = BLOCK.min(q - start);
        let x = queries.f_narrow(0, start, len)?;
        let xn = x.f_square()?.f_sum_dim_intlist(&[1i64][..], true, Kind::Double)?;
        // |x - y|^2 = |x|^2 + |y|^2 - 2 x.y, clamped at 0 against rounding.
        let d2 = xn
            .f_add(&rn.f_unsqueeze(0)?)?
            .f_sub(&x.f_matmul(&refs.f_transpose(0, 1)?)?.f_mul_scalar(2.0)?)?
            .f_clamp_min(0.0)?;
        let (vals, idx) = d2.f_topk(k, 1, false, true)?;
        let vals = Vec::<f64>::try_from(vals.f_sqrt()?.f_contiguous()?.f_view(-1)?)?;
        let idx = Vec::<i64>::try_from(idx.f_contiguous()?.f_view(-1)?)?;
        for (row, i) in vals.chunks(k as usize).zip(idx.chunks(k as usize)) {
            out.push((row[0], row.get(1).copied().unwrap_or(f64::INFINITY), i[0] as usize));
        }
        start += len;
    }
    Ok(out)
}

/// Summary statistics of a set of distances.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct DistanceSummary {
    /// Smallest.
    pub min: f64,
    /// 5th percentile (nearest rank).
    pub p5: f64,
    /// Median (nearest rank).
    pub median: f64,
    /// Mean.
    pub mean: f64,
}

fn summary(xs: &[f64]) -> DistanceSummary {
    let mut v: Vec<f64> = xs.to_vec();
    v.sort_by(f64::total_cmp);
    let at = |p: f64| v[((p * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1];
    DistanceSummary { min: v[0], p5: at(0.05), median: at(0.5), mean: v.iter().sum::<f64>() / v.len() as f64 }
}

/// The distance heuristics (not a privacy guarantee).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DistanceHeuristics {
    /// Always says that these are heuristics and no guarantee.
    pub note: String,
    /// Training and holdout records compared (the first `compared` of each, so that both sets
    /// have the same size and the share closer to train is 1/2 under no memorisation).
    pub compared: u64,
    /// DCR from synthetic images to the training records.
    pub dcr_synthetic_to_train: DistanceSummary,
    /// DCR from synthetic images to the holdout records.
    pub dcr_synthetic_to_holdout: DistanceSummary,
    /// Share of synthetic images strictly closer to a training record than to any holdout record
    /// (ties count one half).
    pub share_closer_to_train: f64,
    /// One-sided permutation p-value of that share: the `compared` training and `compared`
    /// holdout records are pooled and re-split at random into two halves [`PERMUTATIONS`] times;
    /// p = (1 + #{re-splits whose share is at least the observed one}) / (1 + PERMUTATIONS).
    /// Exact (up to Monte Carlo) when the generator's output does not depend on which pooled
    /// records were the training ones, however many synthetic images share a nearest record
    /// (`proofs/attack/nearest_neighbour.md`).
    pub share_p_value: f64,
    /// How that p-value was computed.
    pub share_test: String,
    /// Synthetic images that are byte-for-byte copies of a training image (all training images
    /// given, not only the compared ones).
    pub exact_copies_of_train: u64,
    /// NNDR: nearest over second-nearest training record, per synthetic image.
    pub nndr: DistanceSummary,
    /// Share of synthetic images with NNDR below [`NNDR_LOW`].
    pub share_nndr_below_half: f64,
    /// Warnings raised; empty when none.
    pub flags: Vec<String>,
}

/// The GAN-Leaks attack's result (evidence).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GanLeaksAttack {
    /// What the evidence means.
    pub note: String,
    /// The score.
    pub score: String,
    /// AUC, TPR at low FPR, ROC (thinned above FPR 1%): training records against holdout records.
    pub metrics: AttackMetrics,
}

/// Sizes of the sets read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SetSizes {
    /// Synthetic images used.
    pub synthetic: u64,
    /// Training images used.
    pub train: u64,
    /// Holdout images used.
    pub holdout: u64,
}

/// The whole nearest-neighbour report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NearestNeighbourReport {
    /// dpaudit's version.
    pub tool_version: String,
    /// Files read.
    pub files: Vec<PathBuf>,
    /// Sizes.
    pub sizes: SetSizes,
    /// The distance.
    pub distance: String,
    /// Heuristics.
    pub distances: DistanceHeuristics,
    /// Evidence.
    pub attack: GanLeaksAttack,
}

/// Runs the distance heuristics and the GAN-Leaks attack.
///
/// # Errors
/// [`Error::InvalidParameter`] for an empty set, or images of different sizes; libtorch errors.
pub fn analyse(synthetic: &ImageSet, train: &ImageSet, holdout: &ImageSet) -> Result<NearestNeighbourReport> {
    for (name, s) in [("synthetic", synthetic), ("train", train), ("holdout", holdout)] {
        if s.len == 0 {
            return Err(Error::invalid("image set", name, format!("{} holds no images", s.path.display())));
        }
        if s.pixels != synthetic.pixels {
            return Err(Error::invalid(
                "image size",
                format!("{name}: {} pixels", s.pixels),
                format!(
                    "every set must have images of the synthetic set's size ({} pixels; {})",
                    synthetic.pixels,
                    synthetic.path.display()
                ),
            ));
        }
    }
    if train.len < 2 {
        return Err(Error::invalid("training set", train.len, "the NNDR needs at least 2 training images"));
    }
    let compared = train.len.min(holdout.len);
    let (ts, ht, ss) = (to_tensor(train)?, to_tensor(holdout)?, to_tensor(synthetic)?);
    let ts_c = ts.f_narrow(0, 0, compared as i64)?;
    let ht_c = ht.f_narrow(0, 0, compared as i64)?;
    let to_train = nearest_two(&ss, &ts_c)?;
    let to_holdout = nearest_two(&ss, &ht_c)?;
    let to_train_all = if compared == train.len { to_train.clone() } else { nearest_two(&ss, &ts)? };
    let d_train: Vec<f64> = to_train.iter().map(|d| d.0).collect();
    let d_hold: Vec<f64> = to_holdout.iter().map(|d| d.0).collect();
    // Each synthetic image's nearest pooled record (training records 0..compared, holdout records
    // compared..2 compared) gets weight 1 (a tie: 1/2 to each of the two).
    let mut weights = vec![0.0f64; 2 * compared];
    for (t, h) in to_train.iter().zip(&to_holdout) {
        if t.0 < h.0 {
            weights[t.2] += 1.0;
        } else if h.0 < t.0 {
            weights[compared + h.2] += 1.0;
        } else {
            weights[t.2] += 0.5;
            weights[compared + h.2] += 0.5;
        }
    }
    let closer: f64 = weights[..compared].iter().sum();
    let n = synthetic.len as f64;
    let share = closer / n;
    let p_value = permutation_p_value(&weights, compared, closer, PERMUTATIONS, PERMUTATION_SEED);
    let train_set: HashSet<&[u8]> = (0..train.len).map(|i| train.image(i)).collect();
    let copies = (0..synthetic.len).filter(|&i| train_set.contains(synthetic.image(i))).count() as u64;
    // NNDR with all training records; two identical nearest records give 0 / 0: count as 1
    // (not isolated).
    let nndr: Vec<f64> = to_train_all.iter().map(|&(a, b, _)| if b > 0.0 { a / b } else { 1.0 }).collect();
    let low_nndr = nndr.iter().filter(|&&r| r < NNDR_LOW).count() as f64 / n;
    let mut flags = Vec::new();
    if copies > 0 {
        flags.push(format!("{copies} synthetic images are exact copies of training images"));
    }
    if p_value < CLOSER_TO_TRAIN_ALPHA {
        flags.push(format!(
            "{:.1}% of synthetic images are closer to a training record than to any holdout record (1/2 expected without memorisation; one-sided permutation p = {p_value:.1e} < {CLOSER_TO_TRAIN_ALPHA} over {PERMUTATIONS} random re-splits of the pooled records; a heuristic, see proofs/attack/nearest_neighbour.md)",
            100.0 * share
        ));
    }
    // GAN-Leaks: distance from each candidate to its nearest synthetic image.
    let members: Vec<f64> = nearest_two(&ts, &ss)?.iter().map(|d| -d.0).collect();
    let non_members: Vec<f64> = nearest_two(&ht, &ss)?.iter().map(|d| -d.0).collect();
    let mut metrics = attack_metrics(&members, &non_members)?;
    metrics.roc = thin_roc(&metrics.roc, 400);
    Ok(NearestNeighbourReport {
        tool_version: env!("CARGO_PKG_VERSION").into(),
        files: vec![synthetic.path.clone(), train.path.clone(), holdout.path.clone()],
        sizes: SetSizes { synthetic: synthetic.len as u64, train: train.len as u64, holdout: holdout.len as u64 },
        distance: "Euclidean, pixels scaled to [0, 1], f64".into(),
        distances: DistanceHeuristics {
            note: "Heuristics, not a privacy guarantee: they flag blatant copying only. A large distance to closest record does not make a release private, and differential privacy makes no statement about it. The share closer to train is compared with 1/2, which holds only when the holdout records are drawn like the training records (e.g. unused records of the same split); a holdout from another split (MNIST's test set was written by other writers) shifts it without any memorisation.".into(),
            compared: compared as u64,
            dcr_synthetic_to_train: summary(&d_train),
            dcr_synthetic_to_holdout: summary(&d_hold),
            share_closer_to_train: share,
            share_p_value: p_value,
            share_test: format!("one-sided permutation test: the {compared} training and {compared} holdout records compared, pooled and re-split into halves at random {PERMUTATIONS} times (fixed seed); p = (1 + #{{re-splits with a share at least the observed}}) / {}", PERMUTATIONS + 1),
            exact_copies_of_train: copies,
            nndr: summary(&nndr),
            share_nndr_below_half: low_nndr,
            flags,
        },
        attack: GanLeaksAttack {
            note: "Evidence about this release, not a bound: a membership attack that beats chance shows leakage; one that does not proves nothing. For an (epsilon, delta)-DP generator, TPR <= e^epsilon FPR + delta at every FPR.".into(),
            score: "minus the distance from the candidate to its nearest synthetic image (GAN-Leaks full black-box, Chen et al. 2020); members: training records, non-members: holdout records".into(),
            metrics,
        },
    })
}

/// One-sided permutation p-value of `observed` = the weight of records `0..k` among `weights`
/// (2k records): the share of `permutations` random k-subsets (and the identity) whose weight is
/// at least `observed`.
fn permutation_p_value(weights: &[f64], k: usize, observed: f64, permutations: usize, seed: u64) -> f64 {
    // Each re-split: a partial Fisher-Yates shuffle of the 2k positions (uniform over k-subsets
    // whatever order the previous re-split left), then the weight landing in the first k.
    let mut order: Vec<usize> = (0..weights.len()).collect();
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    // Rounding slack: sums of halves and ones are exact in f64 up to 2^52.
    let at_least = observed - 1e-9;
    let mut count = 0usize;
    for _ in 0..permutations {
        let mut sum = 0.0;
        for i in 0..k {
            let j = rng.gen_range(i..order.len());
            order.swap(i, j);
            sum += weights[order[i]];
        }
        if sum >= at_least {
            count += 1;
        }
    }
    (1 + count) as f64 / (1 + permutations) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permutation_test_is_calibrated_for_spread_and_for_hub_weights() {
        // Spread weights, all on the first half: the most extreme split, p = 1 / (P + 1).
        let mut w = vec![0.0; 200];
        w[..100].iter_mut().for_each(|x| *x = 1.0);
        assert_eq!(permutation_p_value(&w, 100, 100.0, 999, 1), 1.0 / 1000.0);
        // Every synthetic image on one hub record in the first half: half of all re-splits put
        // the hub there too, so the share of 1 is unremarkable (p about 1/2).
        let mut hub = vec![0.0; 200];
        hub[3] = 500.0;
        let p = permutation_p_value(&hub, 100, 500.0, 999, 1);
        assert!((p - 0.5).abs() < 0.06, "{p}");
        // Weights balanced between the halves: p about 1/2 or more.
        let even: Vec<f64> = (0..200).map(|i| (i % 2) as f64).collect();
        let p = permutation_p_value(&even, 100, 50.0, 999, 1);
        assert!(p > 0.4, "{p}");
    }

    #[test]
    fn nearest_two_matches_brute_force() {
        let q = Tensor::from_slice(&[0.0f64, 0.0, 1.0, 1.0]).view([2, 2]);
        let r = Tensor::from_slice(&[0.0f64, 1.0, 3.0, 0.0, 1.0, 1.0]).view([3, 2]);
        let d = nearest_two(&q, &r).unwrap();
        // (0,0): distances 1, 3, sqrt 2; (1,1): 1, sqrt 5, 0.
        assert!((d[0].0 - 1.0).abs() < 1e-12 && (d[0].1 - 2f64.sqrt()).abs() < 1e-12 && d[0].2 == 0, "{d:?}");
        assert!(d[1].0.abs() < 1e-7 && (d[1].1 - 1.0).abs() < 1e-12 && d[1].2 == 2, "{d:?}");
        let one = Tensor::from_slice(&[0.0f64, 1.0]).view([1, 2]);
        assert_eq!(nearest_two(&q, &one).unwrap()[0].1, f64::INFINITY);
    }

    #[test]
    fn summaries_use_nearest_rank() {
        let s = summary(&[4.0, 1.0, 3.0, 2.0]);
        assert_eq!((s.min, s.p5, s.median, s.mean), (1.0, 1.0, 2.0, 2.5));
    }
}
