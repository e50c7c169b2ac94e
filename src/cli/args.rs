//! The command line's shape: every verb and its arguments, as clap parses them.

use std::path::PathBuf;

use blockend::kernel::PublicKey;
use blockend::{api, store, ReadyApp};
use clap::{Parser, Subcommand};
use libp2p::Multiaddr;

/// The environment variable that gives `--store` when the flag is left out.
pub const STORE_ENV: &str = "BLOCKEND_STORE";

/// blockend: signed block feeds, deterministic slices, gossip between peers.
#[derive(Debug, Parser)]
#[command(
    name = "blockend",
    version,
    about,
    arg_required_else_help = true,
    after_help = blockend::app::apps_help()
)]
pub struct Args {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a store and its identity; prints {"author": "<hex>"}.
    Init {
        /// The store directory.
        #[arg(long, value_name = "DIR", env = STORE_ENV)]
        store: PathBuf,
        /// The app the store runs: clock, counter, chat or kv.
        #[arg(long, default_value = "counter")]
        app: ReadyApp,
        /// Byte budget for other authors' feeds (plain number: bytes; KB/MB/GB/TB are powers
        /// of 1000, KiB/MiB/GiB/TiB of 1024; 1.5GiB). Remembered in DIR/capacity; default
        /// 1 GiB. Own feeds are never counted or evicted.
        #[arg(long, value_name = "SIZE", value_parser = store::parse_capacity)]
        capacity: Option<u64>,
    },
    /// Run a node on the store until SIGINT or SIGTERM; prints {"listening": ...} per address.
    Node {
        /// The store directory (created when missing).
        #[arg(long, value_name = "DIR", env = STORE_ENV)]
        store: PathBuf,
        /// The app (must match the store's; default: the store's, or counter for a new store).
        #[arg(long)]
        app: Option<ReadyApp>,
        /// Address to listen on (repeatable). Default /ip4/0.0.0.0/tcp/0 and
        /// /ip4/0.0.0.0/udp/0/quic-v1 (TCP and QUIC).
        #[arg(long, value_name = "MULTIADDR")]
        listen: Vec<Multiaddr>,
        /// Peer to keep connected (repeatable); redialled with backoff. TCP or QUIC, by IP or
        /// DNS name: /ip4/192.0.2.1/tcp/4001, /dns4/example.org/udp/4001/quic-v1.
        #[arg(long, value_name = "MULTIADDR")]
        peer: Vec<Multiaddr>,
        /// Bootstrap peer (repeatable): dialed and kept like --peer, and remembered in the
        /// store (DIR/bootstrap), so later starts use it without the flag; giving any replaces
        /// the remembered ones.
        #[arg(long, value_name = "MULTIADDR")]
        bootstrap: Vec<Multiaddr>,
        /// Turn off local discovery with mDNS.
        #[arg(long)]
        no_mdns: bool,
        /// Serve as a circuit relay for nodes behind NATs (and as a DHT server): at most 128
        /// reservations and 16 circuits at once, 4 of each per peer, rate-limited per peer and
        /// per IP; a circuit carries at most 128 KiB for at most 2 minutes.
        #[arg(long)]
        relay: bool,
        /// An address this node is reachable at from outside (repeatable), announced at once
        /// instead of after AutoNAT confirms it. A --relay node announces its listen addresses
        /// that name an IP and a port without it.
        #[arg(long, value_name = "MULTIADDR")]
        external: Vec<Multiaddr>,
        /// Do not try to turn relayed connections into direct ones by hole punching.
        #[arg(long)]
        no_holepunch: bool,
        /// Treat private and reserved addresses (100.64/10, 198.18/15, 10/8, ...) as global
        /// when probing reachability with AutoNAT. For NAT labs built of such ranges only.
        #[arg(long)]
        lab_nonglobal_addresses: bool,
        /// Byte budget for other authors' feeds (as for `init`); replaces the one the store
        /// remembers. Default: the store's, or 1 GiB. Over it, the feeds ranked last (not
        /// followed, stored last) are evicted whole.
        #[arg(long, value_name = "SIZE", value_parser = store::parse_capacity)]
        capacity: Option<u64>,
    },
    /// Create a block; BODY is JSON, or - to read it from stdin. Prints the block.
    Append {
        /// The store directory.
        #[arg(long, value_name = "DIR", env = STORE_ENV)]
        store: PathBuf,
        /// The body, as JSON (- reads stdin).
        body: String,
    },
    /// Print stored blocks as JSON lines, oldest first by time (then author and seq).
    Cat {
        /// The store directory.
        #[arg(long, value_name = "DIR", env = STORE_ENV)]
        store: PathBuf,
        /// Keep printing new blocks as they arrive (needs a running node).
        #[arg(long)]
        follow: bool,
        /// Only this author's feed (hex).
        #[arg(long, value_name = "HEX")]
        author: Option<String>,
        /// Start after this block (its id, as cat printed it) in this listing's order; with
        /// --follow, then stream what arrives. A block that arrives later with an older time
        /// sorts before it: keep --follow running to see every arrival.
        #[arg(long, value_name = "ID")]
        since: Option<String>,
        /// List feed by feed, each in seq order, instead of by time.
        #[arg(long)]
        by_feed: bool,
    },
    /// Print the store's author (hex) and its node's libp2p peer id, which names the same key:
    /// {"author", "peer"}. Works while a node runs.
    Id {
        /// The store directory.
        #[arg(long, value_name = "DIR", env = STORE_ENV)]
        store: PathBuf,
    },
    /// Print the newest block of every feed (or of one), with its status.
    Head {
        /// The store directory.
        #[arg(long, value_name = "DIR", env = STORE_ENV)]
        store: PathBuf,
        /// Only this author's feed (hex).
        #[arg(long, value_name = "HEX")]
        author: Option<String>,
    },
    /// Print one block with its status: counted, ignored, rejected (with the slice's reason),
    /// collected (expired; the header stays) or waiting (for its parent or its time).
    Get {
        /// The block id (64 hex digits, as cat prints it).
        #[arg(value_name = "ID")]
        id: String,
        /// The store directory.
        #[arg(long, value_name = "DIR", env = STORE_ENV)]
        store: PathBuf,
    },
    /// Write feeds to stdout as a feed archive (binary: redirect it, `> FILE`): every feed
    /// held, or one, with the fork proofs of frozen feeds. Progress on stderr. Works while a
    /// node runs.
    Export {
        /// The store directory.
        #[arg(long, value_name = "DIR", env = STORE_ENV)]
        store: PathBuf,
        /// Only this author's feed (hex).
        #[arg(long, value_name = "HEX")]
        author: Option<String>,
    },
    /// Take in the feeds of an archive `blockend export` wrote (- reads stdin): every block is
    /// verified as a peer's would be, in bounded batches, through the running node if there is
    /// one. Progress on stderr; prints what was accepted as one JSON line.
    Import {
        /// The archive file (- for stdin).
        #[arg(value_name = "FILE")]
        file: PathBuf,
        /// The store directory.
        #[arg(long, value_name = "DIR", env = STORE_ENV)]
        store: PathBuf,
    },
    /// Print the ready-made apps: their slices, the bodies each accepts, an example body, and
    /// what `state` shows, one JSON line per app.
    Apps,
    /// Print a slice's state with its digest and the store's set_hash.
    State {
        /// The store directory.
        #[arg(long, value_name = "DIR", env = STORE_ENV)]
        store: PathBuf,
        /// The slice (default: the app's).
        slice: Option<String>,
        /// Keep printing each new state (needs a running node).
        #[arg(long)]
        follow: bool,
    },
    /// Print the running node's connected peers.
    Peers {
        /// The store directory.
        #[arg(long, value_name = "DIR", env = STORE_ENV)]
        store: PathBuf,
    },
    /// Print counters: blocks stored, received, sent, rejected, evicted, collected, and the
    /// capacity (capacity_bytes, capacity_used, capacity_free, own_bytes).
    Stats {
        /// The store directory.
        #[arg(long, value_name = "DIR", env = STORE_ENV)]
        store: PathBuf,
    },
    /// Print every feed in the order retention keeps them, one JSON line each: the own feed
    /// first, then the others by rank (followed, then first stored, then longer), then the
    /// evicted ones.
    Feeds {
        /// The store directory.
        #[arg(long, value_name = "DIR", env = STORE_ENV)]
        store: PathBuf,
    },
    /// Follow an author: its feed is kept before every feed not followed when the store is
    /// full, and may come back at once if it was evicted. Prints {"author", "followed",
    /// "changed"}.
    Follow {
        /// The author (64 hex digits).
        #[arg(value_name = "AUTHOR", value_parser = api::parse_author)]
        author: PublicKey,
        /// The store directory.
        #[arg(long, value_name = "DIR", env = STORE_ENV)]
        store: PathBuf,
    },
    /// Stop following an author: its feed is ranked by when it was first stored again.
    /// Prints {"author", "followed", "changed"}.
    Unfollow {
        /// The author (64 hex digits).
        #[arg(value_name = "AUTHOR", value_parser = api::parse_author)]
        author: PublicKey,
        /// The store directory.
        #[arg(long, value_name = "DIR", env = STORE_ENV)]
        store: PathBuf,
    },
    /// Repair a damaged store: keep every block that still links to its feed, set the rest
    /// aside in DIR/lost/, and print what was kept and lost as one JSON line.
    Repair {
        /// The store directory (no node may be running on it).
        #[arg(long, value_name = "DIR", env = STORE_ENV)]
        store: PathBuf,
    },
    /// Run a swarm simulation scenario (TOML); the JSON report is the last line on stdout.
    Sim {
        /// The scenario file, e.g. sim/scenarios/one-sender.toml.
        scenario: PathBuf,
        /// Overrides the scenario's seed.
        #[arg(long)]
        seed: Option<u64>,
        /// Overrides the scenario's number of peers.
        #[arg(long)]
        peers: Option<usize>,
        /// Where to write the SVG plot of convergence over time.
        #[arg(long, value_name = "FILE")]
        svg: Option<PathBuf>,
        /// Where to write a self-contained HTML report (no network needed to view it):
        /// convergence, bytes per peer by kind, delivery times and hops, rejections.
        #[arg(long, value_name = "FILE")]
        html: Option<PathBuf>,
    },
    /// Benchmarks.
    Bench {
        #[command(subcommand)]
        bench: Bench,
    },
}

#[derive(Debug, Subcommand)]
pub enum Bench {
    /// Two nodes on loopback TCP: sync N blocks from one to the other.
    Sync {
        /// Blocks to sync.
        #[arg(long, default_value_t = 100_000)]
        blocks: usize,
    },
    /// A node with a small capacity flooded by a peer for SECONDS: valid fresh feeds, then
    /// junk; prints the node's memory (idle, peak) and what it stored and refused.
    Flood {
        /// How long to flood.
        #[arg(long, default_value_t = 60)]
        seconds: u64,
        /// The flooded node's capacity (human units, e.g. 4MiB).
        #[arg(long, default_value = "4MiB", value_parser = store::parse_capacity)]
        capacity: u64,
    },
    /// Two in-memory peers holding FEEDS feeds, DIFFS of whose heads differ, reconciled by one
    /// round of the sync machine; prints its bytes and round trips beside what full heads cost.
    Reconcile {
        /// Feeds each peer holds.
        #[arg(long, default_value_t = 100_000)]
        feeds: usize,
        /// Differing heads, one case each (comma-separated).
        #[arg(long, value_delimiter = ',', default_value = "0,1,1000")]
        diffs: Vec<usize>,
    },
}
