//! The walk's fuzz input: the format shared by the fuzz target, the corpus
//! seeds and the consistency tests.
//!
//! | bytes | meaning                                                           |
//! |-------|-------------------------------------------------------------------|
//! | 0     | root: page `b % 64` of the arena; bit 7 misaligns it by 8,        |
//! |       | bit 6 moves it below RAM                                          |
//! | 1     | RAM: `[0, 2^(25 + b % 39))`; bit 7 cuts a hole at 8 MiB..16 MiB   |
//! | 2     | forbidden: 0 = none, else `(b & 15)` pages from arena page `b >> 4` |
//! | 3     | node budget (0 = 64)                                              |
//! | 4..   | 12-byte records: page, word (2 bytes LE, % 512), kind,            |
//! |       | value (8 bytes LE)                                                |
//!
//! A record's page is arena page `page % 64`. Kind 1 stores the address of
//! arena page `value % 64` (a valid pointer) at the word, kind 2 fills every
//! word of the page with `value` (one record makes a full leaf or a table
//! whose 512 entries are one child), any other kind stores `value` as it is
//! at the word.
//!
//! The walk and the coalescer run to completion on their own reader of the
//! same tree, and are checked against the plain reference walk of the
//! structure-aware harness ([`tree_fuzz::check_readers`]): same blocks in
//! the same order, or both reject; a disagreement panics.

use alloc::vec::Vec;

use crate::addr::{Block, PhysAddr, PhysRange};
use crate::coalesce::CoalesceSummary;
use crate::mem::{RamMap, VecArena};
use crate::walk::{NodeBudget, NodeSet, RadixReader, WalkError};

use super::tree_fuzz;

/// First arena page.
pub const ARENA_BASE: u64 = 0x100_0000;
/// Arena pages.
pub const ARENA_PAGES: u64 = 64;

/// What the walk and the coalescer made of an input.
#[derive(Debug)]
pub struct Outcome {
    /// The blocks in walk order, or the walk's error.
    pub walk: Result<Vec<Block>, WalkError>,
    /// The ranges and summary, or the coalescer's error.
    pub coalesce: Result<(Vec<PhysRange>, CoalesceSummary), WalkError>,
}

/// Runs an input; `None` if the header is short.
pub fn run(data: &[u8]) -> Option<Outcome> {
    let (header, records) = data.split_at_checked(4)?;
    let [h_root, h_ram, h_forbidden, h_budget] = [header[0], header[1], header[2], header[3]];
    let arena = VecArena::new(
        PhysAddr::new(ARENA_BASE),
        usize::try_from(ARENA_PAGES).unwrap(),
    );
    let page_addr = |i: u64| ARENA_BASE + (i % ARENA_PAGES) * 4096;
    for rec in records.chunks_exact(12) {
        let page = PhysAddr::new(page_addr(u64::from(rec[0])));
        let word = usize::from(u16::from_le_bytes([rec[1], rec[2]])) % 512;
        let mut v = [0u8; 8];
        v.copy_from_slice(&rec[4..12]);
        let v = u64::from_le_bytes(v);
        match rec[3] {
            1 => arena.write_word(page, word, page_addr(v)).ok()?,
            2 => {
                for w in 0..512 {
                    arena.write_word(page, w, v).ok()?;
                }
            }
            _ => arena.write_word(page, word, v).ok()?,
        }
    }
    let mut root = page_addr(u64::from(h_root & 63));
    if h_root & 0x80 != 0 {
        root += 8;
    }
    if h_root & 0x40 != 0 {
        root = 0x1000;
    }
    let ram_end = 1u64 << (25 + u32::from(h_ram & 0x7f) % 39);
    let hole = [
        PhysRange::new(PhysAddr::new(0x2000), PhysAddr::new(0x80_0000)).ok()?,
        PhysRange::new(PhysAddr::new(0x100_0000), PhysAddr::new(ram_end)).ok()?,
    ];
    let whole = [PhysRange::new(PhysAddr::new(0x2000), PhysAddr::new(ram_end)).ok()?];
    let ram: &[PhysRange] = if h_ram & 0x80 != 0 { &hole } else { &whole };
    let forbidden_buf = [PhysRange::from_start_size(
        PhysAddr::new(page_addr(u64::from(h_forbidden >> 4))),
        u64::from(h_forbidden & 15) * 4096,
    )
    .ok()?];
    let forbidden: &[PhysRange] = if h_forbidden == 0 {
        &[]
    } else {
        &forbidden_buf
    };
    let map = RamMap::new(ram, forbidden).ok()?;
    let budget = NodeBudget::new(if h_budget == 0 {
        64
    } else {
        u64::from(h_budget)
    });
    let root = PhysAddr::new(root);
    let reference = tree_fuzz::reference_walk(&arena, map, root, budget);
    let walk = tree_fuzz::check_readers(&arena, map, root, budget, reference.as_ref());
    let coalesce = RadixReader::open(&arena, map, root, NodeSet::new(), budget).and_then(|r| {
        let mut c = r.coalesce();
        let ranges = c.by_ref().collect::<Result<Vec<_>, _>>()?;
        Ok((ranges, *c.summary()))
    });
    Some(Outcome { walk, coalesce })
}
