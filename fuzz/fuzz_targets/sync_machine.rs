//! The sync machine fed arbitrary event sequences from four peers: connects, disconnects,
//! raw bytes, well-formed messages built from the block pool (full, header-only and forged
//! copies, heads that lie, reconcile rounds of every part over the pool's authors), pushed
//! blocks, local writes, ticks and clock steps. After every
//! event each message the machine sends fits the limits and decodes to itself; at the end the
//! kernel's state is a fold of what it retains.
#![no_main]

use arbitrary::Arbitrary;
use blockend_fuzz::{check_fold, check_outputs, copy, kernel, pool, T0};
use blockend_kernel::sync::{
    id_prefix, salt_key, Config, Event, Message, Part, Protocol, Reconcile, Want,
};
use blockend_kernel::{BlockId, Head, ManualClock};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
enum Op {
    Connect(u8),
    Disconnect(u8),
    Bytes {
        from: u8,
        bytes: Vec<u8>,
    },
    Blocks {
        from: u8,
        picks: Vec<(u8, u8)>,
    },
    Pushed {
        from: u8,
        picks: Vec<(u8, u8)>,
    },
    Heads {
        from: u8,
        heads: Vec<(u8, u8, bool)>,
    },
    Want {
        from: u8,
        author: u8,
        from_seq: u8,
    },
    WantBodies {
        from: u8,
        picks: Vec<u8>,
    },
    Reconcile {
        from: u8,
        open: Option<u8>,
        salt: u8,
        /// Per range: its kind, how many of the pool's authors (in key order) it covers, and
        /// a byte for its fingerprint or bitmap.
        parts: Vec<(u8, u8, u8)>,
        declined: Vec<u8>,
    },
    Local(u8),
    Tick,
    Advance(u16),
}

fuzz_target!(|ops: Vec<Op>| {
    let clock = ManualClock::new(T0);
    let mut kernel = kernel(&clock, 0);
    let config = Config::default();
    let limits = config.limits;
    let mut machine: Protocol<u8> = Protocol::new(config);
    let pool = pool();
    let mut written = 0u64;
    // The pool's heads by author, in key order: what reconcile ranges are cut from.
    let mut by_author: Vec<Head> = Vec::new();
    for block in pool {
        let head = Head {
            author: block.author(),
            seq: block.seq(),
            id: block.id(),
        };
        match by_author.iter_mut().find(|h| h.author == head.author) {
            Some(h) if h.seq < head.seq => *h = head,
            Some(_) => {}
            None => by_author.push(head),
        }
    }
    by_author.sort_by_key(|h| h.author);
    for op in ops.into_iter().take(48) {
        let event = match op {
            Op::Connect(p) => Event::Connected(p % 4),
            Op::Disconnect(p) => Event::Disconnected(p % 4),
            Op::Bytes { from, bytes } => Event::Message {
                from: from % 4,
                bytes,
            },
            Op::Blocks { from, picks } => {
                let blocks = picks.iter().take(32).map(|&(p, k)| copy(p, k)).collect();
                Event::Message {
                    from: from % 4,
                    bytes: Message::Blocks(blocks).encode(),
                }
            }
            Op::Pushed { from, picks } => Event::Pushed {
                from: from % 4,
                blocks: picks.iter().take(32).map(|&(p, k)| copy(p, k)).collect(),
            },
            Op::Heads { from, heads } => {
                let heads = heads
                    .iter()
                    .take(32)
                    .map(|&(pick, seq, truthful)| {
                        let block = &pool[usize::from(pick) % pool.len()];
                        Head {
                            author: block.author(),
                            seq: if truthful {
                                block.seq()
                            } else {
                                u64::from(seq)
                            },
                            id: if truthful {
                                block.id()
                            } else {
                                BlockId([seq; 32])
                            },
                        }
                    })
                    .collect();
                Event::Message {
                    from: from % 4,
                    bytes: Message::Heads(heads).encode(),
                }
            }
            Op::Want {
                from,
                author,
                from_seq,
            } => {
                let author = pool[usize::from(author) % pool.len()].author();
                let want = Want {
                    author,
                    from_seq: u64::from(from_seq),
                };
                Event::Message {
                    from: from % 4,
                    bytes: Message::Want(vec![want]).encode(),
                }
            }
            Op::WantBodies { from, picks } => {
                let ids = picks
                    .iter()
                    .take(32)
                    .map(|&p| pool[usize::from(p) % pool.len()].id())
                    .collect();
                Event::Message {
                    from: from % 4,
                    bytes: Message::WantBodies(ids).encode(),
                }
            }
            Op::Reconcile {
                from,
                open,
                salt,
                parts,
                declined,
            } => {
                let key = salt_key(u64::from(salt));
                let mut ranges = Vec::new();
                let mut at = 0;
                for (i, &(kind, take, byte)) in parts.iter().take(16).enumerate() {
                    let end = (at + usize::from(take % 4)).min(by_author.len());
                    let inside = by_author[at..end].to_vec();
                    let last = i + 1 == parts.len().min(16);
                    let upper = if last || end >= by_author.len() {
                        None
                    } else {
                        Some(by_author[end].author)
                    };
                    let part = match kind % 5 {
                        0 => Part::Skip,
                        1 => Part::Fingerprint([byte; 16]),
                        2 => Part::Ids(inside.iter().map(|h| id_prefix(&key, &h.id)).collect()),
                        3 => Part::Have {
                            held: vec![byte; usize::from(byte % 3)],
                            heads: inside,
                        },
                        _ => Part::Differ(inside),
                    };
                    ranges.push((upper, part));
                    at = end;
                    if upper.is_none() {
                        break;
                    }
                }
                let declined = declined
                    .iter()
                    .take(8)
                    .map(|&p| pool[usize::from(p) % pool.len()].author())
                    .collect();
                Event::Message {
                    from: from % 4,
                    bytes: Message::Reconcile(Reconcile {
                        open: open.map(u64::from),
                        salt: u64::from(salt),
                        ranges,
                        declined,
                    })
                    .encode(),
                }
            }
            Op::Local(value) => {
                written += 1;
                let body = format!(r#"{{"value":{}}}"#, written * 256 + u64::from(value));
                match kernel.create_block_reported(body) {
                    Ok((_, report)) => Event::Local(report),
                    Err(_) => continue,
                }
            }
            Op::Tick => Event::Tick,
            Op::Advance(ms) => {
                clock.advance(u64::from(ms) * 16);
                continue;
            }
        };
        let step = machine.event(&mut kernel, event).expect("memory store");
        check_outputs(&step.outputs, &limits);
    }
    check_fold(&kernel, &clock);
});
