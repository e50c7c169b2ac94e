//! `chat`: messages in named rooms, each with a time-to-live. Bodies are
//! `{"room": "<name>", "text": "<text>", "ttl_ms": <n>}`; a message expires `ttl_ms` after its
//! block's time and is then garbage-collected (see `Kernel::gc`). The state is rooms -> their
//! live messages, ordered by (time, author, seq).
//!
//! Consistency: commutative. Messages are kept sorted by their canonical key, so any arrival
//! order gives the same state; expiry is a pure function of the block.
//!
//! ```
//! use blockend_kernel::{Application, Kernel, ManualClock, Registry};
//! use blockend_reducers::Chat;
//!
//! struct App;
//! impl Application for App {
//!     fn register(&self, slices: &mut Registry) { slices.add(Chat); }
//! }
//!
//! let clock = ManualClock::new(1_000);
//! let mut kernel = Kernel::builder(&App).with_clock(clock.clone()).open()?;
//! kernel.create_block(br#"{"room": "lobby", "text": "hello", "ttl_ms": 500}"#.to_vec())?;
//! assert_eq!(kernel.state::<Chat>().unwrap().rooms["lobby"][0].text, "hello");
//! kernel.gc(1_500)?; // the message expires at 1,500
//! assert!(kernel.state::<Chat>().unwrap().rooms.is_empty());
//! # Ok::<(), blockend_kernel::Error>(())
//! ```

use std::collections::BTreeMap;

use blockend_kernel::{Context, Slice, Verdict};
use serde::{Deserialize, Serialize};

/// Longest time-to-live accepted: 30 days.
pub const MAX_TTL_MS: u64 = 30 * 24 * 60 * 60 * 1000;
/// Longest room name, in bytes.
pub const MAX_ROOM_BYTES: usize = 64;

/// A chat block's body.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Post {
    /// The room.
    pub room: String,
    /// The message.
    pub text: String,
    /// How long the message lives, in ms.
    pub ttl_ms: u64,
}

/// A message as the state holds it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// Block time, ms since the Unix epoch.
    pub time: u64,
    /// Author (hex key).
    pub author: String,
    /// Seq in the author's feed.
    pub seq: u64,
    /// The text.
    pub text: String,
    /// When it expires.
    pub expires_at: u64,
}

/// Rooms and their messages.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rooms {
    /// Room name -> messages in (time, author, seq) order.
    pub rooms: BTreeMap<String, Vec<Message>>,
}

/// The chat slice.
#[derive(Clone, Copy, Debug, Default)]
pub struct Chat;

fn post(ctx: &Context<'_>) -> Option<Post> {
    serde_json::from_slice(ctx.body()).ok()
}

/// The room name's length, as a rejection reason says it.
fn room_length(room: &str) -> String {
    match room.len() {
        0 => "the room name is empty".to_owned(),
        n => format!("the room name is {n} bytes long"),
    }
}

impl Slice for Chat {
    type State = Rooms;

    fn name(&self) -> &str {
        "chat"
    }

    fn initial(&self) -> Rooms {
        Rooms::default()
    }

    fn filter(&self, ctx: &Context<'_>, _: &Rooms) -> Verdict {
        let Some(post) = post(ctx) else {
            return Verdict::Ignore;
        };
        if post.room.is_empty() || post.room.len() > MAX_ROOM_BYTES {
            return Verdict::Reject(format!(
                "{}; a room name is 1 to {MAX_ROOM_BYTES} bytes",
                room_length(&post.room)
            ));
        }
        if post.ttl_ms == 0 || post.ttl_ms > MAX_TTL_MS {
            return Verdict::Reject(format!(
                "ttl_ms {} is out of range; a message lives 1 to {MAX_TTL_MS} ms ({} days)",
                post.ttl_ms,
                MAX_TTL_MS / (24 * 60 * 60 * 1000)
            ));
        }
        Verdict::Accept
    }

    fn reduce(&self, ctx: &Context<'_>, state: &mut Rooms) {
        let Some(post) = post(ctx) else {
            return;
        };
        let message = Message {
            time: ctx.time(),
            author: ctx.author().to_hex(),
            seq: ctx.seq(),
            text: post.text,
            expires_at: ctx.time().saturating_add(post.ttl_ms),
        };
        let room = state.rooms.entry(post.room).or_default();
        let key = |m: &Message| (m.time, m.author.clone(), m.seq);
        let at = room.partition_point(|m| key(m) < key(&message));
        room.insert(at, message);
    }

    fn expires_at(&self, ctx: &Context<'_>) -> Option<u64> {
        post(ctx).map(|p| ctx.time().saturating_add(p.ttl_ms.min(MAX_TTL_MS)))
    }

    fn expects(&self) -> Option<String> {
        Some(format!(
            r#"{{"room": "<1-{MAX_ROOM_BYTES} bytes>", "text": "<text>", "ttl_ms": <1..{MAX_TTL_MS}>}}"#
        ))
    }

    fn commutative(&self) -> bool {
        true
    }
}
