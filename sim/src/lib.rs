//! # blockend-sim
//!
//! The deterministic, virtual-time swarm simulator. Not written yet: it arrives with the issue
//! "Swarm simulator". It will drive the kernel's sans-IO sync machine
//! (`blockend_kernel::sync::Protocol`) over a virtual network, as the in-memory wire does over
//! channels today.
