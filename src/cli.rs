//! Command-line parsing and the commands other than `serve`. (SKELETON: the store helper.)

/// Entry point of the binary; returns the process exit code.
pub fn main() -> i32 {
    todo!("cli helper")
}
