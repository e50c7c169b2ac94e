//! The sync machine fed arbitrary event sequences from four peers: connects, disconnects,
//! raw bytes, well-formed messages built from the block pool (full, header-only and forged
//! copies, heads that lie), pushed blocks, local writes, ticks and clock steps. After every
//! event each message the machine sends fits the limits and decodes to itself; at the end the
//! kernel's state is a fold of what it retains.
#![no_main]

use arbitrary::Arbitrary;
use blockend_fuzz::{check_fold, check_outputs, copy, kernel, pool, T0};
use blockend_kernel::sync::{Config, Event, Message, Protocol, Want};
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
