//! Feeds as a user of the crate sees them: diff, merge, slice, truncate, verify, and the
//! one-buffer encoding. Keys come from fixed seeds and times are fixed, so every run signs the
//! same blocks.

use blockend_kernel::{Block, BlockError, BlockId, Diff, Feed, FeedError, Identity, Merged};

const T0: u64 = 1_700_000_000_000;

fn alice() -> Identity {
    Identity::from_secret([1; 32])
}

fn bob() -> Identity {
    Identity::from_secret([2; 32])
}

/// A feed of `n` blocks by `identity`, bodies tagged with `tag` so feeds of one author can
/// differ, one second apart.
fn feed_of(identity: &Identity, tag: &str, n: usize) -> Feed {
    let mut feed = Feed::new();
    extend(&mut feed, identity, tag, n);
    feed
}

fn extend(feed: &mut Feed, identity: &Identity, tag: &str, n: usize) {
    for _ in 0..n {
        let seq = feed.len();
        feed.append(identity, body(tag, seq), T0 + seq as u64 * 1_000);
    }
}

fn body(tag: &str, seq: usize) -> Vec<u8> {
    format!("{tag}-body-{seq:04}").into_bytes()
}

fn ids(feed: &Feed) -> Vec<BlockId> {
    feed.ids().collect()
}

/// Two feeds of one author sharing `shared` blocks, then each with its own block at seq
/// `shared` and `extra` more blocks after it.
fn forked(shared: usize, extra: usize) -> (Feed, Feed) {
    let base = feed_of(&alice(), "shared", shared);
    let (mut a, mut b) = (base.clone(), base);
    extend(&mut a, &alice(), "a", 1 + extra);
    extend(&mut b, &alice(), "b", 1 + extra);
    (a, b)
}

/// Flips one bit of the first occurrence of `needle` in `bytes`, at offset `at` inside it.
fn flip_inside(bytes: &mut [u8], needle: &[u8], at: usize) {
    let pos = bytes
        .windows(needle.len())
        .position(|w| w == needle)
        .expect("needle occurs in the encoding");
    bytes[pos + at] ^= 0x01;
}

// ---------------------------------------------------------------------------------------------
// diff

#[test]
fn diff_of_two_empty_feeds_is_in_sync() {
    assert_eq!(Feed::new().diff(&Feed::new()), Diff::InSync);
}

#[test]
fn diff_of_equal_feeds_is_in_sync() {
    let feed = feed_of(&alice(), "x", 5);
    assert_eq!(feed.diff(&feed.clone()), Diff::InSync);
    // Equal slices of the middle, too.
    assert_eq!(feed.slice(1..4).diff(&feed.slice(1..4)), Diff::InSync);
}

#[test]
fn diff_against_empty_is_ahead_or_behind_by_len() {
    let feed = feed_of(&alice(), "x", 3);
    assert_eq!(feed.diff(&Feed::new()), Diff::Ahead(3));
    assert_eq!(Feed::new().diff(&feed), Diff::Behind(3));
}

#[test]
fn diff_of_longer_local_feed_is_ahead() {
    let feed = feed_of(&alice(), "x", 7);
    let prefix = feed.slice(0..4);
    assert_eq!(feed.diff(&prefix), Diff::Ahead(3));
}

#[test]
fn diff_of_shorter_local_feed_is_behind() {
    let feed = feed_of(&alice(), "x", 7);
    let prefix = feed.slice(0..2);
    assert_eq!(prefix.diff(&feed), Diff::Behind(5));
}

#[test]
fn diff_of_forked_feeds_is_diverged_at_the_fork() {
    let (a, b) = forked(3, 0);
    assert_eq!(a.diff(&b), Diff::Diverged { seq: 3 });
    assert_eq!(b.diff(&a), Diff::Diverged { seq: 3 });

    // Different lengths after the fork still diverge at the first differing height.
    let (a, b) = forked(3, 4);
    assert_eq!(a.diff(&b.slice(0..5)), Diff::Diverged { seq: 3 });
    assert_eq!(
        a.slice(2..8).diff(&b.slice(1..6)),
        Diff::Diverged { seq: 3 }
    );
}

#[test]
fn diff_of_two_authors_feeds_is_unrelated() {
    // Two different chains share no block: there is nothing they diverged from.
    let a = feed_of(&alice(), "x", 4);
    let b = feed_of(&bob(), "x", 4);
    assert_eq!(a.diff(&b), Diff::Unrelated);
    assert_eq!(b.diff(&a), Diff::Unrelated);
}

#[test]
fn diff_with_a_gap_is_unrelated() {
    let feed = feed_of(&alice(), "x", 20);
    let local = feed.slice(0..5);
    let far = feed.slice(10..20);
    assert_eq!(local.diff(&far), Diff::Unrelated);
    assert_eq!(far.diff(&local), Diff::Unrelated);
}

#[test]
fn diff_with_a_slice_starting_after_the_local_tip_is_behind_by_its_len() {
    let feed = feed_of(&alice(), "x", 9);
    let local = feed.slice(0..4);
    let next = feed.slice(4..9);
    assert_eq!(local.diff(&next), Diff::Behind(5));
}

#[test]
fn diff_of_a_local_feed_that_extends_a_remote_slice_is_ahead() {
    let feed = feed_of(&alice(), "x", 9);
    // Local covers the remote slice and goes past it.
    assert_eq!(feed.diff(&feed.slice(2..5)), Diff::Ahead(4));
    // Local starts right after the remote slice's tip.
    assert_eq!(feed.slice(5..9).diff(&feed.slice(2..5)), Diff::Ahead(4));
}

// ---------------------------------------------------------------------------------------------
// merge

#[test]
fn merge_fast_forwards_onto_a_prefix() {
    let feed = feed_of(&alice(), "x", 6);
    let mut local = feed.slice(0..2);
    assert_eq!(local.merge(&feed), Ok(Merged::FastForward { added: 4 }));
    assert_eq!(ids(&local), ids(&feed));

    // An empty local feed takes everything.
    let mut empty = Feed::new();
    assert_eq!(empty.merge(&feed), Ok(Merged::FastForward { added: 6 }));
    assert_eq!(empty, feed);
}

#[test]
fn merge_of_nothing_new_leaves_the_feed_unchanged() {
    let feed = feed_of(&alice(), "x", 6);
    let mut local = feed.clone();
    assert_eq!(local.merge(&feed.slice(1..4)), Ok(Merged::NothingNew));
    assert_eq!(local.merge(&feed), Ok(Merged::NothingNew));
    assert_eq!(local.merge(&Feed::new()), Ok(Merged::NothingNew));
    assert_eq!(local, feed);
}

#[test]
fn merge_across_a_gap_fails_and_leaves_the_feed_unchanged() {
    let feed = feed_of(&alice(), "x", 12);
    let mut local = feed.slice(0..3);
    let before = local.clone();
    assert_eq!(
        local.merge(&feed.slice(6..12)),
        Err(FeedError::Gap {
            local: 0..3,
            incoming: 6..12
        })
    );
    assert_eq!(local, before);
}

#[test]
fn merge_of_a_fork_fails_and_leaves_the_feed_unchanged() {
    let (a, b) = forked(3, 2);
    let mut local = a.clone();
    assert_eq!(local.merge(&b), Err(FeedError::Fork { seq: 3 }));
    assert_eq!(local, a);
}

#[test]
fn merge_of_a_preceding_slice_is_a_reverse_merge() {
    let feed = feed_of(&alice(), "x", 10);
    // Adjacent: incoming ends right before local starts.
    let mut local = feed.slice(6..10);
    assert_eq!(
        local.merge(&feed.slice(2..6)),
        Ok(Merged::ReverseMerge { added: 4 })
    );
    assert_eq!(ids(&local), ids(&feed.slice(2..10)));
    // Overlapping: only the blocks before the local start are taken.
    assert_eq!(
        local.merge(&feed.slice(0..5)),
        Ok(Merged::ReverseMerge { added: 2 })
    );
    assert_eq!(ids(&local), ids(&feed));
    assert_eq!(local.verify(), Ok(()));
}

#[test]
fn merge_of_a_covering_feed_extends_both_ends() {
    let feed = feed_of(&alice(), "x", 10);
    let mut local = feed.slice(3..6);
    assert_eq!(
        local.merge(&feed),
        Ok(Merged::Extended {
            prepended: 3,
            appended: 4
        })
    );
    assert_eq!(ids(&local), ids(&feed));
}

#[test]
fn merge_of_a_tampered_body_is_invalid_and_leaves_the_feed_unchanged() {
    let feed = feed_of(&alice(), "x", 6);
    let mut local = feed.slice(0..3);
    let before = local.clone();

    // Inside an encoded feed: the body hash is recomputed, so the block's id no longer
    // matches its signature.
    let mut bytes = feed.encode();
    flip_inside(&mut bytes, &body("x", 4), 0);
    let tampered = Feed::decode(&bytes).expect("a flipped body byte still decodes");
    assert_eq!(
        local.merge(&tampered),
        Err(FeedError::Invalid {
            seq: 4,
            error: BlockError::BadSignature
        })
    );
    assert_eq!(local, before);

    // Inside one encoded block, offered as a one-block slice right after the local tip.
    let mut bytes = feed.blocks()[3].encode();
    flip_inside(&mut bytes, &body("x", 3), 2);
    let block = Block::decode(&bytes).expect("a flipped body byte still decodes");
    let slice = Feed::from_blocks(vec![block]).expect("one block always links");
    assert_eq!(
        local.merge(&slice),
        Err(FeedError::Invalid {
            seq: 3,
            error: BlockError::BadSignature
        })
    );
    assert_eq!(local, before);
}

#[test]
fn merge_of_a_tampered_signature_is_invalid_and_leaves_the_feed_unchanged() {
    let feed = feed_of(&alice(), "x", 6);
    let mut local = feed.slice(0..3);
    let before = local.clone();

    let mut bytes = feed.encode();
    let signature = feed.blocks()[5].signature().0;
    flip_inside(&mut bytes, &signature, 40);
    let tampered = Feed::decode(&bytes).expect("a flipped signature byte still decodes");
    assert_eq!(
        ids(&tampered),
        ids(&feed),
        "the signature is not part of the id"
    );
    assert_eq!(
        local.merge(&tampered),
        Err(FeedError::Invalid {
            seq: 5,
            error: BlockError::BadSignature
        })
    );
    assert_eq!(local, before);
}

#[test]
fn merge_of_an_adjacent_block_naming_another_parent_is_wrong_parent() {
    // Local holds seq 0..=2 of branch a; incoming is seq 3..=4 of branch b, whose block at
    // seq 3 names b's block at seq 2 as parent.
    let (a, b) = forked(2, 2);
    let mut local = a.slice(0..3);
    let before = local.clone();
    let incoming = b.slice(3..5);
    assert_eq!(incoming.first().map(Block::seq), Some(3));
    assert_eq!(
        local.merge(&incoming),
        Err(FeedError::WrongParent { seq: 3 })
    );
    assert_eq!(local, before);

    // And the other way round: incoming ends right before local starts.
    let mut local = b.slice(3..5);
    let before = local.clone();
    assert_eq!(
        local.merge(&a.slice(0..3)),
        Err(FeedError::WrongParent { seq: 3 })
    );
    assert_eq!(local, before);
}

#[test]
fn every_truncation_of_an_encoded_feed_fails_to_decode() {
    let mut feed = feed_of(&alice(), "x", 4);
    extend(&mut feed, &bob(), "y", 2);
    let bytes = feed.encode();
    assert_eq!(Feed::decode(&bytes).as_ref(), Ok(&feed));
    for len in 0..bytes.len() {
        // A panic here fails the test: decoders must return an error instead.
        assert!(
            Feed::decode(&bytes[..len]).is_err(),
            "a prefix of {len} of {} bytes decoded",
            bytes.len()
        );
    }
}

// ---------------------------------------------------------------------------------------------
// slice, truncate, from_blocks, verify

#[test]
fn slice_takes_the_blocks_at_the_given_indices_and_clamps() {
    let feed = feed_of(&alice(), "x", 8);
    let all = ids(&feed);

    let middle = feed.slice(2..5);
    assert_eq!(middle.len(), 3);
    assert_eq!(ids(&middle), all[2..5]);
    assert_eq!(middle.first().map(Block::seq), Some(2));
    assert_eq!(middle.get(4).map(Block::id), Some(all[4]));
    assert_eq!(middle.get(5), None);
    assert_eq!(middle.get(1), None);

    let tail = feed.slice(5..100);
    assert_eq!(ids(&tail), all[5..]);
    assert!(feed.slice(8..100).is_empty());
    assert!(feed.slice(50..100).is_empty());
    let (start, end) = (6, 3);
    assert!(feed.slice(start..end).is_empty());
    assert_eq!(feed.slice(0..usize::MAX), feed);
}

#[test]
fn truncate_keeps_the_first_blocks() {
    let feed = feed_of(&alice(), "x", 8);
    let mut short = feed.clone();
    short.truncate(3);
    assert_eq!(short.len(), 3);
    assert_eq!(ids(&short), ids(&feed)[..3]);
    assert_eq!(short.last().map(Block::seq), Some(2));

    short.truncate(10);
    assert_eq!(short.len(), 3, "truncating past the end changes nothing");
    short.truncate(0);
    assert!(short.is_empty());
}

#[test]
fn from_blocks_refuses_a_broken_chain() {
    let feed = feed_of(&alice(), "x", 4);
    let blocks = feed.blocks().to_vec();

    // A missing block.
    let gap = vec![blocks[0].clone(), blocks[2].clone()];
    assert_eq!(
        Feed::from_blocks(gap),
        Err(FeedError::BrokenChain { seq: 2 })
    );
    // Out of order.
    let swapped = vec![blocks[1].clone(), blocks[0].clone()];
    assert_eq!(
        Feed::from_blocks(swapped),
        Err(FeedError::BrokenChain { seq: 0 })
    );
    // Linked by id and seq, but dated before its parent.
    let parent = &blocks[1];
    let early = Block::sign(
        &alice(),
        Some((parent.id(), parent.seq(), 0)),
        parent.time() - 1,
        b"early".to_vec(),
    );
    assert_eq!(
        Feed::from_blocks(vec![blocks[0].clone(), parent.clone(), early]),
        Err(FeedError::Invalid {
            seq: 2,
            error: BlockError::TimeBeforeParent {
                time: parent.time() - 1,
                parent_time: parent.time()
            }
        })
    );
    // The intact chain is accepted.
    assert_eq!(Feed::from_blocks(blocks).as_ref(), Ok(&feed));
}

#[test]
fn verify_accepts_a_well_signed_feed() {
    let feed = feed_of(&alice(), "x", 5);
    assert_eq!(feed.verify(), Ok(()));
    assert_eq!(feed.slice(2..5).verify(), Ok(()));
    assert_eq!(Feed::new().verify(), Ok(()));
}

#[test]
fn multi_author_feed_round_trips_and_keeps_its_authors() {
    let (a, b) = (alice(), bob());
    let mut feed = Feed::new();
    for i in 0..6u64 {
        let who = if i % 2 == 0 { &a } else { &b };
        feed.append(who, format!("turn {i}").into_bytes(), T0 + i * 10);
    }
    let authors: Vec<_> = feed.blocks().iter().map(Block::author).collect();
    let expected: Vec<_> = (0..6)
        .map(|i| if i % 2 == 0 { a.public() } else { b.public() })
        .collect();
    assert_eq!(authors, expected);

    let decoded = Feed::decode(&feed.encode()).expect("decodes");
    assert_eq!(decoded.verify(), Ok(()));
    assert_eq!(decoded, feed);
    let decoded_authors: Vec<_> = decoded.blocks().iter().map(Block::author).collect();
    assert_eq!(decoded_authors, expected);
}

// ---------------------------------------------------------------------------------------------
// encoding size

#[test]
fn feed_encoding_overhead_is_at_most_80_bytes_per_block() {
    const BLOCKS: usize = 10_000;
    const BODY: usize = 32;
    let identity = alice();
    let mut feed = Feed::new();
    for i in 0..BLOCKS {
        let mut body = [0u8; BODY];
        body[..8].copy_from_slice(&(i as u64).to_le_bytes());
        feed.append(&identity, body.to_vec(), T0 + i as u64 * 1_000);
    }
    let encoded = feed.encode().len();
    let overhead = (encoded - BLOCKS * BODY) as f64 / BLOCKS as f64;
    println!(
        "feed encoding: {encoded} bytes for {BLOCKS} blocks of {BODY}-byte bodies, \
         {overhead:.2} bytes of overhead per block"
    );
    assert!(overhead <= 80.0, "{overhead:.2} bytes per block");
    assert_eq!(Feed::decode(&feed.encode()).as_ref(), Ok(&feed));
}
