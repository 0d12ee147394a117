//! libtorch's default random generator is one per process. `tch::manual_seed`, the default
//! initialisation of every `nn` layer, and `rand`/`randn` all draw from it, so a seeded build on
//! one thread comes out different if another thread draws in between. Every draw from it in this
//! crate holds [`lock`]; a seeded build uses [`seeded`].
//!
//! Trainers take their own randomness (sampling, noise, latents) from their ChaCha20 streams and
//! never from this generator; only network initialisation and a few unseeded draws use it.

use std::sync::{Mutex, MutexGuard, PoisonError};

static GENERATOR: Mutex<()> = Mutex::new(());

/// Holds libtorch's process-wide generator until the guard is dropped. Not re-entrant: do not call
/// it (or [`seeded`]) again on the same thread while a guard is alive.
pub fn lock() -> MutexGuard<'static, ()> {
    GENERATOR.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Runs `build` with libtorch's generator seeded with `seed` and held, so that what `build` draws
/// depends only on `seed`, whatever other threads do.
pub fn seeded<T>(seed: i64, build: impl FnOnce() -> T) -> T {
    let _held = lock();
    tch::manual_seed(seed);
    build()
}

/// [`seeded`] with the seed read from a 32-byte key (its first 8 bytes, little-endian): how the
/// trainers seed their networks' initialisation from a stream of their run seed.
pub fn seeded_by_key<T>(key: &[u8; 32], build: impl FnOnce() -> T) -> T {
    let mut first = [0u8; 8];
    first.copy_from_slice(&key[..8]);
    seeded(i64::from_le_bytes(first), build)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind, Tensor};

    #[test]
    fn a_seeded_draw_is_the_same_while_other_threads_draw() {
        let draw = || seeded(7, || Vec::<f32>::try_from(Tensor::rand([64], (Kind::Float, Device::Cpu))).unwrap());
        let alone = draw();
        let stop = std::sync::atomic::AtomicBool::new(false);
        let same = std::thread::scope(|s| {
            for _ in 0..2 {
                s.spawn(|| {
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        let _held = lock();
                        let _ = Tensor::rand([16], (Kind::Float, Device::Cpu));
                    }
                });
            }
            // Compared after the scope: a panic inside it would wait forever for the drawers.
            let same = (0..200).filter(|_| draw() == alone).count();
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            same
        });
        assert_eq!(same, 200);
    }
}
