//! Two machines in lockstep, for tests and benchmarks: every message one wave sends is encoded,
//! decoded and handled in the next wave, until no message is left. It counts what crossed, by
//! kind, so a test can assert what an exchange costs and a benchmark can print it.

use super::{Event, Message, Output, Protocol};
use crate::kernel::{Error, Kernel};

/// Most waves one exchange may take before [`Lockstep`] gives up (a machine that keeps talking
/// is a bug).
pub const MAX_WAVES: u32 = 10_000;

/// What crossed during one exchange (both directions).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Traffic {
    /// Waves until no message was left.
    pub waves: u32,
    /// Waves that carried a reconcile or heads message: the reconciliation's length in
    /// one-way trips (its round trips are half of it, rounded up).
    pub reconcile_waves: u32,
    /// Messages of every kind.
    pub messages: u64,
    /// Encoded bytes of every kind.
    pub bytes: u64,
    /// Bytes of `Reconcile` and `Heads` messages.
    pub reconcile_bytes: u64,
    /// Bytes of `Want` and `WantBodies` messages.
    pub want_bytes: u64,
    /// Bytes of `Blocks` messages.
    pub block_bytes: u64,
}

impl Traffic {
    /// Round trips of the reconciliation: its one-way trips halved, rounded up.
    pub fn round_trips(&self) -> u32 {
        self.reconcile_waves.div_ceil(2)
    }

    /// Bytes of everything but blocks: what it cost to find out what to send.
    pub fn overhead_bytes(&self) -> u64 {
        self.reconcile_bytes + self.want_bytes
    }
}

/// Two kernels, each with its machine, the peer of machine `i` named `1 - i`.
pub struct Lockstep {
    /// The kernels: side 0 and side 1.
    pub kernels: [Kernel; 2],
    /// Their machines.
    pub machines: [Protocol<u8>; 2],
}

impl Lockstep {
    /// Connects the two sides and throws their greetings away, so the first exchange measured
    /// is the one the caller starts.
    ///
    /// # Errors
    /// A kernel's [`Error::Store`].
    pub fn connected(kernels: [Kernel; 2], config: super::Config) -> Result<Self, Error> {
        let mut this = Self {
            kernels,
            machines: [Protocol::new(config), Protocol::new(config)],
        };
        for side in 0..2 {
            let peer = 1 - side as u8;
            this.machines[side].event(&mut this.kernels[side], Event::Connected(peer))?;
        }
        Ok(this)
    }

    /// Ticks side `side` alone (it opens a reconciliation) and runs until quiet.
    ///
    /// # Errors
    /// A kernel's [`Error::Store`]. An exchange still talking after [`MAX_WAVES`] stops there
    /// (`waves == MAX_WAVES`).
    pub fn tick(&mut self, side: usize) -> Result<Traffic, Error> {
        let step = self.machines[side].event(&mut self.kernels[side], Event::Tick)?;
        let queue = step
            .outputs
            .into_iter()
            .filter_map(|o| match o {
                Output::Send { message, .. } => Some((1 - side, message)),
                Output::Disconnect { .. } => None,
            })
            .collect();
        self.run(queue)
    }

    /// Delivers `queue` (receiver, message) wave by wave until nothing is left.
    fn run(&mut self, mut queue: Vec<(usize, Message)>) -> Result<Traffic, Error> {
        let mut traffic = Traffic::default();
        while !queue.is_empty() && traffic.waves < MAX_WAVES {
            traffic.waves += 1;
            let mut reconciling = false;
            let mut next = Vec::new();
            for (to, message) in queue {
                let bytes = message.encode();
                let len = bytes.len() as u64;
                traffic.messages += 1;
                traffic.bytes += len;
                match message {
                    Message::Reconcile(_) | Message::Heads(_) => {
                        reconciling = true;
                        traffic.reconcile_bytes += len;
                    }
                    Message::Want(_) | Message::WantBodies(_) => traffic.want_bytes += len,
                    Message::Blocks(_) => traffic.block_bytes += len,
                }
                let from = 1 - to as u8;
                let step = self.machines[to]
                    .event(&mut self.kernels[to], Event::Message { from, bytes })?;
                for output in step.outputs {
                    if let Output::Send { message, .. } = output {
                        next.push((1 - to, message));
                    }
                }
            }
            if reconciling {
                traffic.reconcile_waves += 1;
            }
            queue = next;
        }
        Ok(traffic)
    }
}
