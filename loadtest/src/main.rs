//! tickwire-loadtest.
#![forbid(unsafe_code)]
fn main() {}
