//! The local API: a running node listens on a Unix socket inside its store directory, and the
//! other `blockend` commands talk to it there, one JSON request line in, JSON lines out.
//!
//! Unix socket paths are limited to about 108 bytes. When `DIR/node.sock` would be longer, the
//! node listens on `$TMPDIR/blockend-<hash of DIR>.sock` instead, says so on stderr, and writes
//! that path into `DIR/node.sock.path`, where clients look first.
//!
//! Requests (`op` names the verb):
//! `{"op":"append","body":<json>}`,
//! `{"op":"cat","author":"<hex>"|null,"follow":bool,"since":"<id>"|null,"by_feed":bool}`,
//! `{"op":"state","slice":"<name>"|null,"follow":bool}`, `{"op":"peers"}`, `{"op":"stats"}`,
//! `{"op":"follow","author":"<hex>"}`, `{"op":"unfollow","author":"<hex>"}`,
//! `{"op":"feeds"}`, `{"op":"id"}`, `{"op":"head","author":"<hex>"|null}`,
//! `{"op":"get","id":"<hex>"}`, `{"op":"export","author":"<hex>"|null}`,
//! `{"op":"import","blocks":["<hex>", ...]}` (see [`Request`]).
//! Every answer is JSON lines, ended by `{"done":true}` once it is whole; a failure is one
//! line `{"error":"..."}`.
//!
//! A `follow` answer ends only when the node goes away (the connection closes), which the
//! CLI reports as a failure. An `append` answer that never comes (the connection closed
//! first) leaves the client to read the store, read-only, for a block of its own feed with
//! that body stamped at or after the request, to say whether it was written.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use std::sync::Arc;

use blockend_kernel::{
    Block, BlockId, BlockStatus, FeedStanding, Kernel, Outcome, PublicKey, Report, Standing,
};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::broadcast::error::RecvError;

use crate::node::Handle;

/// The socket's file name inside the store directory.
pub const SOCKET: &str = "node.sock";
/// Where the socket's path is written when it lives outside the store directory.
pub const SOCKET_PATH_FILE: &str = "node.sock.path";
/// Longest socket path used as is (the kernel's limit is 108 bytes with the terminator).
const MAX_SOCKET_PATH: usize = 100;
/// The key of the line that ends every whole answer, `{"done": true}`: a client tells an
/// answer with no lines from a node that closed the connection before answering, and a whole
/// listing from one cut short.
pub const DONE: &str = "done";
/// Longest request line.
const MAX_REQUEST: usize = 16 * 1024 * 1024;

/// One request to a running node. A field this build does not know is refused (`bad
/// request`), so a newer client asking an older node for something it cannot do hears so
/// instead of getting a different answer. (Variants without fields are empty structs, not
/// unit variants: serde lets unknown fields through on unit variants of a tagged enum.)
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// Create a block with this body.
    Append {
        /// The body, as JSON.
        body: serde_json::Value,
    },
    /// Stored blocks ([`listing`]), then (with `follow`) new ones as they arrive.
    Cat {
        /// Only this author's feed (hex).
        author: Option<String>,
        /// Keep streaming.
        follow: bool,
        /// Only the blocks listed after this one (hex id).
        #[serde(default)]
        since: Option<String>,
        /// Feed by feed, in seq order, instead of by time.
        #[serde(default)]
        by_feed: bool,
    },
    /// The node's author and libp2p peer id.
    Id {},
    /// The newest block of every feed, or of one ([`head_json`]).
    Head {
        /// Only this author's feed (hex).
        author: Option<String>,
    },
    /// One block with its status ([`get_json`]).
    Get {
        /// The block id (hex).
        id: String,
    },
    /// The feeds as archive records (see [`crate::archive`]), one JSON line each:
    /// `{"about": totals}`, then `{"feed": "<hex of a feed run>"}` and
    /// `{"proof": ["<hex block>", "<hex block>"]}`, then `{"end": totals}`.
    Export {
        /// Only this author's feed (hex).
        author: Option<String>,
    },
    /// Blocks to take in as from a peer (one bounded batch of an import); answers
    /// `{"import": <ImportCounts>}`.
    Import {
        /// The blocks, each its hex encoding ([`Block::encode`]).
        blocks: Vec<String>,
    },
    /// A slice's state, then (with `follow`) each new state.
    State {
        /// The slice (the app's own by default).
        slice: Option<String>,
        /// Keep streaming.
        follow: bool,
    },
    /// Connected peers.
    Peers {},
    /// Counters.
    Stats {},
    /// Follow an author: its feed is kept first when the store is full.
    Follow {
        /// The author (hex).
        author: String,
    },
    /// Stop following an author.
    Unfollow {
        /// The author (hex).
        author: String,
    },
    /// Every feed in retention order, one line each ([`feed_json`]).
    Feeds {},
}

/// Where the socket for the store in `dir` lives: `DIR/node.sock`, or a short path in the
/// temp directory when that is too long.
pub fn socket_path(dir: &Path) -> PathBuf {
    let dir = std::path::absolute(dir).unwrap_or_else(|_| dir.to_owned());
    let inside = dir.join(SOCKET);
    if inside.as_os_str().len() <= MAX_SOCKET_PATH {
        return inside;
    }
    let hash = blake3::hash(dir.as_os_str().as_encoded_bytes()).to_hex();
    std::env::temp_dir().join(format!("blockend-{}.sock", &hash[..16]))
}

/// The socket a client should try for the store in `dir`.
fn client_socket_path(dir: &Path) -> PathBuf {
    match std::fs::read_to_string(dir.join(SOCKET_PATH_FILE)) {
        Ok(path) if !path.trim().is_empty() => PathBuf::from(path.trim()),
        _ => socket_path(dir),
    }
}

/// A block as the CLI prints it: the body as JSON when it is JSON, else as hex in `body_hex`;
/// `body` is null for a collected block.
pub fn block_json(block: &Block) -> serde_json::Value {
    let mut object = serde_json::json!({
        "id": block.id().to_hex(),
        "author": block.author().to_hex(),
        "parent": block.parent().map(|p| p.to_hex()),
        "seq": block.seq(),
        "time": block.time(),
    });
    let body = match block.body() {
        None => serde_json::Value::Null,
        Some(bytes) => match serde_json::from_slice::<serde_json::Value>(bytes) {
            Ok(value) => value,
            Err(_) => {
                object["body_hex"] = hex::encode(bytes).into();
                serde_json::Value::Null
            }
        },
    };
    object["body"] = body;
    object
}

/// A feed as `feeds` prints it: `author`, `length`, `bytes`, `rank` and `first_stored` (the
/// arrival number; both null for an evicted feed), `followed`, `status` (`own`, `kept`,
/// `frozen` or `evicted`), plus `frozen_at` for a frozen feed and `evicted_until` (ms since
/// the Unix epoch) for an evicted one.
pub fn feed_json(feed: &FeedStanding) -> serde_json::Value {
    let mut object = serde_json::json!({
        "author": feed.author.to_hex(),
        "length": feed.length,
        "bytes": feed.bytes,
        "rank": feed.rank,
        "first_stored": feed.arrival,
        "followed": feed.followed,
    });
    let status = match feed.standing {
        Standing::Own => "own",
        Standing::Kept => "kept",
        Standing::Frozen { at } => {
            object["frozen_at"] = at.into();
            "frozen"
        }
        Standing::Evicted { until } => {
            object["evicted_until"] = until.into();
            "evicted"
        }
        // A standing this build does not know yet: named, not hidden.
        _ => "other",
    };
    object["status"] = status.into();
    object
}

/// [`Kernel::retention`] for a kernel whose own feed is `own`'s, which may not be the
/// kernel's author (a kernel opened read-only without the secret key signs with a throwaway
/// one): `own`'s feed is listed first as the own feed, the others ranked after it as the
/// kernel ranks them.
pub fn feeds_as(kernel: &Kernel, own: PublicKey) -> Vec<FeedStanding> {
    let mut feeds = kernel.retention();
    if own == kernel.author() {
        return feeds;
    }
    if let Some(at) = feeds.iter().position(|feed| feed.author == own) {
        let mut feed = feeds.remove(at);
        if feed.standing == Standing::Kept {
            feed.standing = Standing::Own;
        }
        feeds.insert(0, feed);
        for (rank, feed) in feeds.iter_mut().enumerate() {
            if feed.rank.is_some() {
                feed.rank = Some(rank as u64);
            }
        }
    }
    feeds
}

/// What `follow` and `unfollow` print: the author, whether it is followed now, and whether
/// the verb changed that.
pub fn follow_json(author: &PublicKey, followed: bool, changed: bool) -> serde_json::Value {
    serde_json::json!({ "author": author.to_hex(), "followed": followed, "changed": changed })
}

/// Every stored block in feed order, of one author or of all.
pub fn blocks(kernel: &Kernel, author: Option<PublicKey>) -> Vec<Arc<Block>> {
    let authors: Vec<PublicKey> = match author {
        Some(author) => vec![author],
        None => kernel.heads().into_iter().map(|h| h.author).collect(),
    };
    authors
        .iter()
        .flat_map(|a| kernel.blocks_from(a, 0, usize::MAX, usize::MAX))
        .collect()
}

/// A slice state as `state` prints it, one shape for every app:
/// `{"slice": <name>, "state": <the slice's state>, "digest": <hex>, "set_hash": <hex>}`.
pub fn state_with_digests(
    kernel: &Kernel,
    slice: &str,
    state: serde_json::Value,
) -> serde_json::Value {
    let digest = kernel
        .digest_of(slice)
        .map(|d| d.to_hex())
        .unwrap_or_default();
    serde_json::json!({
        "slice": slice,
        "state": state,
        "digest": digest,
        "set_hash": kernel.set_hash().to_hex(),
    })
}

/// The order `cat` lists blocks in: by time, then author and seq (the canonical order), or
/// (`by_feed`) feed by feed in seq order. `since` keeps the blocks after that one in this
/// listing: a position in the listing, not in arrival order, so a block that arrives later
/// with an older time sorts before it and is not listed after it (`cat --follow` streams
/// arrivals as they come).
pub fn listing(
    kernel: &Kernel,
    author: Option<PublicKey>,
    by_feed: bool,
    since: Option<&BlockId>,
) -> Result<Vec<Arc<Block>>, String> {
    order(blocks(kernel, author), author.is_some(), by_feed, since)
}

/// [`listing`] of `blocks` (every block held, or one feed's when `one_feed`).
fn order(
    mut blocks: Vec<Arc<Block>>,
    one_feed: bool,
    by_feed: bool,
    since: Option<&BlockId>,
) -> Result<Vec<Arc<Block>>, String> {
    if !by_feed {
        blocks.sort_by_key(|b| (b.time(), b.author(), b.seq()));
    }
    if let Some(since) = since {
        let Some(at) = blocks.iter().position(|b| b.id() == *since) else {
            return Err(format!(
                "no block {} among the blocks listed here (cat --since needs a block this store holds{})",
                since.to_hex(),
                if one_feed { " in that feed" } else { "" }
            ));
        };
        blocks.drain(..=at);
    }
    Ok(blocks)
}

/// A block's standing as `get` and `head` print it: `status` is `counted`, `ignored` (no
/// slice wants it), `rejected` (with `slice` and `reason`), `collected` (expired or arrived
/// without its body: the header keeps the chain whole) or `waiting` (for its parent, or for
/// its time to come); `counted` is true for a counted block only.
pub fn status_fields(status: &BlockStatus, object: &mut serde_json::Value) {
    let name = match status {
        BlockStatus::Counted => "counted",
        BlockStatus::Ignored => "ignored",
        BlockStatus::Rejected { slice, reason } => {
            object["slice"] = slice.as_str().into();
            object["reason"] = reason.as_str().into();
            "rejected"
        }
        BlockStatus::Collected => "collected",
        BlockStatus::Waiting => "waiting",
        _ => "other",
    };
    object["status"] = name.into();
    object["counted"] = matches!(status, BlockStatus::Counted).into();
}

/// One block as `get` prints it: [`block_json`] plus [`status_fields`]; `None` when this
/// kernel holds no such block.
pub fn get_json(kernel: &Kernel, id: &BlockId) -> Option<serde_json::Value> {
    let block = kernel.held_block(id)?;
    let status = kernel.status(id)?;
    let mut object = block_json(&block);
    status_fields(&status, &mut object);
    Some(object)
}

/// The newest block of each feed (or of `author`'s), as `head` prints it: [`get_json`]'s
/// shape, plus `frozen_at` for a feed a fork froze. Empty for a feed not held.
pub fn head_json(kernel: &Kernel, author: Option<PublicKey>) -> Vec<serde_json::Value> {
    render_heads(heads_of(kernel, author))
}

/// A feed's newest block, its status, and the height its feed is frozen at.
pub type HeadEntry = (Arc<Block>, BlockStatus, Option<u64>);

/// What [`head_json`] shows, not rendered yet (cheap: a running node collects it on its
/// kernel thread and renders the bodies elsewhere).
pub fn heads_of(kernel: &Kernel, author: Option<PublicKey>) -> Vec<HeadEntry> {
    let heads = match author {
        Some(author) => kernel.head(&author).into_iter().collect(),
        None => kernel.heads(),
    };
    let frozen: std::collections::BTreeMap<PublicKey, u64> =
        kernel.frozen_feeds().into_iter().collect();
    heads
        .iter()
        .filter_map(|head| {
            let block = kernel.held_block(&head.id)?;
            let status = kernel.status(&head.id)?;
            Some((block, status, frozen.get(&head.author).copied()))
        })
        .collect()
}

/// [`head_json`] of entries from [`heads_of`].
pub fn render_heads(entries: Vec<HeadEntry>) -> Vec<serde_json::Value> {
    entries
        .into_iter()
        .map(|(block, status, frozen)| {
            let mut object = block_json(&block);
            status_fields(&status, &mut object);
            if let Some(at) = frozen {
                object["frozen_at"] = at.into();
            }
            object
        })
        .collect()
}

/// What an import did with its blocks, summed over its batches.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportCounts {
    /// Blocks read from the archive and offered.
    pub offered: u64,
    /// New, valid and counted.
    pub accepted: u64,
    /// Held already.
    pub already_had: u64,
    /// Valid and kept, but no slice wants them.
    pub ignored: u64,
    /// Valid and kept, but a slice rejects them in the current state.
    pub rejected: u64,
    /// Valid, kept as headers: expired, or in the archive without their bodies.
    pub collected: u64,
    /// Waiting for a parent the archive did not hold, or dated in the future. A running
    /// node keeps them until they can be placed; an import without a node loses them.
    pub waiting: u64,
    /// Invalid in themselves (signature, link): dropped.
    pub invalid: u64,
    /// Refused because their feed is frozen by a fork.
    pub frozen: u64,
    /// Forks found (each freezes its feed; the proof is kept).
    pub forks: u64,
    /// Refused because the store is full and their feed ranks last, or was evicted a short
    /// while ago, or evicted in this import to make room.
    pub over_capacity: u64,
}

impl ImportCounts {
    /// Counts the outcomes `report` gives the blocks `ids` (the ones offered).
    pub fn count(&mut self, ids: &[BlockId], report: &Report) {
        // A fork proof's first block is often in the feed run too: count each block once.
        let mut seen = BTreeSet::new();
        for id in ids {
            if !seen.insert(*id) {
                continue;
            }
            self.offered += 1;
            match report.outcome(id) {
                Some(Outcome::Accepted) => self.accepted += 1,
                Some(Outcome::Duplicate) => self.already_had += 1,
                Some(Outcome::Ignored) => self.ignored += 1,
                Some(Outcome::Rejected { .. }) => self.rejected += 1,
                Some(Outcome::Collected) => self.collected += 1,
                Some(Outcome::Invalid(_)) => self.invalid += 1,
                Some(Outcome::Frozen { .. }) => self.frozen += 1,
                Some(Outcome::Fork { .. }) => self.forks += 1,
                Some(Outcome::OverCapacity | Outcome::Tombstoned { .. } | Outcome::Evicted) => {
                    self.over_capacity += 1
                }
                // Orphans, future blocks, deferred ones, and anything newer.
                _ => self.waiting += 1,
            }
        }
    }

    /// Adds another batch's counts.
    pub fn add(&mut self, other: &ImportCounts) {
        self.offered += other.offered;
        self.accepted += other.accepted;
        self.already_had += other.already_had;
        self.ignored += other.ignored;
        self.rejected += other.rejected;
        self.collected += other.collected;
        self.waiting += other.waiting;
        self.invalid += other.invalid;
        self.frozen += other.frozen;
        self.forks += other.forks;
        self.over_capacity += other.over_capacity;
    }
}

/// Parses a block id given in hex.
///
/// # Errors
/// A one-line message when it is not 64 hex digits.
pub fn parse_block_id(hex_id: &str) -> Result<BlockId, String> {
    hex32(hex_id, "block id").map(BlockId)
}

/// Parses an author given in hex.
///
/// # Errors
/// A one-line message when it is not 64 hex digits.
pub fn parse_author(hex_key: &str) -> Result<PublicKey, String> {
    hex32(hex_key, "author").map(PublicKey)
}

/// An optional author given in hex (a `--author` flag, a request's `author`).
///
/// # Errors
/// As [`parse_author`].
pub fn parse_optional_author(hex_key: Option<&str>) -> Result<Option<PublicKey>, String> {
    hex_key.map(parse_author).transpose()
}

/// 32 bytes given as 64 hex digits; `what` names them in the error.
fn hex32(text: &str, what: &str) -> Result<[u8; 32], String> {
    let bytes = hex::decode(text).map_err(|e| format!("{what} {text:?} is not hex: {e}"))?;
    bytes
        .try_into()
        .map_err(|_| format!("{what} {text:?} is not 32 bytes (64 hex digits)"))
}

/// The server side: listens in the store directory until dropped.
pub struct Server {
    path: PathBuf,
    path_file: Option<PathBuf>,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    /// Binds the socket for the store in `dir` and serves `handle` on it.
    ///
    /// # Errors
    /// The socket cannot be bound.
    pub fn start(dir: &Path, handle: Handle) -> std::io::Result<Server> {
        let path = socket_path(dir);
        let mut path_file = None;
        if !path.starts_with(std::path::absolute(dir)?) {
            tracing::warn!(
                "the socket path in {} is over {MAX_SOCKET_PATH} bytes; listening on {} instead",
                dir.display(),
                path.display()
            );
            let file = dir.join(SOCKET_PATH_FILE);
            std::fs::write(&file, path.as_os_str().as_encoded_bytes())?;
            path_file = Some(file);
        }
        // A socket file left by a node that crashed: the store lock proves no node runs.
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path)?;
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let handle = handle.clone();
                tokio::spawn(async move {
                    if let Err(error) = serve(stream, handle).await {
                        tracing::debug!(%error, "local API connection ended");
                    }
                });
            }
        });
        Ok(Server {
            path,
            path_file,
            task,
        })
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
        let _ = std::fs::remove_file(&self.path);
        if let Some(file) = &self.path_file {
            let _ = std::fs::remove_file(file);
        }
    }
}

async fn write_line<W: AsyncWrite + Unpin>(
    out: &mut W,
    value: &impl Serialize,
) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(value).map_err(std::io::Error::other)?;
    line.push(b'\n');
    out.write_all(&line).await
}

async fn serve(stream: UnixStream, handle: Handle) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read).take(MAX_REQUEST as u64);
    let mut line = String::new();
    reader.read_line(&mut line).await?;
    let request: Request = match serde_json::from_str(&line) {
        Ok(request) => request,
        Err(e) => {
            return write_line(
                &mut write,
                &serde_json::json!({ "error": format!(
                    "bad request: {e} (this node runs blockend {}: restart it with this blockend if it is older)",
                    env!("CARGO_PKG_VERSION")
                ) }),
            )
            .await;
        }
    };
    match answer(request, &handle, &mut write).await {
        Ok(()) => {
            write_line(&mut write, &serde_json::json!({ DONE: true })).await?;
            write.flush().await
        }
        Err(Failure::Io(e)) => Err(e),
        Err(Failure::Node(message)) => {
            write_line(&mut write, &serde_json::json!({ "error": message })).await
        }
    }
}

enum Failure {
    Io(std::io::Error),
    Node(String),
}

impl From<std::io::Error> for Failure {
    fn from(e: std::io::Error) -> Self {
        Self::Io(e)
    }
}

impl From<crate::node::Error> for Failure {
    fn from(e: crate::node::Error) -> Self {
        Self::Node(e.to_string())
    }
}

async fn answer<W: AsyncWrite + Unpin>(
    request: Request,
    handle: &Handle,
    out: &mut W,
) -> Result<(), Failure> {
    match request {
        Request::Append { body } => {
            let bytes = serde_json::to_vec(&body).map_err(|e| Failure::Node(e.to_string()))?;
            let block = handle.append(bytes).await?;
            write_line(out, &block_json(&block)).await?;
        }
        Request::Cat {
            author,
            follow,
            since,
            by_feed,
        } => {
            let author = parse_optional_author(author.as_deref()).map_err(Failure::Node)?;
            let since = since
                .as_deref()
                .map(parse_block_id)
                .transpose()
                .map_err(Failure::Node)?;
            // Subscribe first, so nothing falls between the listing and the stream.
            let mut fresh = handle.subscribe_blocks();
            // The kernel thread only collects the blocks; sorting happens here.
            let held = handle.read(move |kernel| blocks(kernel, author)).await?;
            let mut seen: BTreeSet<BlockId> = held.iter().map(|b| b.id()).collect();
            let listed = order(held, author.is_some(), by_feed, since.as_ref());
            for block in listed.map_err(Failure::Node)? {
                write_line(out, &block_json(&block)).await?;
            }
            out.flush().await?;
            if !follow {
                return Ok(());
            }
            loop {
                match fresh.recv().await {
                    Ok(block) => {
                        if author.is_some_and(|a| a != block.author()) || !seen.insert(block.id()) {
                            continue;
                        }
                        write_line(out, &block_json(&block)).await?;
                        out.flush().await?;
                    }
                    Err(RecvError::Lagged(n)) => {
                        write_line(out, &serde_json::json!({ "lagged": n })).await?;
                    }
                    Err(RecvError::Closed) => break,
                }
            }
        }
        Request::State { slice, follow } => {
            let mut changes = handle.subscribe_changes();
            let mut last = handle.state(slice.clone()).await?;
            write_line(out, &last).await?;
            out.flush().await?;
            if !follow {
                return Ok(());
            }
            loop {
                if changes.changed().await.is_err() {
                    break;
                }
                let state = handle.state(slice.clone()).await?;
                if state != last {
                    write_line(out, &state).await?;
                    out.flush().await?;
                    last = state;
                }
            }
        }
        Request::Peers {} => {
            for peer in handle.peers().await? {
                write_line(out, &peer).await?;
            }
        }
        Request::Stats {} => write_line(out, &handle.stats().await?).await?,
        Request::Follow { author } => {
            let key = parse_author(&author).map_err(Failure::Node)?;
            let changed = handle.follow(key).await?;
            write_line(out, &follow_json(&key, true, changed)).await?;
        }
        Request::Unfollow { author } => {
            let key = parse_author(&author).map_err(Failure::Node)?;
            let changed = handle.unfollow(key).await?;
            write_line(out, &follow_json(&key, false, changed)).await?;
        }
        Request::Id {} => {
            let line = serde_json::json!({
                "author": handle.author().to_hex(),
                "peer": handle.peer_id().to_base58(),
            });
            write_line(out, &line).await?;
        }
        Request::Head { author } => {
            let author = parse_optional_author(author.as_deref()).map_err(Failure::Node)?;
            let entries = handle.read(move |kernel| heads_of(kernel, author)).await?;
            for line in render_heads(entries) {
                write_line(out, &line).await?;
            }
        }
        Request::Get { id } => {
            let id = parse_block_id(&id).map_err(Failure::Node)?;
            match handle.read(move |kernel| get_json(kernel, &id)).await? {
                Some(line) => write_line(out, &line).await?,
                None => return Err(Failure::Node(no_block(&id))),
            }
        }
        Request::Export { author } => {
            let author = parse_optional_author(author.as_deref()).map_err(Failure::Node)?;
            let mut cursor = handle
                .read(move |kernel| crate::archive::ExportCursor::new(kernel, author))
                .await?;
            write_line(out, &serde_json::json!({ "about": cursor.about() })).await?;
            loop {
                // One bounded read of the kernel per record, the cursor going there and back.
                let (moved, record) = handle
                    .read(move |kernel| {
                        let record = cursor.next(kernel);
                        (cursor, record)
                    })
                    .await?;
                cursor = moved;
                let line = match record {
                    None => break,
                    Some(crate::archive::Record::Feed(run)) => {
                        serde_json::json!({ "feed": hex::encode(run.encode()) })
                    }
                    Some(crate::archive::Record::Proof(pair)) => {
                        let (a, b) = *pair;
                        serde_json::json!({ "proof": [hex::encode(a.encode()), hex::encode(b.encode())] })
                    }
                };
                write_line(out, &line).await?;
            }
            write_line(out, &serde_json::json!({ "end": cursor.written() })).await?;
        }
        Request::Import { blocks } => {
            let mut decoded = Vec::with_capacity(blocks.len());
            for (n, text) in blocks.iter().enumerate() {
                let block = hex::decode(text)
                    .map_err(|e| e.to_string())
                    .and_then(|bytes| Block::decode(&bytes).map_err(|e| e.to_string()))
                    .map_err(|e| Failure::Node(format!("block {n} of the batch: {e}")))?;
                decoded.push(block);
            }
            let ids: Vec<BlockId> = decoded.iter().map(Block::id).collect();
            let report = handle.import(decoded).await?;
            let mut counts = ImportCounts::default();
            counts.count(&ids, &report);
            write_line(out, &serde_json::json!({ "import": counts })).await?;
        }
        Request::Feeds {} => {
            for feed in handle.feeds().await? {
                write_line(out, &feed_json(&feed)).await?;
            }
        }
    }
    out.flush().await?;
    Ok(())
}

/// The error for a block id this kernel holds nowhere.
pub fn no_block(id: &BlockId) -> String {
    format!(
        "no block {} here (never received, evicted with its feed, or dropped as invalid)",
        id.to_hex()
    )
}

/// The client side: connects to the node running on the store in `dir`, if any.
pub struct Client {
    stream: UnixStream,
}

/// What a request to a running node yields: its lines, or the node's one-line error.
pub type Lines = tokio::io::Lines<BufReader<tokio::net::unix::OwnedReadHalf>>;

impl Client {
    /// Connects to the node on the store in `dir`; `None` when no node runs there.
    pub async fn connect(dir: &Path) -> Option<Client> {
        let path = client_socket_path(dir);
        UnixStream::connect(&path)
            .await
            .ok()
            .map(|stream| Client { stream })
    }

    /// Sends one request; returns the answer's lines.
    ///
    /// # Errors
    /// The socket failed.
    pub async fn request(self, request: &Request) -> std::io::Result<Lines> {
        let (read, mut write) = self.stream.into_split();
        write_line(&mut write, request).await?;
        write.flush().await?;
        Ok(BufReader::new(read).lines())
    }
}
