//! tickwire-io: see docs/architecture.md.
