//! Bakes the libtorch library folder into every binary's RPATH, so `cargo run`, `cargo test` and
//! the installed `dpaudit` find libtorch without LD_LIBRARY_PATH.
//!
//! `torch-sys` (a direct dependency for exactly this reason) publishes the folder it linked
//! against as `DEP_TCH_LIBTORCH_LIB`. Where LIBTORCH points is set in `.cargo/config.toml`,
//! which `scripts/setup.sh` prepares.
fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    if let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
    }
    // GPU support: libtorch_cuda is loaded at run time with dlopen (see `src/device.rs`) rather than
    // linked here, so the same binary runs on machines without CUDA.
}
