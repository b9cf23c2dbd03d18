//! `berth-runc`: see the library for what it owns and must not do.
#![forbid(unsafe_code)]

fn main() {
    std::process::exit(berth_runc::main_entry());
}
