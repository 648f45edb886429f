//! The `hearth` binary: wiring only; everything is in `hearth::cli`.
#![forbid(unsafe_code)]

fn main() {
    std::process::exit(hearth::cli::main());
}
