//! # blockend
//!
//! A toolkit for peer-to-peer application cores: signed block feeds in a bounded store,
//! filter/reducer slices that derive deterministic state from them, and sync between peers.
//!
//! This package will hold the libp2p node, its local API and the CLI; today it re-exports the
//! kernel ([`kernel`]), where the data model, slices, the sync protocol and the in-memory wire
//! live.

pub use blockend_kernel as kernel;
