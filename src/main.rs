//! The `hearth` binary: wiring only. (SKELETON: the cli helper writes it.)
#![forbid(unsafe_code)]

fn main() {
    std::process::exit(hearth::cli::main());
}
