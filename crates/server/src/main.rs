//! tickwire: the dedicated server binary.
#![forbid(unsafe_code)]
fn main() {}
