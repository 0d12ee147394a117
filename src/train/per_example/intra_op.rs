//! Running Rust work on libtorch's own CPU threads.
//!
//! libtorch parallelises its CPU kernels with OpenMP (GNU libgomp in the PyTorch wheels); after
//! each parallel region the team's workers spin for a while before they sleep. Threads that Rust
//! starts right after a libtorch operation therefore share the cores with spinning workers: on 2
//! cores, a kernel split over two `std::thread`s inside a training step ran no faster than on one.
//! [`parallel_for`] hands the work to the same OpenMP team instead (`GOMP_parallel`, looked up at
//! run time in the libgomp that libtorch loaded), so the spinning workers pick it up at once.
//! Where no libgomp is loaded (another OpenMP runtime, a static build), it falls back to scoped
//! `std::thread`s.
use std::ffi::{c_int, c_uint, c_void, CStr};
use std::ops::Range;
use std::sync::OnceLock;

type GompParallel = unsafe extern "C" fn(extern "C" fn(*mut c_void), *mut c_void, c_uint, c_uint);
type OmpInt = unsafe extern "C" fn() -> c_int;

#[derive(Clone, Copy)]
struct OpenMp {
    parallel: GompParallel,
    thread_num: OmpInt,
    num_threads: OmpInt,
}

fn openmp() -> Option<OpenMp> {
    static FOUND: OnceLock<Option<OpenMp>> = OnceLock::new();
    *FOUND.get_or_init(|| {
        let find = |name: &CStr| {
            // SAFETY: dlsym with RTLD_DEFAULT and a NUL-terminated name only reads the loaded
            // libraries' symbol tables.
            let p = unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr()) };
            (!p.is_null()).then_some(p)
        };
        let (p, t, n) = (find(c"GOMP_parallel")?, find(c"omp_get_thread_num")?, find(c"omp_get_num_threads")?);
        // SAFETY: these are libgomp's exported functions, whose C signatures are the ones given
        // (`void GOMP_parallel(void (*)(void *), void *, unsigned, unsigned)`, `int omp_...(void)`).
        unsafe {
            Some(OpenMp {
                parallel: std::mem::transmute::<*mut c_void, GompParallel>(p),
                thread_num: std::mem::transmute::<*mut c_void, OmpInt>(t),
                num_threads: std::mem::transmute::<*mut c_void, OmpInt>(n),
            })
        }
    })
}

struct Job<'a> {
    items: usize,
    work: &'a (dyn Fn(Range<usize>) + Sync),
    omp: OpenMp,
}

/// The share of `items` that thread `id` of `team` takes: contiguous, in order, sizes differing
/// by at most one.
fn share(items: usize, id: usize, team: usize) -> Range<usize> {
    let team = team.max(1);
    let (base, extra) = (items / team, items % team);
    let start = id * base + id.min(extra);
    let len = base + usize::from(id < extra);
    start.min(items)..(start + len).min(items)
}

extern "C" fn trampoline(data: *mut c_void) {
    // SAFETY: `data` is the `Job` that `parallel_for` passed to GOMP_parallel, alive until
    // GOMP_parallel returns, which is after every thread of the team has left this function.
    let job = unsafe { &*(data as *const Job) };
    // SAFETY: libgomp's own query functions, called from inside its parallel region.
    let (id, team) = unsafe { ((job.omp.thread_num)(), (job.omp.num_threads)()) };
    let range = share(job.items, id.max(0) as usize, team.max(1) as usize);
    if !range.is_empty() {
        // A panic must not unwind into C: abort instead (the work is written not to panic).
        let ok = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (job.work)(range)));
        if ok.is_err() {
            std::process::abort();
        }
    }
}

/// Runs `work` over `0..items`, split into contiguous ranges, one per thread, on at most
/// `threads` threads (libtorch's OpenMP team when it is there, scoped threads otherwise). Every
/// index is covered exactly once; `work` must be safe to call concurrently on disjoint ranges.
pub(crate) fn parallel_for(items: usize, threads: usize, work: &(dyn Fn(Range<usize>) + Sync)) {
    let threads = threads.clamp(1, items.max(1));
    if threads == 1 {
        work(0..items);
        return;
    }
    if let Some(omp) = openmp() {
        let job = Job { items, work, omp };
        // SAFETY: `trampoline` reads `job` only while GOMP_parallel runs; flags 0 = default.
        unsafe {
            (omp.parallel)(trampoline, &job as *const Job as *mut c_void, threads as c_uint, 0);
        }
        return;
    }
    std::thread::scope(|scope| {
        for id in 1..threads {
            let range = share(items, id, threads);
            scope.spawn(move || work(range));
        }
        work(share(items, 0, threads));
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn shares_cover_every_item_once_in_order() {
        for items in [0, 1, 2, 7, 256] {
            for team in 1..5 {
                let ranges: Vec<_> = (0..team).map(|id| share(items, id, team)).collect();
                let mut next = 0;
                for r in &ranges {
                    assert_eq!(r.start, next.min(items));
                    next = r.end.max(next);
                }
                assert_eq!(ranges.iter().map(|r| r.len()).sum::<usize>(), items);
            }
        }
    }

    #[test]
    fn every_index_runs_exactly_once() {
        let _ = tch::get_num_threads(); // libtorch (and its OpenMP) loaded
        for threads in [1, 2, 3] {
            let hits: Vec<AtomicUsize> = (0..100).map(|_| AtomicUsize::new(0)).collect();
            parallel_for(100, threads, &|r: Range<usize>| {
                for i in r {
                    hits[i].fetch_add(1, Ordering::Relaxed);
                }
            });
            assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 1), "{threads} threads");
        }
    }
}
