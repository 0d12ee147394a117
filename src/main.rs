//! The `dpaudit` command line: a thin layer over the library (to be filled in).
fn main() {}
