//! Bakes the libtorch library folder into every binary's RPATH, so `cargo run`, `cargo test` and
//! the installed `dpaudit` find libtorch without LD_LIBRARY_PATH.
//!
//! `torch-sys` (a direct dependency for exactly this reason) publishes the folder it linked
//! against as `DEP_TCH_LIBTORCH_LIB`. Where LIBTORCH points is set in `.cargo/config.toml`,
//! which `scripts/setup.sh` prepares.
fn main() {
    // One id per build of the sources: the front `dpaudit` passes it to `dpaudit-torch`, which
    // refuses to run as part of another build (`cargo run` rebuilds only the front).
    for watched in ["src", "core/src", "Cargo.toml", "Cargo.lock"] {
        println!("cargo:rerun-if-changed={watched}");
    }
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    println!("cargo:rustc-env=DPAUDIT_BUILD_ID={now:x}-{}", std::process::id());
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    if let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
    }
    // GPU support: libtorch_cuda is loaded at run time with dlopen (see `src/device.rs`) rather than
    // linked here, so the same binary runs on machines without CUDA.
}
