//! tickwire-netcode: see docs/architecture.md.
#![forbid(unsafe_code)]
