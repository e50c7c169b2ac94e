//! # blockend
//!
//! A toolkit for peer-to-peer application cores: signed block feeds in a bounded store,
//! filter/reducer slices that derive deterministic state from them, and sync between peers.
//!
//! This package is the part that does IO: the libp2p [`node`], its local control socket
//! ([`api`]) and the `blockend` command line. The kernel ([`kernel`]) holds the data model, the
//! slices, the sync protocol and the in-memory wire; the ready-made slices are in [`reducers`].
//!
//! What it is not: a consensus engine of its own. The node moves blocks; what they mean is the
//! application's slices.
//!
//! ## Layout
//! - [`app`]: [`NodeApp`], what a node runs, and the ready-made apps the CLI names.
//! - [`node`]: [`Node`], the kernel actor and the libp2p network actor.
//! - [`api`]: the local socket in the store directory, its server and client.
//! - [`store`]: opening a store directory (identity, app name, capacity, lock) for the CLI.
//! - [`archive`]: the file `blockend export` writes and `blockend import` reads.
//!
//! ## Example
//! ```no_run
//! use std::sync::Arc;
//! use blockend::{node, Node, ReadyApp};
//! use blockend::kernel::Kernel;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let app = ReadyApp::Counter;
//! let kernel = Kernel::builder(&app).open()?;
//! let config = node::Config::default().with_mdns(false);
//! let node = Node::spawn(kernel, Arc::new(app), config).await?;
//! node.handle().append(br#"{"value": 1}"#.to_vec()).await?;
//! println!("{}", node.handle().state(None).await?);
//! node.shutdown().await;
//! # Ok(()) }
//! ```

pub mod api;
pub mod app;
pub mod archive;
pub mod node;
pub mod store;

pub use app::{NodeApp, ReadyApp};
pub use blockend_kernel as kernel;
pub use blockend_reducers as reducers;
pub use node::{Handle, Node};
