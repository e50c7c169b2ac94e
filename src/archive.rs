//! Feed archives: what `blockend export` writes and `blockend import` reads. Feeds travel in
//! the kernel's compact feed encoding ([`Feed::encode`]), cut into bounded chunks, inside a
//! small container that holds many feeds and the fork proofs of frozen ones:
//!
//! ```text
//! magic "BLOCKEND-FEEDS" | version: u8 (1)
//! record*: kind: u8 | length: u32 little-endian | payload[length]
//!   kind 1, "about":  postcard (feeds: u64, blocks: u64, proofs: u64), what the writer
//!                     expected to write (for progress only; first, once)
//!   kind 2, "feed":   a contiguous run of one feed, Feed::encode (at most CHUNK_BLOCKS
//!                     blocks and about CHUNK_BYTES bytes)
//!   kind 3, "proof":  two blocks at one height of one feed, each as length: u32 LE | block
//!   kind 0, "end":    postcard (feeds: u64, blocks: u64, proofs: u64), exactly what was
//!                     written; nothing follows
//! ```
//!
//! A reader holds one record at a time (at most [`MAX_RECORD_BYTES`]), so an import streams in
//! bounded batches whatever the file's size. Nothing in an archive is trusted: the reader
//! checks the framing only, and the importer hands every block to the kernel, which verifies
//! signatures and links like any peer's. A file cut short or damaged past some record yields
//! every record before the damage, then a typed error naming where it stopped.

use std::io::{Read, Write};

use blockend_kernel::{Block, DecodeError, Feed, Kernel, PublicKey};
use serde::{Deserialize, Serialize};

/// The first bytes of every archive.
pub const MAGIC: &[u8; 14] = b"BLOCKEND-FEEDS";
/// The container version this build writes and reads.
pub const VERSION: u8 = 1;
/// Most blocks in one feed record.
pub const CHUNK_BLOCKS: usize = 1000;
/// About the most bytes of blocks in one feed record (a single larger block gets a record of
/// its own).
pub const CHUNK_BYTES: usize = 4 << 20;
/// The largest record a reader accepts: above any record this build writes (a chunk of
/// [`CHUNK_BYTES`] plus one block at the kernel's largest body), far below what would strain
/// memory.
pub const MAX_RECORD_BYTES: u32 = 16 << 20;

const KIND_END: u8 = 0;
const KIND_ABOUT: u8 = 1;
const KIND_FEED: u8 = 2;
const KIND_PROOF: u8 = 3;

/// How many feeds, blocks and fork proofs an archive holds (or was expected to).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Totals {
    /// Feeds (an author's feed cut into several records counts once).
    pub feeds: u64,
    /// Blocks in feed records.
    pub blocks: u64,
    /// Fork proofs.
    pub proofs: u64,
}

impl std::fmt::Display for Totals {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} feeds, {} blocks and {} fork proofs",
            self.feeds, self.blocks, self.proofs
        )
    }
}

/// One record of an archive.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record {
    /// A contiguous run of one feed.
    Feed(Feed),
    /// Two blocks of one author at one height: the proof that the feed forked.
    Proof(Box<(Block, Block)>),
}

/// Why an archive cannot be read (or written).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ArchiveError {
    /// The input does not start with [`MAGIC`].
    #[error("not a blockend feed archive (it does not start with {:?}); make one with `blockend export`", std::str::from_utf8(MAGIC).unwrap_or_default())]
    NotAnArchive,
    /// A container version this build does not read.
    #[error("archive version {0} is not supported (this build reads version {VERSION})")]
    Version(u8),
    /// The input ended inside a record or before the end record.
    #[error("the archive ends early, after {records} records ({blocks} blocks): it was cut short or is still being written")]
    Truncated {
        /// Whole records read.
        records: u64,
        /// Blocks in them.
        blocks: u64,
    },
    /// A record longer than [`MAX_RECORD_BYTES`].
    #[error("record {record} claims {length} bytes, more than the {MAX_RECORD_BYTES} a record may hold: the archive is damaged")]
    TooLarge {
        /// Its position (0 is the first record).
        record: u64,
        /// The length it claims.
        length: u32,
    },
    /// A record of a kind this build does not know.
    #[error(
        "record {record} is of unknown kind {kind}: the archive is damaged or from a newer version"
    )]
    UnknownKind {
        /// Its position.
        record: u64,
        /// Its kind byte.
        kind: u8,
    },
    /// A record whose payload does not decode.
    #[error("record {record} ({what}) does not decode: {error}")]
    Damaged {
        /// Its position.
        record: u64,
        /// Which kind of record.
        what: &'static str,
        /// Why.
        error: String,
    },
    /// The end record's totals differ from what was read.
    #[error("the archive's end record says {said} but {read} were read: the archive is damaged")]
    Mismatch {
        /// What the end record says.
        said: Totals,
        /// What was read.
        read: Totals,
    },
    /// Reading or writing failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Writes an archive record by record.
pub struct Writer<W: Write> {
    out: W,
    written: Totals,
    last_author: Option<PublicKey>,
}

impl<W: Write> Writer<W> {
    /// Starts an archive on `out`, announcing `about` (what is expected; for progress).
    ///
    /// # Errors
    /// [`ArchiveError::Io`].
    pub fn new(mut out: W, about: Totals) -> Result<Self, ArchiveError> {
        out.write_all(MAGIC)?;
        out.write_all(&[VERSION])?;
        let mut writer = Self {
            out,
            written: Totals::default(),
            last_author: None,
        };
        writer.record(
            KIND_ABOUT,
            &postcard::to_stdvec(&about).expect("totals encode"),
        )?;
        Ok(writer)
    }

    fn record(&mut self, kind: u8, payload: &[u8]) -> Result<(), ArchiveError> {
        let length = u32::try_from(payload.len())
            .ok()
            .filter(|l| *l <= MAX_RECORD_BYTES)
            .ok_or_else(|| {
                std::io::Error::other(format!(
                    "a record of {} bytes is over the {MAX_RECORD_BYTES}-byte limit",
                    payload.len()
                ))
            })?;
        self.out.write_all(&[kind])?;
        self.out.write_all(&length.to_le_bytes())?;
        self.out.write_all(payload)?;
        Ok(())
    }

    /// Writes a run of one feed. Runs of one author's feed written one after the other count
    /// as one feed.
    ///
    /// # Errors
    /// [`ArchiveError::Io`], also for a run over [`MAX_RECORD_BYTES`] encoded.
    pub fn feed(&mut self, run: &Feed) -> Result<(), ArchiveError> {
        let Some(first) = run.first() else {
            return Ok(());
        };
        self.record(KIND_FEED, &run.encode())?;
        if self.last_author != Some(first.author()) {
            self.written.feeds += 1;
            self.last_author = Some(first.author());
        }
        self.written.blocks += run.len() as u64;
        Ok(())
    }

    /// Writes a fork proof.
    ///
    /// # Errors
    /// [`ArchiveError::Io`].
    pub fn proof(&mut self, a: &Block, b: &Block) -> Result<(), ArchiveError> {
        let mut payload = Vec::new();
        for block in [a, b] {
            let bytes = block.encode();
            payload.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
            payload.extend_from_slice(&bytes);
        }
        self.record(KIND_PROOF, &payload)?;
        self.written.proofs += 1;
        Ok(())
    }

    /// Writes the end record and flushes; returns what was written.
    ///
    /// # Errors
    /// [`ArchiveError::Io`].
    pub fn finish(mut self) -> Result<Totals, ArchiveError> {
        let written = self.written;
        self.record(
            KIND_END,
            &postcard::to_stdvec(&written).expect("totals encode"),
        )?;
        self.out.flush()?;
        Ok(written)
    }
}

/// Reads an archive record by record.
pub struct Reader<R: Read> {
    input: R,
    about: Totals,
    read: Totals,
    records: u64,
    last_author: Option<PublicKey>,
    ended: bool,
}

impl<R: Read> Reader<R> {
    /// Checks the magic and version and reads the "about" record.
    ///
    /// # Errors
    /// [`ArchiveError::NotAnArchive`], [`ArchiveError::Version`], or the errors of
    /// [`Reader::next_record`].
    pub fn new(mut input: R) -> Result<Self, ArchiveError> {
        let mut head = [0u8; MAGIC.len() + 1];
        read_full(&mut input, &mut head).map_err(|e| match e {
            ArchiveError::Truncated { .. } => ArchiveError::NotAnArchive,
            other => other,
        })?;
        if &head[..MAGIC.len()] != MAGIC {
            return Err(ArchiveError::NotAnArchive);
        }
        if head[MAGIC.len()] != VERSION {
            return Err(ArchiveError::Version(head[MAGIC.len()]));
        }
        let mut reader = Self {
            input,
            about: Totals::default(),
            read: Totals::default(),
            records: 0,
            last_author: None,
            ended: false,
        };
        let (kind, payload) = reader.frame()?;
        if kind != KIND_ABOUT {
            return Err(ArchiveError::Damaged {
                record: 0,
                what: "about",
                error: format!("the first record is of kind {kind}, not 'about'"),
            });
        }
        reader.about = postcard::from_bytes(&payload).map_err(|e| ArchiveError::Damaged {
            record: 0,
            what: "about",
            error: e.to_string(),
        })?;
        Ok(reader)
    }

    /// What the writer expected to write (claimed by the file: for progress only).
    pub fn about(&self) -> Totals {
        self.about
    }

    /// What was read so far.
    pub fn read(&self) -> Totals {
        self.read
    }

    /// The next record's kind and payload.
    fn frame(&mut self) -> Result<(u8, Vec<u8>), ArchiveError> {
        let truncated = ArchiveError::Truncated {
            records: self.records,
            blocks: self.read.blocks,
        };
        let mut head = [0u8; 5];
        read_full(&mut self.input, &mut head).map_err(|e| match e {
            ArchiveError::Truncated { .. } => truncated,
            other => other,
        })?;
        let length = u32::from_le_bytes([head[1], head[2], head[3], head[4]]);
        if length > MAX_RECORD_BYTES {
            return Err(ArchiveError::TooLarge {
                record: self.records,
                length,
            });
        }
        let mut payload = vec![0u8; length as usize];
        read_full(&mut self.input, &mut payload).map_err(|e| match e {
            ArchiveError::Truncated { .. } => ArchiveError::Truncated {
                records: self.records,
                blocks: self.read.blocks,
            },
            other => other,
        })?;
        self.records += 1;
        Ok((head[0], payload))
    }

    /// The next feed run or proof; `None` after the end record, once the totals it states
    /// were checked against what was read.
    ///
    /// # Errors
    /// Any [`ArchiveError`] but [`ArchiveError::NotAnArchive`] and [`ArchiveError::Version`].
    /// Records before the failing one were returned whole.
    pub fn next_record(&mut self) -> Result<Option<Record>, ArchiveError> {
        if self.ended {
            return Ok(None);
        }
        let (kind, payload) = self.frame()?;
        let record = self.records - 1;
        let damaged = |what, error: String| ArchiveError::Damaged {
            record,
            what,
            error,
        };
        match kind {
            KIND_END => {
                let said: Totals =
                    postcard::from_bytes(&payload).map_err(|e| damaged("end", e.to_string()))?;
                if said != self.read {
                    return Err(ArchiveError::Mismatch {
                        said,
                        read: self.read,
                    });
                }
                let mut rest = [0u8; 1];
                if self.input.read(&mut rest)? != 0 {
                    return Err(damaged("end", "bytes follow the end record".to_owned()));
                }
                self.ended = true;
                Ok(None)
            }
            KIND_FEED => {
                let feed = Feed::decode(&payload).map_err(|e| damaged("feed", e.to_string()))?;
                let Some(first) = feed.first() else {
                    return Err(damaged("feed", "an empty feed run".to_owned()));
                };
                if self.last_author != Some(first.author()) {
                    self.read.feeds += 1;
                    self.last_author = Some(first.author());
                }
                self.read.blocks += feed.len() as u64;
                Ok(Some(Record::Feed(feed)))
            }
            KIND_PROOF => {
                let (a, rest) = split_block(&payload).map_err(|e| damaged("proof", e))?;
                let (b, rest) = split_block(rest).map_err(|e| damaged("proof", e))?;
                if !rest.is_empty() {
                    return Err(damaged("proof", "bytes after the two blocks".to_owned()));
                }
                self.read.proofs += 1;
                Ok(Some(Record::Proof(Box::new((a, b)))))
            }
            KIND_ABOUT => Err(damaged("about", "a second 'about' record".to_owned())),
            kind => Err(ArchiveError::UnknownKind { record, kind }),
        }
    }
}

/// One length-prefixed block off the front of `bytes`.
fn split_block(bytes: &[u8]) -> Result<(Block, &[u8]), String> {
    let (len, rest) = bytes
        .split_first_chunk::<4>()
        .ok_or("a block's length is cut short")?;
    let len = u32::from_le_bytes(*len) as usize;
    if rest.len() < len {
        return Err("a block is cut short".to_owned());
    }
    let (block, rest) = rest.split_at(len);
    let block = Block::decode(block).map_err(|e: DecodeError| e.to_string())?;
    Ok((block, rest))
}

/// Fills `buf`, or fails with [`ArchiveError::Truncated`] (counts filled in by the caller) at
/// the end of the input.
fn read_full(input: &mut impl Read, buf: &mut [u8]) -> Result<(), ArchiveError> {
    match input.read_exact(buf) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Err(ArchiveError::Truncated {
            records: 0,
            blocks: 0,
        }),
        Err(e) => Err(e.into()),
    }
}

/// What `author`'s feed holds from `from_seq` on, as one bounded run ([`CHUNK_BLOCKS`],
/// about [`CHUNK_BYTES`]): every block held, counted or not, collected ones as headers.
/// Empty past the feed's end.
fn run_of(kernel: &Kernel, author: &PublicKey, from_seq: u64) -> Feed {
    let blocks = kernel
        .blocks_from(author, from_seq, CHUNK_BLOCKS, CHUNK_BYTES)
        .into_iter()
        .map(|b| (*b).clone())
        .collect();
    Feed::from_blocks(blocks).expect("the kernel holds linked feeds")
}

/// An export in progress: every feed's runs in turn, then the fork proofs of frozen feeds,
/// one record per [`ExportCursor::next`]. Each step reads one bounded piece of the kernel,
/// so a running node serves an export between its other work (the CLI without a node walks
/// the same cursor), and both write the same archive.
#[derive(Clone, Debug)]
pub struct ExportCursor {
    authors: Vec<PublicKey>,
    feed: usize,
    from: u64,
    proof: usize,
    about: Totals,
    written: Totals,
}

impl ExportCursor {
    /// An export of `author`'s feed, or of every feed held (in feed order; a feed frozen at
    /// genesis, which holds no block but its proof, included).
    pub fn new(kernel: &Kernel, author: Option<PublicKey>) -> Self {
        let authors = match author {
            Some(author) => vec![author],
            None => {
                let mut authors: Vec<PublicKey> =
                    kernel.heads().into_iter().map(|h| h.author).collect();
                let held: std::collections::BTreeSet<PublicKey> = authors.iter().copied().collect();
                authors.extend(
                    kernel
                        .frozen_feeds()
                        .into_iter()
                        .map(|(frozen, _)| frozen)
                        .filter(|frozen| !held.contains(frozen)),
                );
                authors
            }
        };
        let mut about = Totals::default();
        for author in &authors {
            if let Some(head) = kernel.head(author) {
                // The kernel's feeds run from seq 0 (collected blocks stay as headers).
                about.feeds += 1;
                about.blocks += head.seq + 1;
            }
            if kernel.fork_proof(author).is_some() {
                about.proofs += 1;
            }
        }
        Self {
            authors,
            feed: 0,
            from: 0,
            proof: 0,
            about,
            written: Totals::default(),
        }
    }

    /// What the export is expected to hold, as the kernel stood when it began.
    pub fn about(&self) -> Totals {
        self.about
    }

    /// What the records returned so far hold.
    pub fn written(&self) -> Totals {
        self.written
    }

    /// The next record, or `None` once every feed and proof was returned.
    pub fn next(&mut self, kernel: &Kernel) -> Option<Record> {
        while let Some(author) = self.authors.get(self.feed) {
            let run = run_of(kernel, author, self.from);
            let Some(last) = run.last() else {
                self.feed += 1;
                self.from = 0;
                continue;
            };
            if self.from == 0 {
                self.written.feeds += 1;
            }
            self.from = last.seq() + 1;
            self.written.blocks += run.len() as u64;
            return Some(Record::Feed(run));
        }
        while let Some(author) = self.authors.get(self.proof) {
            self.proof += 1;
            if let Some((a, b)) = kernel.fork_proof(author) {
                self.written.proofs += 1;
                return Some(Record::Proof(Box::new(((*a).clone(), (*b).clone()))));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use blockend_kernel::Identity;

    fn feed(secret: u8, n: usize) -> Feed {
        let identity = Identity::from_secret([secret; 32]);
        let mut feed = Feed::new();
        for i in 0..n {
            feed.append(
                &identity,
                format!("{{\"value\":{i}}}").into_bytes(),
                1000 + i as u64,
            );
        }
        feed
    }

    fn archive(feeds: &[Feed], proofs: &[(Block, Block)]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut writer = Writer::new(&mut out, Totals::default()).unwrap();
        for feed in feeds {
            writer.feed(feed).unwrap();
        }
        for (a, b) in proofs {
            writer.proof(a, b).unwrap();
        }
        writer.finish().unwrap();
        out
    }

    fn read_all(bytes: &[u8]) -> (Vec<Record>, Result<(), ArchiveError>) {
        let mut records = Vec::new();
        let mut reader = match Reader::new(bytes) {
            Ok(reader) => reader,
            Err(e) => return (records, Err(e)),
        };
        loop {
            match reader.next_record() {
                Ok(Some(record)) => records.push(record),
                Ok(None) => return (records, Ok(())),
                Err(e) => return (records, Err(e)),
            }
        }
    }

    #[test]
    fn feeds_and_proofs_round_trip_and_the_end_record_checks_the_totals() {
        let (a, b) = (feed(1, 3), feed(2, 5));
        // The same author signs another block at seq 1: a fork.
        let mut fork = Feed::from_blocks(vec![a.blocks()[0].clone()]).unwrap();
        fork.append(
            &Identity::from_secret([1; 32]),
            b"{\"value\":99}".to_vec(),
            5000,
        );
        let proof = (a.blocks()[1].clone(), fork.blocks()[1].clone());
        let bytes = archive(&[a.clone(), b.clone()], std::slice::from_ref(&proof));
        let (records, end) = read_all(&bytes);
        end.unwrap();
        assert_eq!(
            records,
            vec![
                Record::Feed(a),
                Record::Feed(b),
                Record::Proof(Box::new(proof))
            ]
        );
    }

    #[test]
    fn an_end_record_that_disagrees_with_the_records_is_refused_in_words() {
        let mut bytes = archive(&[feed(1, 2)], &[]);
        // The end record's last field is the proof count, 0: claim one.
        *bytes.last_mut().unwrap() = 1;
        let (records, end) = read_all(&bytes);
        assert_eq!(records.len(), 1);
        let error = end.unwrap_err();
        assert!(matches!(error, ArchiveError::Mismatch { .. }), "{error:?}");
        assert_eq!(
            error.to_string(),
            "the archive's end record says 1 feeds, 2 blocks and 1 fork proofs but 1 feeds, 2 blocks and 0 fork proofs were read: the archive is damaged"
        );
    }

    #[test]
    fn a_file_cut_anywhere_gives_the_whole_records_before_the_cut_then_a_typed_error() {
        let bytes = archive(&[feed(1, 4), feed(2, 4)], &[]);
        for cut in 0..bytes.len() {
            let (records, end) = read_all(&bytes[..cut]);
            let error = end.expect_err("a cut archive must not read as whole");
            assert!(
                matches!(
                    error,
                    ArchiveError::Truncated { .. } | ArchiveError::NotAnArchive
                ),
                "cut at {cut}: {error}"
            );
            assert!(records.len() <= 2);
        }
    }

    #[test]
    fn garbage_oversized_records_and_unknown_kinds_are_refused_with_their_position() {
        assert!(matches!(
            Reader::new(&b"hello world, not an archive"[..]),
            Err(ArchiveError::NotAnArchive)
        ));
        let mut bad_version = MAGIC.to_vec();
        bad_version.push(9);
        assert!(matches!(
            Reader::new(&bad_version[..]),
            Err(ArchiveError::Version(9))
        ));
        let good = archive(&[feed(1, 2)], &[]);
        let head = MAGIC.len() + 1 + 5 + postcard::to_stdvec(&Totals::default()).unwrap().len();
        let mut huge = good[..head].to_vec();
        huge.push(KIND_FEED);
        huge.extend_from_slice(&u32::MAX.to_le_bytes());
        let (_, end) = read_all(&huge);
        assert!(
            matches!(end, Err(ArchiveError::TooLarge { record: 1, .. })),
            "{end:?}"
        );
        let mut unknown = good[..head].to_vec();
        unknown.extend_from_slice(&[7, 0, 0, 0, 0]);
        let (_, end) = read_all(&unknown);
        assert!(matches!(
            end,
            Err(ArchiveError::UnknownKind { record: 1, kind: 7 })
        ));
        let mut junk = good[..head].to_vec();
        junk.extend_from_slice(&[KIND_FEED, 3, 0, 0, 0, 1, 2, 3]);
        let (_, end) = read_all(&junk);
        assert!(
            matches!(
                end,
                Err(ArchiveError::Damaged {
                    record: 1,
                    what: "feed",
                    ..
                })
            ),
            "{end:?}"
        );
        let mut trailing = good.clone();
        trailing.push(0);
        assert!(read_all(&trailing).1.is_err());
    }
}
