//! Feature pins for one RocksDB build per profile; see this crate's `Cargo.toml`. No code.
