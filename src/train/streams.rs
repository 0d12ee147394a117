//! The one registry of named ChaCha20 streams. Every random choice of dpaudit that must be
//! reproducible from a seed (and, for the privacy-relevant ones, unpredictable without it) comes
//! from a stream named here, with its number; no other file numbers a stream.
//!
//! Three families, because three kinds of seed are expanded:
//! - [`RunStream`]: the streams of a training run's seed (`train`, `gan train`, audit replays):
//!   [`crate::train::noise::NoiseSeed::to_bytes`] turns the seed and a stream into the 32-byte key
//!   of one generator. Why one seed feeds separate streams: `proofs/train/noise_seeding.md`.
//! - [`NoiseKeyStream`]: streams under the key of [`RunStream::Noise`] itself: stream 0 is the
//!   Gaussian noise; PGD's random starts use streams that never meet it.
//! - [`SeedStream`]: streams of a user seed given to a command that releases or evaluates
//!   (`gan sample`, `evaluate synthetic`), expanded with `ChaCha20Rng::seed_from_u64`.
//! - [`SeedSalt`]: the audits' and attacks' own generators, each the default stream of
//!   `seed_from_u64(seed ^ salt)` for a salt named here (the seed is the audit's or a run's).
//!
//! The numbers are those dpaudit has always used, so seeded outputs are unchanged; the unit tests
//! check that no two streams of one seed share a number.
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;

/// A stream of a training run's seed; its key is `NoiseSeed::to_bytes(stream)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RunStream {
    /// The Poisson lots (DP-SGD and the GAN's discriminator).
    Sampling,
    /// The Gaussian noise of [`crate::train::mechanism::GaussianSum`] (its key also holds the
    /// [`NoiseKeyStream`]s).
    Noise,
    /// The networks' initial weights (libtorch's generator, seeded by this key).
    Initialisation,
    /// DP-PCA's noise (`train` of an `abadi-pca` model).
    PcaNoise,
    /// The GAN's training latents and their labels.
    GanLatents,
    /// The noise of the noise-layer GAN design's discriminator.
    GanNoiseLayer,
    /// The fixed latents behind `gan train`'s per-epoch sample grids.
    GanEpochGrid,
    /// The latents of `gan train`'s samples-beside-nearest-images figure.
    GanNearestFigure,
}

impl RunStream {
    /// Every run stream.
    pub const ALL: [RunStream; 8] = [
        RunStream::Sampling,
        RunStream::Noise,
        RunStream::Initialisation,
        RunStream::PcaNoise,
        RunStream::GanLatents,
        RunStream::GanNoiseLayer,
        RunStream::GanEpochGrid,
        RunStream::GanNearestFigure,
    ];

    /// The streams one DP-SGD run (`train`) draws from.
    pub const DPSGD: [RunStream; 4] =
        [RunStream::Sampling, RunStream::Noise, RunStream::Initialisation, RunStream::PcaNoise];

    /// The streams one GAN run (`gan train`) draws from.
    pub const GAN: [RunStream; 7] = [
        RunStream::Sampling,
        RunStream::Noise,
        RunStream::Initialisation,
        RunStream::GanLatents,
        RunStream::GanNoiseLayer,
        RunStream::GanEpochGrid,
        RunStream::GanNearestFigure,
    ];

    /// The ChaCha20 stream number. DP-PCA's noise and the GAN's latents share 3: no run draws
    /// from both (a `train` run has no latents, a `gan train` run no DP-PCA), which
    /// [`RunStream::DPSGD`] and [`RunStream::GAN`] state and the tests check.
    pub const fn number(self) -> u64 {
        match self {
            RunStream::Sampling => 0,
            RunStream::Noise => 1,
            RunStream::Initialisation => 2,
            RunStream::PcaNoise => 3,
            RunStream::GanLatents => 3,
            RunStream::GanNoiseLayer => 4,
            RunStream::GanEpochGrid => 5,
            RunStream::GanNearestFigure => 6,
        }
    }
}

/// A stream under the key of [`RunStream::Noise`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NoiseKeyStream {
    /// The Gaussian noise (the key's default stream).
    Gaussian,
    /// PGD's random starts when measuring robust accuracy.
    PgdEvaluation,
    /// PGD's random starts of adversarial training at this 1-based step (a stream per step, so a
    /// resumed run replays them without extra state).
    PgdTraining(u64),
}

impl NoiseKeyStream {
    /// The ChaCha20 stream number: 0 for the noise, 2^62 for evaluation, 2^63 + step for training
    /// (steps stay below 2^62, [`crate::train::run::MAX_TRAINING_STEPS`]).
    pub const fn number(self) -> u64 {
        match self {
            NoiseKeyStream::Gaussian => 0,
            NoiseKeyStream::PgdEvaluation => 1 << 62,
            NoiseKeyStream::PgdTraining(step) => (1 << 63) | step,
        }
    }

    /// The generator of this stream under `key` (the key of [`RunStream::Noise`]).
    pub fn rng(self, key: [u8; 32]) -> ChaCha20Rng {
        let mut rng = ChaCha20Rng::from_seed(key);
        rng.set_stream(self.number());
        rng
    }
}

/// A stream of a user seed given to a command that is not a training run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SeedStream {
    /// `evaluate synthetic`: the CAS classifier's shuffles.
    EvaluationCas,
    /// `evaluate synthetic`: the FID feature classifier's shuffles.
    EvaluationFid,
    /// `evaluate synthetic`: the real-vs-fake classifier's shuffles.
    EvaluationRealVsFake,
    /// `gan sample`: the release's latents.
    ReleaseLatents,
}

impl SeedStream {
    /// Every seed stream.
    pub const ALL: [SeedStream; 4] = [
        SeedStream::EvaluationCas,
        SeedStream::EvaluationFid,
        SeedStream::EvaluationRealVsFake,
        SeedStream::ReleaseLatents,
    ];

    /// The ChaCha20 stream number.
    pub const fn number(self) -> u64 {
        match self {
            SeedStream::EvaluationCas => 0,
            SeedStream::EvaluationFid => 1,
            SeedStream::EvaluationRealVsFake => 2,
            SeedStream::ReleaseLatents => 7,
        }
    }

    /// The generator of this stream of `seed`.
    pub fn rng(self, seed: u64) -> ChaCha20Rng {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        rng.set_stream(self.number());
        rng
    }
}

/// A generator of an audit or an attack: the default stream of `seed_from_u64(seed ^ salt)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SeedSalt {
    /// The audit's input canary (an out-of-distribution image), from the audit seed.
    AuditInputCanary,
    /// A GAN audit run's scoring draws (the noise-layer discriminator's noise), from the run seed.
    GanAuditScoring,
    /// The reference noise images a GAN audit calibrates its score with, from the audit seed.
    GanAuditReferences,
    /// Which of the one-run audit's canaries are included, from the run seed of side "with", 0.
    OneRunInclusion,
    /// Which examples each shadow model of the membership-inference attack trains on.
    MiaMemberships,
}

impl SeedSalt {
    /// Every salt.
    pub const ALL: [SeedSalt; 5] = [
        SeedSalt::AuditInputCanary,
        SeedSalt::GanAuditScoring,
        SeedSalt::GanAuditReferences,
        SeedSalt::OneRunInclusion,
        SeedSalt::MiaMemberships,
    ];

    /// The value XORed into the seed.
    pub const fn salt(self) -> u64 {
        match self {
            SeedSalt::AuditInputCanary => 0xC0FFEE,
            SeedSalt::GanAuditScoring => 0x0005_C04E,
            SeedSalt::GanAuditReferences => 0x2EF5,
            SeedSalt::OneRunInclusion => 0x0E_0E_0E,
            SeedSalt::MiaMemberships => 0x4D49_415F_4B45_4550,
        }
    }

    /// The generator of this salt for `seed`.
    pub fn rng(self, seed: u64) -> ChaCha20Rng {
        ChaCha20Rng::seed_from_u64(seed ^ self.salt())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn distinct(numbers: impl IntoIterator<Item = u64>) -> bool {
        let v: Vec<u64> = numbers.into_iter().collect();
        v.iter().collect::<HashSet<_>>().len() == v.len()
    }

    #[test]
    fn the_streams_of_one_seed_have_distinct_numbers() {
        assert!(distinct(RunStream::DPSGD.map(RunStream::number)));
        assert!(distinct(RunStream::GAN.map(RunStream::number)));
        assert!(distinct(SeedStream::ALL.map(SeedStream::number)));
        assert!(distinct(SeedSalt::ALL.map(SeedSalt::salt)));
        // Every run stream is drawn by one trainer or the other; the only shared number is that
        // of two streams no single run uses together.
        let used: HashSet<RunStream> = RunStream::DPSGD.into_iter().chain(RunStream::GAN).collect();
        assert_eq!(used, RunStream::ALL.into_iter().collect());
        assert_eq!(RunStream::PcaNoise.number(), RunStream::GanLatents.number());
        assert!(!RunStream::GAN.contains(&RunStream::PcaNoise) && !RunStream::DPSGD.contains(&RunStream::GanLatents));
        let mut all = RunStream::ALL.map(RunStream::number).to_vec();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), RunStream::ALL.len() - 1, "exactly one shared number");
    }

    #[test]
    fn pgd_streams_never_meet_the_noise() {
        let max = crate::train::run::MAX_TRAINING_STEPS;
        let numbers = [
            NoiseKeyStream::Gaussian.number(),
            NoiseKeyStream::PgdEvaluation.number(),
            NoiseKeyStream::PgdTraining(1).number(),
            NoiseKeyStream::PgdTraining(max).number(),
        ];
        assert!(distinct(numbers));
        assert!(max < 1 << 62, "training steps stay below the evaluation stream's bit");
        // The noise is the key's default stream: the generator the mechanism draws from.
        let key = [7u8; 32];
        assert_eq!(NoiseKeyStream::Gaussian.rng(key), ChaCha20Rng::from_seed(key));
    }

    #[test]
    fn the_numbers_are_the_ones_dpaudit_always_used() {
        // Changing one changes every seeded output (models, ledgers' runs, audit records).
        let run: Vec<u64> = RunStream::ALL.map(RunStream::number).to_vec();
        assert_eq!(run, [0, 1, 2, 3, 3, 4, 5, 6]);
        assert_eq!(SeedStream::ALL.map(SeedStream::number), [0, 1, 2, 7]);
        assert_eq!(NoiseKeyStream::PgdTraining(5).number(), (1 << 63) | 5);
        assert_eq!(SeedSalt::ALL.map(SeedSalt::salt), [0xC0FFEE, 0x5C04E, 0x2EF5, 0x0E0E0E, 0x4D49_415F_4B45_4550]);
    }
}
