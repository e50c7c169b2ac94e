//! A node running your own slice: the library path for people who write their own kernel.
//!
//! Two nodes on loopback TCP, each on an embedded RocksDB store in a temporary directory, run a
//! `guestbook` slice written here. Alice signs the book; Bob's node receives the entry over
//! libp2p and both print the same state.
//!
//! ```text
//! cargo run --example custom_node
//! ```

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use blockend::app::StateError;
use blockend::kernel::store::RocksStore;
use blockend::kernel::{Application, Context, Kernel, Registry, Slice, Verdict};
use blockend::{node, Node, NodeApp};
use serde::{Deserialize, Serialize};

/// A guestbook entry: `{"name": "...", "message": "..."}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Entry {
    name: String,
    message: String,
}

/// The guestbook: every entry, ordered by (time, author, seq) so every peer lists them alike.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Book {
    entries: std::collections::BTreeMap<(u64, String, u64), Entry>,
}

/// The state as JSON: a list, oldest first.
#[derive(Serialize)]
struct BookView<'a> {
    signatures: usize,
    entries: Vec<&'a Entry>,
}

struct Guestbook;

impl Slice for Guestbook {
    type State = Book;

    fn name(&self) -> &str {
        "guestbook"
    }

    fn initial(&self) -> Book {
        Book::default()
    }

    fn filter(&self, ctx: &Context<'_>, _: &Book) -> Verdict {
        match serde_json::from_slice::<Entry>(ctx.body()) {
            Err(_) => Verdict::Ignore,
            Ok(entry) if entry.name.trim().is_empty() => Verdict::Reject("a name please".into()),
            Ok(entry) if entry.message.chars().count() > 280 => {
                Verdict::Reject("280 characters at most".into())
            }
            Ok(_) => Verdict::Accept,
        }
    }

    fn reduce(&self, ctx: &Context<'_>, book: &mut Book) {
        if let Ok(entry) = serde_json::from_slice::<Entry>(ctx.body()) {
            book.entries
                .insert((ctx.time(), ctx.author().to_hex(), ctx.seq()), entry);
        }
    }

    fn commutative(&self) -> bool {
        true // a map keyed by the block: any arrival order gives the same book
    }
}

/// The application: registers the slice, and shows its state as JSON for the node.
struct GuestbookApp;

impl Application for GuestbookApp {
    fn register(&self, slices: &mut Registry) {
        slices.add(Guestbook);
    }
}

impl NodeApp for GuestbookApp {
    fn name(&self) -> &str {
        "guestbook"
    }
    fn default_slice(&self) -> &str {
        "guestbook"
    }
    fn state_json(&self, kernel: &Kernel, slice: &str) -> Result<serde_json::Value, StateError> {
        let unknown = || StateError::UnknownSlice {
            slice: slice.to_owned(),
        };
        if slice != "guestbook" {
            return Err(unknown());
        }
        let book = kernel.state::<Guestbook>().ok_or_else(unknown)?;
        // The book's keys are tuples, which JSON maps cannot have: show a view instead.
        serde_json::to_value(BookView {
            signatures: book.entries.len(),
            entries: book.entries.values().collect(),
        })
        .map_err(|source| StateError::Render {
            slice: slice.to_owned(),
            source,
        })
    }
}

async fn start(dir: &std::path::Path, peers: Vec<libp2p::Multiaddr>) -> anyhow::Result<Node> {
    let kernel = Kernel::builder(&GuestbookApp)
        .with_store(RocksStore::open(dir).context("opening the store")?)
        .open()?;
    let mut config = node::Config::default()
        .with_listen(vec!["/ip4/127.0.0.1/tcp/0".parse()?])
        .with_peers(peers)
        .with_mdns(false);
    config.app = GuestbookApp.name().to_owned();
    Ok(Node::spawn(kernel, Arc::new(GuestbookApp), config).await?)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let alice = start(&dir.path().join("alice"), vec![]).await?;
    let addr = alice.handle().listening().await?[0].clone();
    let bob = start(&dir.path().join("bob"), vec![addr]).await?;

    let entry = Entry {
        name: "Alice".into(),
        message: "Hello from the first node".into(),
    };
    alice.handle().append(serde_json::to_vec(&entry)?).await?;
    // A rejected entry never leaves Alice's node.
    let anonymous = br#"{"name": " ", "message": "who am I?"}"#.to_vec();
    if let Err(error) = alice.handle().append(anonymous).await {
        println!("refused: {error}");
    }

    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let state = bob.handle().state(None).await?;
        if state["state"]["signatures"] == 1 {
            println!("Alice: {}", alice.handle().state(None).await?);
            println!("Bob:   {state}");
            break;
        }
        if Instant::now() > deadline {
            bail!("Bob's node did not receive the entry within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The same state on both nodes, down to the digest.
    let (a, b) = (
        alice.handle().state(None).await?,
        bob.handle().state(None).await?,
    );
    assert_eq!(a["digest"], b["digest"]);
    bob.shutdown().await;
    alice.shutdown().await;
    Ok(())
}
