//! tickwire-sim: see docs/architecture.md.
#![forbid(unsafe_code)]
