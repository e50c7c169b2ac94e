//! # blockend-reducers
//!
//! Ready-made slices (clock, counter, chat, kv) for blockend kernels. Not written yet: the
//! slices arrive with the issue "Ready-made slices in `reducers/`". Until then, see the clock
//! slice in the workspace's `examples/clock.rs` for how a slice is written.
