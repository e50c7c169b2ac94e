//! # blockend-reducers
//!
//! Ready-made slices for blockend kernels, each usable on its own and a reference for writing
//! new ones. Every slice takes JSON bodies, keeps a serde state, declares whether it is
//! commutative, and has a `name` the CLI selects it by.
//!
//! | slice | body | state |
//! |---|---|---|
//! | [`Clock`] | `{"tick": <ms>}` | latest tick |
//! | [`Counter`] | `{"value": <n>}` | `{"total", "by_author"}` |
//! | [`Chat`] | `{"room", "text", "ttl_ms"}` | rooms -> live messages |
//! | [`Kv`] | `{"set": {"key", "value"}}`, `{"delete": "<k>"}` | key -> last write |
//!
//! ```
//! use blockend_kernel::{Application, Kernel, Registry};
//! use blockend_reducers::Counter;
//!
//! struct App;
//! impl Application for App {
//!     fn register(&self, slices: &mut Registry) { slices.add(Counter); }
//! }
//!
//! let mut kernel = Kernel::builder(&App).open()?;
//! kernel.create_block(br#"{"value": 3}"#.to_vec())?;
//! kernel.create_block(br#"{"value": 5}"#.to_vec())?;
//! assert!(kernel.create_block(br#"{"value": 4}"#.to_vec()).is_err()); // must grow
//! assert_eq!(kernel.state::<Counter>().map(|c| c.total), Some(5));
//! # Ok::<(), blockend_kernel::Error>(())
//! ```

pub mod chat;
pub mod clock;
pub mod counter;
pub mod kv;

pub use chat::Chat;
pub use clock::Clock;
pub use counter::Counter;
pub use kv::Kv;
