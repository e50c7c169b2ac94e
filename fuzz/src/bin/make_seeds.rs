//! Writes the seed corpora: valid encodings for the decoders (every pool block, full and
//! header-only, a feed, one message of each kind), so the fuzzer starts from inputs that go
//! deep. `cargo run --bin make_seeds` in `fuzz/`; the output is committed under `corpus/`.

use std::fs;
use std::path::Path;

use blockend_fuzz::pool;
use blockend_kernel::sync::{id_prefix, salt_key, Message, Part, Reconcile, Want};
use blockend_kernel::{Feed, Identity};

fn write(dir: &str, name: &str, bytes: &[u8]) {
    let dir = Path::new("corpus").join(dir);
    fs::create_dir_all(&dir).expect("create the corpus directory");
    fs::write(dir.join(name), bytes).expect("write a seed");
}

fn main() {
    let pool = pool();
    for (i, block) in pool.iter().enumerate() {
        write("decode_block", &format!("full-{i:02}"), &block.encode());
        write(
            "decode_block",
            &format!("header-{i:02}"),
            &block.pruned().encode(),
        );
    }
    let identity = Identity::from_secret([42; 32]);
    let mut feed = Feed::new();
    for n in 0..5u64 {
        feed.append(
            &identity,
            format!(r#"{{"value":{n}}}"#).into_bytes(),
            1_000 + n,
        );
    }
    write("decode_feed", "five", &feed.encode());
    let heads = Message::Heads(
        pool.iter()
            .take(4)
            .map(|b| blockend_kernel::Head {
                author: b.author(),
                seq: b.seq(),
                id: b.id(),
            })
            .collect(),
    );
    let want = Message::Want(vec![Want {
        author: pool[0].author(),
        from_seq: 1,
    }]);
    let bodies = Message::WantBodies(pool.iter().take(3).map(|b| b.id()).collect());
    let blocks = Message::Blocks(pool.iter().take(3).cloned().collect());
    let mut authors: Vec<_> = pool.iter().map(|b| b.author()).collect();
    authors.sort();
    authors.dedup();
    let key = salt_key(5);
    let reconcile = Message::Reconcile(Reconcile {
        open: Some(9),
        salt: 5,
        ranges: vec![
            (Some(authors[1]), Part::Fingerprint([3; 16])),
            (
                Some(authors[2]),
                Part::Ids(vec![id_prefix(&key, &pool[0].id())]),
            ),
            (None, Part::Skip),
        ],
        declined: vec![authors[0]],
    });
    for (name, message) in [
        ("heads", heads),
        ("want", want),
        ("want-bodies", bodies),
        ("blocks", blocks),
        ("reconcile", reconcile),
    ] {
        write("decode_message", name, &message.encode());
    }
    println!("seeds written under corpus/");
}
