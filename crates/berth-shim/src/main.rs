//! `berth-shim`: see the library for what it owns and must not do.
#![forbid(unsafe_code)]

fn main() {
    std::process::exit(berth_shim::main_entry());
}
