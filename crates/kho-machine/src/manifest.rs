//! The workload's manifest, its data, poison and verification.
//!
//! The old kernel's workload writes deterministic data into every block it
//! preserves and records each block with a checksum of its contents in a
//! manifest, itself written into preserved pages. Before the exec, every
//! populated page that is not preserved is overwritten with poison. The new
//! kernel reads the manifest back and checks every block: a block whose
//! checksum still matches is verified, any other is lost.
//!
//! Glossary:
//!
//! | name      | meaning                                                           |
//! |-----------|-------------------------------------------------------------------|
//! | pattern   | the data of a page: word `i` of pfn `p` is [`pattern_word`]`(p, seed, i)` |
//! | checksum  | [`Checksum`]: a 64-bit multiply-rotate hash over words, with the length |
//! | poison    | word `i` of a poisoned page is `POISON | 8 * i` (its byte offset)  |
//! | verified  | bytes of blocks whose checksum matches the manifest               |
//! | lost      | bytes of blocks that do not match, or that cannot be read          |
//!
//! ## Blob layout (little-endian)
//!
//! | offset | size | field      | meaning                                          |
//! |--------|------|------------|--------------------------------------------------|
//! | 0      | 8    | `magic`    | `b"KHOMANIF"`                                    |
//! | 8      | 4    | `version`  | [`MANIFEST_VERSION`]                             |
//! | 12     | 4    | `reserved` | 0                                                |
//! | 16     | 8    | `len`      | payload bytes                                    |
//! | 24     | 8    | `checksum` | [`Checksum`] of the payload bytes                |
//! | 32     | len  | payload    | postcard: `{ seed: u64, entries: [{ pfn: u64, order: u8, checksum: u64 }] }` |
//!
//! Loading fails fast in a fixed order: header size, magic, version,
//! payload size, checksum, decoding, then each entry's block.
#![deny(
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::as_conversions,
    clippy::unwrap_used
)]

use std::sync::atomic::Ordering;

use kho::{Block, MemError, Order, PAGE_SIZE, Pfn, PhysAddr, PhysRange};
use serde::{Deserialize, Serialize};
use zerocopy::little_endian::{U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use crate::arena::{ArenaError, PhysMem};
use crate::physio::{read_bytes, write_bytes};

/// `b"KHOMANIF"` as a little-endian word.
pub(crate) const MANIFEST_MAGIC: u64 = u64::from_le_bytes(*b"KHOMANIF");
/// The blob format version.
pub(crate) const MANIFEST_VERSION: u32 = 1;
/// The poison pattern's high bits: "dead" + "KHOP". Word `i` of a poisoned
/// page is `POISON | 8 * i`.
pub(crate) const POISON: u64 = 0xdead_4b48_4f50_0000;

/// Words in a page.
const PAGE_WORDS: u64 = PAGE_SIZE / 8;

/// The manifest blob's header.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout, Unaligned,
)]
#[repr(C)]
pub(crate) struct ManifestHeader {
    /// [`MANIFEST_MAGIC`].
    pub magic: U64,
    /// [`MANIFEST_VERSION`].
    pub version: U32,
    /// Zero.
    pub reserved: U32,
    /// Payload bytes.
    pub len: U64,
    /// Checksum of the payload bytes.
    pub checksum: U64,
}
const _: () = assert!(size_of::<ManifestHeader>() == 32);
const HEADER_LEN: usize = size_of::<ManifestHeader>();

/// Errors of the manifest and of verification.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    /// Fewer bytes than the header or the payload needs.
    #[error("manifest truncated: {need} bytes needed, {have} available")]
    Truncated {
        /// Bytes needed.
        need: u64,
        /// Bytes available.
        have: u64,
    },
    /// Not a manifest.
    #[error("manifest magic is {found:#018x}, expected {expected:#018x}")]
    BadMagic {
        /// What was found.
        found: u64,
        /// `MANIFEST_MAGIC`.
        expected: u64,
    },
    /// A version this reader does not know.
    #[error("manifest version {found}, expected {expected}")]
    BadVersion {
        /// What was found.
        found: u32,
        /// `MANIFEST_VERSION`.
        expected: u32,
    },
    /// The payload does not match its checksum.
    #[error(
        "manifest payload checksum {computed:#018x} does not match the header's {expected:#018x}"
    )]
    BadChecksum {
        /// The header's.
        expected: u64,
        /// Computed over the payload.
        computed: u64,
    },
    /// The payload does not decode.
    #[error("manifest payload does not decode: {0}")]
    Decode(#[source] postcard::Error),
    /// An entry that is not a block.
    #[error("manifest entry {index}: pfn {pfn:#x} order {order} is not a block")]
    BadBlock {
        /// Its index.
        index: usize,
        /// Its pfn.
        pfn: u64,
        /// Its order.
        order: u8,
    },
    /// The blob's region is not readable memory.
    #[error("manifest region {region}: {source}")]
    Mem {
        /// The region.
        region: PhysRange,
        /// Why.
        source: MemError,
    },
}

/// A 64-bit checksum of memory contents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Checksum(u64);

impl Checksum {
    /// The raw value.
    pub const fn as_u64(self) -> u64 {
        self.0
    }
}

/// Multiplier of the hash (2^64 / golden ratio).
const K: u64 = 0x9e37_79b9_7f4a_7c15;

/// A running checksum: `h = rotl((h ^ w) * K, 29)` per word, finished with
/// the length and an avalanche (the murmur3 finalizer).
#[derive(Debug, Clone, Copy)]
struct Hasher {
    h: u64,
    words: u64,
}

impl Hasher {
    const fn new() -> Self {
        Self { h: K, words: 0 }
    }
    fn word(&mut self, w: u64) {
        self.h = (self.h ^ w).wrapping_mul(K).rotate_left(29);
        self.words = self.words.wrapping_add(1);
    }
    fn finish(self) -> Checksum {
        let mut h = self.h ^ self.words;
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
        h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        h ^= h >> 33;
        Checksum(h)
    }
}

/// The checksum of a run of words.
pub(crate) fn checksum_words(words: impl IntoIterator<Item = u64>) -> Checksum {
    let mut h = Hasher::new();
    words.into_iter().for_each(|w| h.word(w));
    h.finish()
}

/// The checksum of bytes: little-endian words, the last one zero-padded,
/// then the byte length.
pub(crate) fn checksum_bytes(bytes: &[u8]) -> Checksum {
    let mut h = Hasher::new();
    for chunk in bytes.chunks(8) {
        let mut w = [0u8; 8];
        w.iter_mut().zip(chunk).for_each(|(d, s)| *d = *s);
        h.word(u64::from_le_bytes(w));
    }
    h.word(u64::try_from(bytes.len()).unwrap_or(u64::MAX));
    h.finish()
}

/// splitmix64's output function.
const fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(K);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Word `index` (0..512) of page `pfn`'s data under `seed`.
pub(crate) const fn pattern_word(pfn: Pfn, seed: u64, index: u64) -> u64 {
    splitmix(seed ^ (pfn.as_u64() << 9) ^ index)
}

/// Fills `block` with its pattern and returns the contents' checksum.
pub(crate) fn fill_pattern(mem: &PhysMem, block: Block, seed: u64) -> Result<Checksum, MemError> {
    let words = block_words(mem, block)?;
    let mut h = Hasher::new();
    let mut pfn = block.pfn();
    for page in words.chunks(PAGE_WORDS_USIZE) {
        for (i, w) in (0u64..).zip(page) {
            let v = pattern_word(pfn, seed, i);
            w.store(v, Ordering::Relaxed);
            h.word(v);
        }
        pfn = pfn.checked_add(1).unwrap_or(pfn);
    }
    Ok(h.finish())
}

const PAGE_WORDS_USIZE: usize = 512;

fn block_words(mem: &PhysMem, block: Block) -> Result<&[std::sync::atomic::AtomicU64], MemError> {
    let count = block
        .order()
        .pages()
        .checked_mul(PAGE_WORDS)
        .and_then(|n| usize::try_from(n).ok())
        .ok_or(MemError::NotMapped { phys: block.phys() })?;
    mem.words(block.phys(), count)
}

/// The checksum of `block`'s current contents.
pub(crate) fn block_checksum(mem: &PhysMem, block: Block) -> Result<Checksum, MemError> {
    let words = block_words(mem, block)?;
    Ok(checksum_words(
        words.iter().map(|w| w.load(Ordering::Relaxed)),
    ))
}

/// One preserved block and the checksum of its contents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ManifestEntry {
    /// The block.
    pub block: Block,
    /// Its contents' checksum when the old kernel preserved it.
    pub checksum: Checksum,
}

/// Every block the workload preserved.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Manifest {
    /// The seed of the data pattern.
    pub seed: u64,
    /// The blocks.
    pub entries: Vec<ManifestEntry>,
}

#[derive(Serialize, Deserialize)]
struct WireEntry {
    pfn: u64,
    order: u8,
    checksum: u64,
}

#[derive(Serialize, Deserialize)]
struct Wire {
    seed: u64,
    entries: Vec<WireEntry>,
}

/// The outcome of verifying blocks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Verification {
    /// Bytes of blocks whose checksum matched.
    pub verified_bytes: u64,
    /// Bytes of blocks that did not match or could not be read.
    pub lost_bytes: u64,
    /// The lost blocks.
    pub lost: Vec<Block>,
}

impl Manifest {
    /// Total bytes of the blocks.
    pub fn preserved_bytes(&self) -> u64 {
        self.entries
            .iter()
            .map(|e| e.block.size())
            .fold(0, u64::saturating_add)
    }

    /// The blob: header then postcard payload.
    pub fn to_bytes(&self) -> Vec<u8> {
        let wire = Wire {
            seed: self.seed,
            entries: self
                .entries
                .iter()
                .map(|e| WireEntry {
                    pfn: e.block.pfn().as_u64(),
                    order: e.block.order().as_u8(),
                    checksum: e.checksum.0,
                })
                .collect(),
        };
        let payload = postcard::to_allocvec(&wire).unwrap_or_default();
        let header = ManifestHeader {
            magic: U64::new(MANIFEST_MAGIC),
            version: U32::new(MANIFEST_VERSION),
            reserved: U32::new(0),
            len: U64::new(u64::try_from(payload.len()).unwrap_or(u64::MAX)),
            checksum: U64::new(checksum_bytes(&payload).0),
        };
        let mut out = header.as_bytes().to_vec();
        out.extend_from_slice(&payload);
        out
    }

    /// Parses and validates a blob (trailing bytes after the payload are
    /// ignored: the blob sits in whole pages).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ManifestError> {
        let have = u64::try_from(bytes.len()).unwrap_or(u64::MAX);
        let (header, rest) =
            ManifestHeader::read_from_prefix(bytes).map_err(|_| ManifestError::Truncated {
                need: u64::try_from(HEADER_LEN).unwrap_or(u64::MAX),
                have,
            })?;
        if header.magic.get() != MANIFEST_MAGIC {
            return Err(ManifestError::BadMagic {
                found: header.magic.get(),
                expected: MANIFEST_MAGIC,
            });
        }
        if header.version.get() != MANIFEST_VERSION {
            return Err(ManifestError::BadVersion {
                found: header.version.get(),
                expected: MANIFEST_VERSION,
            });
        }
        let len = header.len.get();
        let payload = usize::try_from(len)
            .ok()
            .and_then(|n| rest.get(..n))
            .ok_or(ManifestError::Truncated {
                need: len.saturating_add(u64::try_from(HEADER_LEN).unwrap_or(u64::MAX)),
                have,
            })?;
        let computed = checksum_bytes(payload).0;
        if computed != header.checksum.get() {
            return Err(ManifestError::BadChecksum {
                expected: header.checksum.get(),
                computed,
            });
        }
        let wire: Wire = postcard::from_bytes(payload).map_err(ManifestError::Decode)?;
        let entries = wire
            .entries
            .iter()
            .enumerate()
            .map(|(index, e)| {
                let bad = ManifestError::BadBlock {
                    index,
                    pfn: e.pfn,
                    order: e.order,
                };
                let pfn = Pfn::new(e.pfn).ok_or(bad.clone())?;
                let order = Order::try_new(u32::from(e.order)).map_err(|_| bad.clone())?;
                let block = Block::from_pfn(pfn, order).map_err(|_| bad.clone())?;
                block.range().ok_or(bad)?;
                Ok(ManifestEntry {
                    block,
                    checksum: Checksum(e.checksum),
                })
            })
            .collect::<Result<_, ManifestError>>()?;
        Ok(Self {
            seed: wire.seed,
            entries,
        })
    }

    /// Writes the blob at `at` (8-byte aligned) and returns the bytes it
    /// occupies.
    pub fn write(&self, mem: &PhysMem, at: PhysAddr) -> Result<PhysRange, ManifestError> {
        let bytes = self.to_bytes();
        let len = u64::try_from(bytes.len()).unwrap_or(u64::MAX);
        let region = PhysRange::from_start_size(at, len).map_err(|_| ManifestError::Mem {
            region: PhysRange::default(),
            source: MemError::NotMapped { phys: at },
        })?;
        write_bytes(mem, at, &bytes).map_err(|source| ManifestError::Mem { region, source })?;
        Ok(region)
    }

    /// Reads and validates the blob within `region` (untrusted: checked
    /// against RAM first).
    pub fn read(mem: &PhysMem, region: PhysRange) -> Result<Self, ManifestError> {
        let mem_err = |source| ManifestError::Mem { region, source };
        mem.check_ram(region).map_err(mem_err)?;
        let size = usize::try_from(region.size()).map_err(|_| {
            mem_err(MemError::NotMapped {
                phys: region.start(),
            })
        })?;
        let head = read_bytes(mem, region.start(), size.min(HEADER_LEN)).map_err(mem_err)?;
        let header =
            ManifestHeader::read_from_bytes(&head).map_err(|_| ManifestError::Truncated {
                need: u64::try_from(HEADER_LEN).unwrap_or(u64::MAX),
                have: region.size(),
            })?;
        // Read only what the header claims, bounded by the region.
        let want = usize::try_from(header.len.get())
            .ok()
            .and_then(|n| n.checked_add(HEADER_LEN))
            .map_or(size, |n| n.min(size));
        let bytes = read_bytes(mem, region.start(), want).map_err(mem_err)?;
        Self::from_bytes(&bytes)
    }

    /// Checks every block against its checksum.
    pub fn verify(&self, mem: &PhysMem) -> Verification {
        let mut v = Verification::default();
        for e in &self.entries {
            let ok = block_checksum(mem, e.block).is_ok_and(|c| c == e.checksum);
            if ok {
                v.verified_bytes = v.verified_bytes.saturating_add(e.block.size());
            } else {
                v.lost_bytes = v.lost_bytes.saturating_add(e.block.size());
                v.lost.push(e.block);
            }
        }
        v
    }
}

/// `a` minus the sorted, merged `cut`.
fn subtract(a: PhysRange, cut: &[PhysRange]) -> Vec<PhysRange> {
    let mut out = Vec::new();
    let mut start = a.start();
    for c in cut.iter().filter(|c| c.overlaps(a)) {
        if c.start() > start {
            out.extend(PhysRange::new(start, c.start()).ok());
        }
        start = start.max(c.end());
    }
    if start < a.end() {
        out.extend(PhysRange::new(start, a.end()).ok());
    }
    out
}

/// Overwrites every populated page of RAM outside `keep` with poison and
/// returns the number of pages poisoned. `keep` is widened to whole pages.
pub(crate) fn poison(mem: &PhysMem, keep: &[PhysRange]) -> Result<u64, ArenaError> {
    let keep: Vec<PhysRange> = keep
        .iter()
        .filter_map(|r| {
            let end = r.end().checked_align_up(PAGE_SIZE)?;
            PhysRange::new(r.start().align_down(PAGE_SIZE), end).ok()
        })
        .collect();
    let keep = kho::merge_ranges(keep.to_vec());
    let mut pages = 0u64;
    for extent in mem.populated()? {
        // Only RAM: the file's holes between RAM ranges are never written.
        for ram in mem.layout().ram().iter().filter(|r| r.overlaps(extent)) {
            let clip = PhysRange::new(ram.start().max(extent.start()), ram.end().min(extent.end()));
            let Ok(clip) = clip else { continue };
            for r in subtract(clip, &keep) {
                let count = usize::try_from(r.size() / 8).unwrap_or(0);
                let words = mem.words(r.start(), count).map_err(|e| ArenaError::Io {
                    what: "poison",
                    source: std::io::Error::other(e),
                })?;
                for (i, w) in (0u64..).zip(words) {
                    w.store(POISON | ((i % PAGE_WORDS) << 3), Ordering::Relaxed);
                }
                pages = pages.saturating_add(r.size() / PAGE_SIZE);
            }
        }
    }
    Ok(pages)
}

#[cfg(test)]
mod tests;
