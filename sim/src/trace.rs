//! The trace hash: every event the engine runs, hashed in order. Two runs with the same
//! scenario and seed must produce the same hash; the determinism test checks it.

/// Bytes buffered before they are hashed.
const BUFFER: usize = 1 << 16;

/// A running blake3 over (time, kind, a, b) of every event.
#[derive(Default)]
pub(crate) struct Trace {
    hasher: blake3::Hasher,
    buffer: Vec<u8>,
    events: u64,
}

impl Trace {
    pub(crate) fn event(&mut self, time: u64, kind: u8, a: u64, b: u64) {
        self.events += 1;
        self.buffer.push(kind);
        self.buffer.extend_from_slice(&time.to_le_bytes());
        self.buffer.extend_from_slice(&a.to_le_bytes());
        self.buffer.extend_from_slice(&b.to_le_bytes());
        if self.buffer.len() >= BUFFER {
            self.hasher.update(&self.buffer);
            self.buffer.clear();
        }
    }

    pub(crate) fn bytes(&mut self, bytes: &[u8]) {
        self.buffer.extend_from_slice(bytes);
    }

    pub(crate) fn events(&self) -> u64 {
        self.events
    }

    pub(crate) fn finish(&mut self) -> String {
        self.hasher.update(&self.buffer);
        self.buffer.clear();
        self.hasher.finalize().to_hex().to_string()
    }
}
