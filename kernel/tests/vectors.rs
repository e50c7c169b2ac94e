//! Known answers, so the wire format cannot drift silently, and the acceptance rules that
//! guard it: weak keys, forged copies of an honest block, and the fork freeze (DESIGN rule 9).
//!
//! The vectors live in `tests/vectors/feed-v1.txt`. The test compares against the file and
//! never rewrites it unless `BLOCKEND_BLESS=1` is set.

use std::path::PathBuf;

use blockend_kernel::store::{Batch, BlockStore};
use blockend_kernel::{
    Application, Block, BlockError, BlockId, Context, Feed, Header, Identity, Kernel, ManualClock,
    MemoryStore, Outcome, PublicKey, Registry, Signature, Slice, Verdict,
};

const NOW: u64 = 1_700_000_100_000;

/// Counts the blocks that count: commutative, so the kernel applies blocks as they arrive.
struct Counter;
impl Slice for Counter {
    type State = u64;
    fn name(&self) -> &str {
        "counter"
    }
    fn initial(&self) -> u64 {
        0
    }
    fn filter(&self, _: &Context<'_>, _: &u64) -> Verdict {
        Verdict::Accept
    }
    fn reduce(&self, _: &Context<'_>, n: &mut u64) {
        *n += 1;
    }
    fn commutative(&self) -> bool {
        true
    }
}

struct App;
impl Application for App {
    fn register(&self, slices: &mut Registry) {
        slices.add(Counter);
    }
}

/// A kernel with its own identity (not the one whose blocks it receives) and a clock at NOW.
fn kernel() -> Kernel {
    kernel_on(MemoryStore::new())
}

fn kernel_on(store: MemoryStore) -> Kernel {
    Kernel::builder(&App)
        .with_identity(Identity::from_secret([99; 32]))
        .with_clock(ManualClock::new(NOW))
        .with_store(store)
        .open()
        .expect("a memory kernel opens")
}

/// A new kernel opened on a copy of what `kernel` has stored.
fn reopen(kernel: &Kernel) -> Kernel {
    let mut store = MemoryStore::new();
    let put = kernel
        .store()
        .blocks()
        .expect("a memory store does not fail");
    store
        .commit(Batch {
            put,
            ..Batch::default()
        })
        .expect("a memory store does not fail");
    kernel_on(store)
}

fn outcomes(kernel: &mut Kernel, blocks: &[&Block]) -> Vec<Outcome> {
    let report = kernel
        .dispatch(blocks.iter().map(|b| (*b).clone()))
        .expect("a memory store does not fail");
    report.outcomes().iter().map(|(_, o)| o.clone()).collect()
}

// ---------------------------------------------------------------------------------------------
// known-answer vectors

fn vector_feed() -> Feed {
    let identity = Identity::from_secret([7u8; 32]);
    let mut feed = Feed::new();
    feed.append(&identity, b"genesis".to_vec(), 1_700_000_000_000);
    feed.append(&identity, b"hello, blockend".to_vec(), 1_700_000_001_500);
    feed.append(&identity, Vec::new(), 1_700_000_090_000);
    feed
}

/// `name: hex` lines, in a fixed order.
fn vectors_of(feed: &Feed) -> Vec<(String, String)> {
    let mut lines = vec![(
        "author".to_owned(),
        feed.first().expect("non-empty").author().to_hex(),
    )];
    for (i, block) in feed.blocks().iter().enumerate() {
        lines.push((format!("block{i}.id"), block.id().to_hex()));
        lines.push((format!("block{i}.encoded"), hex::encode(block.encode())));
    }
    lines.push(("feed.encoded".to_owned(), hex::encode(feed.encode())));
    lines
}

fn render(lines: &[(String, String)]) -> String {
    let mut out = String::from(
        "# Known-answer vectors of the v1 wire format: Identity::from_secret([7; 32]) signs\n\
         # b\"genesis\" at 1700000000000, b\"hello, blockend\" at 1700000001500 and an empty\n\
         # body at 1700000090000. Regenerate only for a deliberate format change:\n\
         # BLOCKEND_BLESS=1 cargo test -p blockend-kernel --test vectors\n",
    );
    for (name, hex) in lines {
        out.push_str(&format!("{name}: {hex}\n"));
    }
    out
}

fn parse(text: &str) -> Vec<(String, String)> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (name, hex) = l.split_once(':').expect("`name: hex` lines");
            (name.trim().to_owned(), hex.trim().to_owned())
        })
        .collect()
}

fn vectors_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/vectors/feed-v1.txt")
}

/// LEB128, as postcard writes integers.
fn varint(mut n: u64, out: &mut Vec<u8>) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

/// The header's hashed form, written by hand from the layout in `block/encode.rs`.
fn header_by_hand(block: &Block) -> Vec<u8> {
    let mut out = vec![1];
    out.extend_from_slice(block.author().as_bytes());
    match block.parent() {
        None => out.push(0),
        Some(parent) => {
            out.push(1);
            out.extend_from_slice(parent.as_bytes());
        }
    }
    varint(block.seq(), &mut out);
    varint(block.time(), &mut out);
    let body = block.body().expect("inline");
    varint(body.len() as u64, &mut out);
    out.extend_from_slice(blake3::hash(body).as_bytes());
    out
}

/// signature[64] | 0 (inline) | len | bytes.
fn signature_and_body_by_hand(block: &Block, out: &mut Vec<u8>) {
    out.extend_from_slice(&block.signature().0);
    let body = block.body().expect("inline");
    out.push(0);
    varint(body.len() as u64, out);
    out.extend_from_slice(body);
}

/// The stored form, written by hand: the header's fields up to time, then signature and body.
fn block_by_hand(block: &Block) -> Vec<u8> {
    let mut out = vec![1];
    out.extend_from_slice(block.author().as_bytes());
    match block.parent() {
        None => out.push(0),
        Some(parent) => {
            out.push(1);
            out.extend_from_slice(parent.as_bytes());
        }
    }
    varint(block.seq(), &mut out);
    varint(block.time(), &mut out);
    signature_and_body_by_hand(block, &mut out);
    out
}

/// The feed form, written by hand: count, the first block without its version byte, then
/// per block `author: option` (none when repeated), time delta, signature and body.
fn feed_by_hand(feed: &Feed) -> Vec<u8> {
    let mut out = vec![1];
    varint(feed.len() as u64, &mut out);
    let mut prev: Option<&Block> = None;
    for block in feed.blocks() {
        match prev {
            None => out.extend_from_slice(&block_by_hand(block)[1..]),
            Some(p) => {
                if p.author() == block.author() {
                    out.push(0);
                } else {
                    out.push(1);
                    out.extend_from_slice(block.author().as_bytes());
                }
                varint(block.time() - p.time(), &mut out);
                signature_and_body_by_hand(block, &mut out);
            }
        }
        prev = Some(block);
    }
    out
}

#[test]
fn wire_format_follows_the_documented_layout() {
    use ed25519_dalek::Verifier;
    let feed = vector_feed();
    let key = ed25519_dalek::VerifyingKey::from_bytes(feed.blocks()[0].author().as_bytes())
        .expect("a valid key");
    for block in feed.blocks() {
        assert_eq!(
            block.id().0,
            *blake3::hash(&header_by_hand(block)).as_bytes()
        );
        assert_eq!(block.encode(), block_by_hand(block));
        let signature = ed25519_dalek::Signature::from_bytes(&block.signature().0);
        assert!(key.verify(block.id().as_bytes(), &signature).is_ok());
    }
    assert_eq!(feed.encode(), feed_by_hand(&feed));
}

#[test]
fn wire_format_matches_the_checked_in_vectors() {
    let feed = vector_feed();
    let actual = vectors_of(&feed);
    let path = vectors_path();
    if std::env::var_os("BLOCKEND_BLESS").is_some_and(|v| v == "1") {
        std::fs::create_dir_all(path.parent().expect("has a parent")).expect("create dir");
        std::fs::write(&path, render(&actual)).expect("write vectors");
        println!("wrote {}", path.display());
    }
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "cannot read {} ({e}); create it once with \
             `BLOCKEND_BLESS=1 cargo test -p blockend-kernel --test vectors`",
            path.display()
        )
    });
    let expected = parse(&text);
    let names = |v: &[(String, String)]| v.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
    assert_eq!(names(&expected), names(&actual), "vector names");
    for ((name, want), (_, got)) in expected.iter().zip(&actual) {
        assert_eq!(got, want, "{name} drifted from {}", path.display());
    }

    // The checked-in bytes decode back to the same blocks and feed, and verify.
    let get = |name: &str| {
        let hex = &expected.iter().find(|(n, _)| n == name).expect("present").1;
        hex::decode(hex).expect("hex")
    };
    for (i, block) in feed.blocks().iter().enumerate() {
        let decoded = Block::decode(&get(&format!("block{i}.encoded"))).expect("decodes");
        assert_eq!(&decoded, block);
        assert_eq!(decoded.verify(), Ok(()));
    }
    let decoded = Feed::decode(&get("feed.encoded")).expect("decodes");
    assert_eq!(decoded, feed);
    assert_eq!(decoded.verify(), Ok(()));
}

// ---------------------------------------------------------------------------------------------
// weak keys

/// A genesis block by `author` with `signature`, as a forger would assemble it.
fn forged_genesis(author: [u8; 32], signature: [u8; 64], body: &[u8]) -> Block {
    let header = Header {
        author: PublicKey(author),
        parent: None,
        seq: 0,
        time: NOW - 1_000,
        body_len: u32::try_from(body.len()).expect("small"),
        body_hash: *blake3::hash(body).as_bytes(),
    };
    Block::from_parts(header, Signature(signature), Some(body.to_vec()))
        .expect("the body matches the header")
}

/// Whether ed25519-dalek's lenient (non-strict) `verify` accepts the block's signature.
fn lenient_verify(block: &Block) -> bool {
    use ed25519_dalek::Verifier;
    let Ok(key) = ed25519_dalek::VerifyingKey::from_bytes(block.author().as_bytes()) else {
        return false;
    };
    let signature = ed25519_dalek::Signature::from_bytes(&block.signature().0);
    key.verify(block.id().as_bytes(), &signature).is_ok()
}

fn identity_point() -> [u8; 32] {
    let mut point = [0u8; 32];
    point[0] = 1;
    point
}

/// R = the identity point, s = 0.
fn trivial_signature() -> [u8; 64] {
    let mut signature = [0u8; 64];
    signature[..32].copy_from_slice(&identity_point());
    signature
}

fn assert_refused_as_weak(block: &Block) {
    assert_eq!(block.verify(), Err(BlockError::WeakKey));
    let mut kernel = kernel();
    let report = kernel.dispatch([block.clone()]).expect("dispatch");
    assert_eq!(
        report.outcome(&block.id()),
        Some(&Outcome::Invalid(BlockError::WeakKey))
    );
    assert!(!kernel.contains(&block.id()));
    assert_eq!(kernel.stats().blocks, 0);
    assert!(kernel.store().is_empty(), "nothing is stored");
    assert_eq!(kernel.state::<Counter>(), Some(&0));
    assert!(kernel.heads().is_empty());
}

#[test]
fn identity_point_key_is_refused_though_lenient_verify_accepts_it() {
    let block = forged_genesis(identity_point(), trivial_signature(), b"anything at all");
    // With A = identity and s = 0, [s]B - [k]A = identity = R for every message.
    assert!(
        lenient_verify(&block),
        "ed25519-dalek's non-strict verify accepts the trivial signature"
    );
    assert_refused_as_weak(&block);
}

#[test]
fn all_zero_key_is_refused_though_lenient_verify_accepts_it() {
    // [0; 32] decompresses to a point of order 4, so R = identity, s = 0 passes the lenient
    // check whenever the challenge k is a multiple of 4: find a body for which it is.
    let block = (0u8..=255)
        .map(|i| forged_genesis([0; 32], trivial_signature(), &[i]))
        .find(lenient_verify)
        .expect("about one body in four passes the lenient check");
    assert_refused_as_weak(&block);
}

// ---------------------------------------------------------------------------------------------
// forged copies

/// An honest genesis by seed 3, and a copy with the same header and a broken signature.
fn honest_and_forged() -> (Block, Block) {
    let honest = Block::sign(
        &Identity::from_secret([3; 32]),
        None,
        NOW - 1_000,
        b"honest".to_vec(),
    );
    let mut signature = honest.signature().0;
    signature[5] ^= 0x40;
    let forged = Block::from_parts(
        honest.header().clone(),
        Signature(signature),
        honest.body().map(<[u8]>::to_vec),
    )
    .expect("the body matches the header");
    assert_eq!(
        forged.id(),
        honest.id(),
        "the copy shares the honest header"
    );
    assert_ne!(forged.fingerprint(), honest.fingerprint());
    (honest, forged)
}

#[test]
fn forged_copy_first_does_not_shadow_the_honest_block() {
    let (honest, forged) = honest_and_forged();
    let mut kernel = kernel();
    assert_eq!(
        outcomes(&mut kernel, &[&forged]),
        [Outcome::Invalid(BlockError::BadSignature)]
    );
    assert!(!kernel.contains(&honest.id()));
    // Resending the forged copy is refused from the cache.
    assert_eq!(
        outcomes(&mut kernel, &[&forged]),
        [Outcome::Invalid(BlockError::BadSignature)]
    );
    assert_eq!(outcomes(&mut kernel, &[&honest]), [Outcome::Accepted]);
    assert!(kernel.counts(&honest.id()));
    assert_eq!(kernel.state::<Counter>(), Some(&1));
    assert_eq!(
        kernel.block(&honest.id()).map(|b| *b.signature()),
        Some(*honest.signature())
    );
}

#[test]
fn forged_copy_after_the_honest_block_is_invalid_not_a_duplicate() {
    let (honest, forged) = honest_and_forged();
    let mut kernel = kernel();
    assert_eq!(outcomes(&mut kernel, &[&honest]), [Outcome::Accepted]);
    let (set_hash, digests, stats) = (kernel.set_hash(), kernel.digests(), kernel.stats());

    // A copy with a known id but another signature is checked, found forged, and blamed:
    // never passed as a duplicate (which would let it be relayed for free).
    assert_eq!(
        outcomes(&mut kernel, &[&forged]),
        [Outcome::Invalid(BlockError::BadSignature)]
    );
    assert_eq!(kernel.stats().verified, stats.verified + 1);
    assert_eq!(
        outcomes(&mut kernel, &[&forged]),
        [Outcome::Invalid(BlockError::BadSignature)]
    );
    assert_eq!(
        kernel.stats().verified,
        stats.verified + 1,
        "a resent forgery costs a lookup, not a second signature check"
    );
    assert_eq!(kernel.set_hash(), set_hash);
    assert_eq!(kernel.digests(), digests);
    // The honest copy again is a duplicate and costs no check.
    assert_eq!(outcomes(&mut kernel, &[&honest]), [Outcome::Duplicate]);
    assert_eq!(kernel.stats().verified, stats.verified + 1);
    assert_eq!(
        kernel.block(&honest.id()).map(|b| *b.signature()),
        Some(*honest.signature()),
        "the stored block keeps the honest signature"
    );
}

#[test]
fn forged_copy_in_the_same_dispatch_does_not_shadow_the_honest_block() {
    let (honest, forged) = honest_and_forged();
    let mut kernel = kernel();
    let mut outcomes = outcomes(&mut kernel, &[&forged, &honest]);
    // Both copies share an id, so the report cannot tell them apart; compare as a multiset.
    outcomes.sort_by_key(|o| format!("{o:?}"));
    assert_eq!(
        outcomes,
        [
            Outcome::Accepted,
            Outcome::Invalid(BlockError::BadSignature)
        ]
    );
    assert!(kernel.counts(&honest.id()));
    assert_eq!(kernel.state::<Counter>(), Some(&1));
}

#[test]
fn copy_with_the_honest_header_and_signature_but_another_body_is_refused() {
    // The header commits to the body by hash; a copy carrying other bytes is not the block
    // its author signed, and must neither count nor shadow the honest block.
    let (honest, _) = honest_and_forged();
    let other = Block::from_parts(
        honest.header().clone(),
        *honest.signature(),
        Some(b"forged".to_vec()),
    );
    assert_eq!(other, Err(BlockError::BodyMismatch));
    // On the wire the body hash is recomputed, so swapping the body changes the id and the
    // signature no longer verifies.
    let mut bytes = honest.encode();
    let at = bytes.len() - 1;
    bytes[at] ^= 1;
    let tampered = Block::decode(&bytes).expect("still a block");
    assert_ne!(tampered.id(), honest.id());
    let mut kernel = kernel();
    let first = outcomes(&mut kernel, &[&tampered]);
    assert_eq!(first, [Outcome::Invalid(BlockError::BadSignature)]);
    assert_eq!(outcomes(&mut kernel, &[&honest]), [Outcome::Accepted]);
    assert_eq!(
        kernel
            .block(&honest.id())
            .and_then(|b| b.body().map(<[u8]>::to_vec)),
        Some(b"honest".to_vec())
    );
}

// ---------------------------------------------------------------------------------------------
// fork freeze (DESIGN rule 9)

struct Fork {
    author: PublicKey,
    genesis: Block,
    a1: Block,
    a2: Block,
    b1: Block,
}

fn fork() -> Fork {
    let identity = Identity::from_secret([5; 32]);
    let t = NOW - 10_000;
    let genesis = Block::sign(&identity, None, t, b"g".to_vec());
    let parent = Some((genesis.id(), genesis.seq(), genesis.time()));
    let a1 = Block::sign(&identity, parent, t + 1, b"a1".to_vec());
    let a2 = Block::sign(
        &identity,
        Some((a1.id(), 1, a1.time())),
        t + 2,
        b"a2".to_vec(),
    );
    let b1 = Block::sign(&identity, parent, t + 1, b"b1".to_vec());
    assert_eq!((a1.seq(), b1.seq()), (1, 1));
    assert_ne!(a1.id(), b1.id());
    Fork {
        author: identity.public(),
        genesis,
        a1,
        a2,
        b1,
    }
}

fn proof_ids(kernel: &Kernel, author: &PublicKey) -> Option<[BlockId; 2]> {
    let (x, y) = kernel.fork_proof(author)?;
    let mut ids = [x.id(), y.id()];
    ids.sort();
    Some(ids)
}

#[test]
fn fork_freezes_the_feed_at_the_shared_prefix_in_any_arrival_order() {
    let f = fork();
    let mut pair = [f.a1.id(), f.b1.id()];
    pair.sort();

    // Genesis, A1, A2, then B1.
    let mut first = kernel();
    assert_eq!(
        outcomes(&mut first, &[&f.genesis, &f.a1, &f.a2]),
        [Outcome::Accepted, Outcome::Accepted, Outcome::Accepted]
    );
    assert_eq!(first.state::<Counter>(), Some(&3));
    let report = first.dispatch([f.b1.clone()]).expect("dispatch");
    assert_eq!(report.outcome(&f.b1.id()), Some(&Outcome::Fork { seq: 1 }));
    let mut spread: Vec<BlockId> = report.proofs.iter().map(|b| b.id()).collect();
    spread.sort();
    assert_eq!(spread, pair, "the report carries both blocks as proof");

    assert_eq!(first.frozen_feeds(), [(f.author, 1)]);
    let head = first.head(&f.author).expect("genesis still counts");
    assert_eq!((head.seq, head.id), (0, f.genesis.id()));
    assert_eq!(first.state::<Counter>(), Some(&1), "only genesis counts");
    assert!(first.counts(&f.genesis.id()));
    for cut in [&f.a1, &f.a2, &f.b1] {
        assert!(!first.contains(&cut.id()) && !first.counts(&cut.id()));
    }
    assert_eq!(proof_ids(&first, &f.author), Some(pair));

    // B1 first (an orphan), then genesis, A1, A2, one dispatch each.
    let mut second = kernel();
    assert_eq!(outcomes(&mut second, &[&f.b1]), [Outcome::WaitingForParent]);
    outcomes(&mut second, &[&f.genesis]);
    assert_eq!(outcomes(&mut second, &[&f.a1]), [Outcome::Fork { seq: 1 }]);
    assert_eq!(outcomes(&mut second, &[&f.a2]), [Outcome::Frozen { at: 1 }]);
    assert_eq!(second.frozen_feeds(), [(f.author, 1)]);
    assert_eq!(proof_ids(&second, &f.author), Some(pair));
    assert_eq!(second.digests(), first.digests());
    assert_eq!(second.set_hash(), first.set_hash());
    assert_eq!(second.heads(), first.heads());

    // A third kernel that gets all four in one dispatch agrees too.
    let mut third = kernel();
    outcomes(&mut third, &[&f.b1, &f.a2, &f.genesis, &f.a1]);
    assert_eq!(third.frozen_feeds(), [(f.author, 1)]);
    assert_eq!(third.digests(), first.digests());
    assert_eq!(third.set_hash(), first.set_hash());
}

#[test]
fn blocks_past_a_fork_are_frozen() {
    let f = fork();
    let identity = Identity::from_secret([5; 32]);
    let mut kernel = kernel();
    outcomes(&mut kernel, &[&f.genesis, &f.a1, &f.a2, &f.b1]);
    assert_eq!(kernel.frozen_feeds(), [(f.author, 1)]);
    let (set_hash, digests) = (kernel.set_hash(), kernel.digests());

    let a3 = Block::sign(
        &identity,
        Some((f.a2.id(), 2, f.a2.time())),
        NOW - 5,
        b"a3".to_vec(),
    );
    let b2 = Block::sign(
        &identity,
        Some((f.b1.id(), 1, f.b1.time())),
        NOW - 5,
        b"b2".to_vec(),
    );
    let parent = Some((f.genesis.id(), 0, f.genesis.time()));
    let c1 = Block::sign(&identity, parent, NOW - 5, b"c1".to_vec());
    assert_eq!(
        outcomes(&mut kernel, &[&a3, &b2, &c1, &f.a2]),
        vec![Outcome::Frozen { at: 1 }; 4]
    );
    // The proof blocks themselves are known.
    assert_eq!(
        outcomes(&mut kernel, &[&f.a1, &f.b1]),
        [Outcome::Duplicate, Outcome::Duplicate]
    );
    assert_eq!(kernel.set_hash(), set_hash);
    assert_eq!(kernel.digests(), digests);
    assert_eq!(kernel.frozen_feeds(), [(f.author, 1)]);
    assert_eq!(kernel.head(&f.author).map(|h| h.seq), Some(0));
}

#[test]
fn fork_proof_is_stored_and_survives_a_reopen_in_any_arrival_order() {
    let f = fork();
    let orders: [Vec<Vec<&Block>>; 3] = [
        vec![vec![&f.genesis, &f.a1, &f.a2], vec![&f.b1]],
        vec![vec![&f.b1], vec![&f.genesis], vec![&f.a1], vec![&f.a2]],
        vec![vec![&f.b1, &f.a2, &f.genesis, &f.a1]],
    ];
    for (i, order) in orders.iter().enumerate() {
        let mut kernel = kernel();
        for batch in order {
            outcomes(&mut kernel, batch);
        }
        assert_eq!(kernel.frozen_feeds(), [(f.author, 1)], "order {i}");
        let stored = |b: &Block| kernel.store().get(&b.id()).expect("get").is_some();
        assert!(stored(&f.genesis), "order {i}: genesis is stored");
        assert!(
            stored(&f.a1) && stored(&f.b1),
            "order {i}: both proof blocks are stored (a1: {}, b1: {})",
            stored(&f.a1),
            stored(&f.b1)
        );
        assert!(!stored(&f.a2), "order {i}: a2 is past the fork");

        let reopened = reopen(&kernel);
        assert_eq!(reopened.frozen_feeds(), [(f.author, 1)], "order {i}");
        assert!(reopened.fork_proof(&f.author).is_some(), "order {i}");
        assert_eq!(reopened.set_hash(), kernel.set_hash(), "order {i}");
        assert_eq!(reopened.digests(), kernel.digests(), "order {i}");
    }
}
