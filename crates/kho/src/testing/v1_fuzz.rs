//! The structure-aware fuzz harness of the kho-v1 reader, with an oracle
//! ([`run`]).
//!
//! The input is a description, read by [`Bytes`]:
//!
//! | part      | meaning                                                        |
//! |-----------|----------------------------------------------------------------|
//! | machine   | RAM `[0x1000, 2^(28 + b % 8))`, a forbidden range or none, the bitmap size |
//! | blocks    | up to 40 items: a block of a chosen order, or a run of up to 600 order-0 pages; those overlapping an earlier one or not allowed by the machine are left out |
//! | mutations | up to 6 structured edits of the written list: set or clear bitmap bits, give an entry another entry's bitmap (a shared bitmap), put a bitmap in a chunk page, link a chunk back (a cycle), and write a chosen or random value over `num_elms`, `order`, `phys_start`, a bitmap pointer or any word of a list page |
//!
//! The list is written with [`write_v1`] (Linux's layout). The oracle is a
//! plain reference reader ([`reference_read`]) with [`V1Reader`]'s rules.
//! Then:
//! - with no mutation, the reference yields exactly the blocks written, and
//!   [`detect_bitmap_size`] never names the other size (undecided only when
//!   both sizes read the same blocks);
//! - the stream, [`V1Reader::read_all`] and [`V1Reader::check`] fail if
//!   and only if the reference fails, and otherwise yield its blocks (the
//!   stream in list order, `read_all` sorted, `check` their count and
//!   bytes).

use alloc::collections::BTreeSet;
use alloc::vec::Vec;

use super::fuzz_bytes::Bytes;
use super::v1_writer::write_v1;
use crate::addr::{Block, Order, PAGE_SIZE, PhysAddr, PhysRange};
use crate::mem::{PageMap, RamMap, VecArena};
use crate::v1::{BitmapSize, BitmapVerdict, KhoserMemChunk, V1Reader, detect_bitmap_size};

/// Where the arena lives: 16 MiB.
pub const ARENA_BASE: u64 = 0x100_0000;
/// Arena pages.
pub const ARENA_PAGES: usize = 96;
const MAX_ITEMS: u8 = 40;
const MAX_MUTATIONS: u8 = 6;

/// What a run found, for the seeds' tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Blocks written.
    pub written: usize,
    /// Mutations applied.
    pub mutations: usize,
    /// The stream's blocks, or `None` if it failed.
    pub blocks: Option<Vec<Block>>,
}

fn range(start: u64, end: u64) -> PhysRange {
    PhysRange::new(PhysAddr::new(start), PhysAddr::new(end)).unwrap()
}

/// Runs one input and checks the oracle (panics on a violation).
pub fn run(data: &[u8]) -> Outcome {
    let mut input = Bytes::new(data);
    let ram_end = 1u64 << (28 + u32::from(input.u8() % 8));
    let flags = input.u8();
    let size = if flags & 1 != 0 {
        BitmapSize::Page
    } else {
        BitmapSize::Bytes512
    };
    let ram = [range(0x1000, ram_end)];
    let arena_end = ARENA_BASE + ARENA_PAGES as u64 * PAGE_SIZE;
    let forbidden_buf = [{
        let mut start = (input.below(ram_end >> 12) << 12).max(0x1000);
        let pages = 1 + input.below(512);
        if start < arena_end && start + pages * PAGE_SIZE > ARENA_BASE {
            start = arena_end;
        }
        range(start, (start + pages * PAGE_SIZE).min(ram_end).max(start))
    }];
    let forbidden: &[PhysRange] = if flags & 2 != 0 && !forbidden_buf[0].is_empty() {
        &forbidden_buf
    } else {
        &[]
    };
    let map = RamMap::new(&ram, forbidden).unwrap();

    // Blocks: allowed by the machine, disjoint.
    let mut taken: BTreeSet<(u64, u64)> = BTreeSet::new();
    let mut blocks = Vec::new();
    let mut add = |b: Block| {
        let Some(r) = b.range() else { return };
        if !map.is_ram(r) || map.forbidden_overlap(r).is_some() {
            return;
        }
        let (s, e) = (r.start().as_u64(), r.end().as_u64());
        let clash = taken
            .range(..(e, 0))
            .next_back()
            .is_some_and(|&(_, pe)| pe > s);
        if !clash {
            taken.insert((s, e));
            blocks.push(b);
        }
    };
    let ram_pages = ram_end >> 12;
    for _ in 0..input.u8() % (MAX_ITEMS + 1) {
        if input.is_empty() {
            break;
        }
        let kind = input.u8();
        if kind % 4 == 3 {
            let n = 1 + u64::from(input.u16() % 600);
            let start = input.below(ram_pages.saturating_sub(n).max(1));
            for pfn in start..start + n {
                add(Block::new(PhysAddr::new(pfn << 12), Order::ZERO).unwrap());
            }
        } else {
            const ORDERS: [u8; 8] = [0, 0, 1, 3, 9, 10, 11, 18];
            let order = Order::new(ORDERS[usize::from(kind >> 2) % ORDERS.len()]);
            let pfn = input.below(ram_pages >> order.as_u32()) << order.as_u32();
            if let Ok(b) = Block::new(PhysAddr::new(pfn << 12), order) {
                add(b);
            }
        }
    }
    let arena = VecArena::new(PhysAddr::new(ARENA_BASE), ARENA_PAGES);
    let Ok(head) = write_v1(&arena, &blocks, size) else {
        // More bitmaps than the arena holds: nothing to check.
        return Outcome {
            written: 0,
            mutations: 0,
            blocks: None,
        };
    };

    // The list's chunks and bitmaps, before any mutation.
    let mut chunks = Vec::new();
    let mut bitmaps = Vec::new();
    let mut at = head;
    while at != PhysAddr::ZERO {
        let c = KhoserMemChunk::from_page(arena.page(at).unwrap());
        chunks.push(at);
        bitmaps.extend(c.entries().iter().map(|e| e.bitmap()));
        at = c.hdr().next();
    }

    let mutations = input.u8() % (MAX_MUTATIONS + 1);
    let mut applied = 0;
    for _ in 0..mutations {
        if input.is_empty() || chunks.is_empty() {
            break;
        }
        let chunk = chunks[usize::from(input.u8()) % chunks.len()];
        let c = KhoserMemChunk::from_page(arena.page(chunk).unwrap());
        let n = c.entries().len().max(1);
        let entry = usize::from(input.u8()) % n;
        let entry_word = 2 + 2 * entry;
        let word_of = |bitmap: PhysAddr, bit: u64| {
            let page = bitmap.align_down(PAGE_SIZE);
            let off = (bitmap.as_u64() - page.as_u64()) / 8;
            (page, usize::try_from(off + bit / 64).unwrap())
        };
        let (page, word, value) = match input.u8() % 10 {
            0 | 1 if !bitmaps.is_empty() => {
                let bm = bitmaps[usize::from(input.u8()) % bitmaps.len()];
                let bit = input.below(u64::from(size.bits()));
                let (page, w) = word_of(bm, bit);
                let old = arena.page(page).unwrap().load(w).unwrap();
                (page, w, old ^ (1 << (bit % 64)))
            }
            2 if !bitmaps.is_empty() => {
                let bm = bitmaps[usize::from(input.u8()) % bitmaps.len()];
                (chunk, entry_word + 1, bm.as_u64())
            }
            3 => {
                let target = chunks[usize::from(input.u8()) % chunks.len()];
                let slot = input.below(PAGE_SIZE / size.bytes()) * size.bytes();
                (chunk, entry_word + 1, target.as_u64() + slot)
            }
            4 => {
                let target = chunks[usize::from(input.u8()) % chunks.len()];
                (chunk, 0, target.as_u64())
            }
            5 => {
                let num = u64::from(input.u16() % 300);
                let order = u64::from(c.hdr().order_raw());
                (chunk, 1, order | (num << 32))
            }
            6 => {
                let order = u64::from(input.u8() % 60);
                (chunk, 1, order | (u64::from(c.hdr().num_elms()) << 32))
            }
            7 => (chunk, entry_word, input.u64() & !0xfff),
            8 => (chunk, entry_word + 1, input.u64()),
            _ => {
                let pages: Vec<PhysAddr> = chunks
                    .iter()
                    .copied()
                    .chain(bitmaps.iter().map(|b| b.align_down(PAGE_SIZE)))
                    .collect();
                let page = pages[usize::from(input.u8()) % pages.len()];
                (page, usize::from(input.u16()) % 512, input.u64())
            }
        };
        arena.write_word(page, word, value).unwrap();
        applied += 1;
    }

    if applied == 0 {
        let reference = reference_read(&arena, map, head, size);
        assert_eq!(
            reference.as_ref().ok().map(Vec::len),
            Some(blocks.len()),
            "the reference must read back what was written"
        );
        match detect_bitmap_size(&arena, map, head) {
            BitmapVerdict::Decided {
                size: got,
                evidence,
            } => {
                assert_eq!(got, size, "wrong size detected: {evidence}");
            }
            BitmapVerdict::Undecided(why) => {
                let other = match size {
                    BitmapSize::Page => BitmapSize::Bytes512,
                    BitmapSize::Bytes512 => BitmapSize::Page,
                };
                let r = |s| V1Reader::new(&arena, map, s).read_all(head);
                assert_eq!(
                    r(size),
                    r(other),
                    "undecided ({why}) but the readings differ"
                );
            }
        }
    }
    let stream = check_reader(&arena, map, head, size);
    Outcome {
        written: blocks.len(),
        mutations: applied,
        blocks: stream,
    }
}

/// Reads the list at `head` with [`V1Reader`] (the stream,
/// [`V1Reader::read_all`] and [`V1Reader::check`]) and checks each against
/// [`reference_read`] of the same memory: the stream fails if and only if
/// the reference finds a broken rule other than an overlap, and otherwise
/// yields its blocks in list order; `read_all` and `check` fail if and only
/// if the reference does, and otherwise yield its blocks sorted, their
/// count and bytes. Every error formats. Returns the stream's blocks
/// (`None`: it failed); panics on any disagreement.
pub fn check_reader(
    arena: &VecArena,
    map: RamMap<'_>,
    head: PhysAddr,
    size: BitmapSize,
) -> Option<Vec<Block>> {
    let reference = reference_read(arena, map, head, size);
    let reader = V1Reader::new(arena, map, size);
    // The stream checks everything but overlaps.
    let stream: Result<Vec<Block>, _> = reader.blocks(head).collect();
    if let Err(e) = &stream {
        let _ = alloc::format!("{e} {e:?}");
    }
    let streamable = match &reference {
        Ok(b) | Err(RefError::Overlap(b)) => Some(b),
        Err(RefError::Invalid) => None,
    };
    match (&stream, streamable) {
        (Ok(got), Some(want)) => assert_eq!(got, want, "stream and reference differ"),
        (Err(_), None) => {}
        (Ok(got), None) => panic!(
            "the reader accepted {} blocks of an invalid list",
            got.len()
        ),
        (Err(e), Some(_)) => panic!("the stream rejected a list the reference accepts: {e}"),
    }
    let all = reader.read_all(head);
    let check = reader.check(head, |_| ());
    match (&reference, all, check) {
        (Ok(want), Ok(sorted), Ok(summary)) => {
            let mut want_sorted = want.clone();
            want_sorted.sort();
            assert_eq!(sorted, want_sorted, "read_all");
            assert_eq!(summary.blocks, want.len() as u64, "check's count");
            let bytes = want.iter().map(|b| b.size()).sum::<u64>();
            assert_eq!(summary.bytes, bytes, "check's bytes");
        }
        (Err(_), Err(_), Err(_)) => {}
        (r, a, c) => panic!("reference {:?}, read_all {a:?}, check {c:?}", r.is_ok()),
    }
    stream.ok()
}

/// Whether `[start, start + bytes)` lies in one RAM range, clear of the
/// forbidden ranges.
fn allowed(ram: &RamMap<'_>, start: u64, bytes: u64) -> bool {
    PhysRange::from_start_size(PhysAddr::new(start), bytes)
        .is_ok_and(|r| ram.is_ram(r) && ram.forbidden_overlap(r).is_none())
}

/// Why the reference rejects a list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefError {
    /// A rule the stream checks is broken.
    Invalid,
    /// Only the overlap rule is broken: the blocks, in list order.
    Overlap(Vec<Block>),
}

impl From<()> for RefError {
    fn from((): ()) -> Self {
        Self::Invalid
    }
}

/// The reference reader: the list followed chunk by chunk with sets of
/// what it met and [`V1Reader`]'s rules, blocks in list order, then no two
/// overlapping.
pub fn reference_read(
    mem: &VecArena,
    ram: RamMap<'_>,
    head: PhysAddr,
    size: BitmapSize,
) -> Result<Vec<Block>, RefError> {
    let blocks = reference_stream(mem, ram, head, size)?;
    let mut sorted = blocks.clone();
    sorted.sort();
    let mut reach = 0u128;
    for b in &sorted {
        let start = u128::from(b.phys().as_u64());
        if start < reach {
            return Err(RefError::Overlap(blocks));
        }
        reach = reach.max(start + u128::from(b.size()));
    }
    Ok(blocks)
}

/// The reference's stream: every rule but overlaps.
fn reference_stream(
    mem: &VecArena,
    ram: RamMap<'_>,
    head: PhysAddr,
    size: BitmapSize,
) -> Result<Vec<Block>, ()> {
    let budget = V1Reader::<VecArena>::chunk_cap(ram, size);
    let mut chunks = BTreeSet::new();
    let mut bitmaps = BTreeSet::new();
    let mut blocks = Vec::new();
    let mut at = head.as_u64();
    while at != 0 {
        if !at.is_multiple_of(PAGE_SIZE) || !allowed(&ram, at, PAGE_SIZE) {
            return Err(());
        }
        if chunks.len() as u64 >= budget || !chunks.insert(at) {
            return Err(());
        }
        if bitmaps.iter().any(|&b: &u64| b & !(PAGE_SIZE - 1) == at) {
            return Err(());
        }
        let words = mem.page(PhysAddr::new(at)).map_err(|_| ())?.snapshot();
        let (next, order, num) = (words[0], words[1] & 0xffff_ffff, words[1] >> 32);
        if num > 255 || order > 51 {
            return Err(());
        }
        let order = Order::new(order as u8);
        for e in 0..num as usize {
            let (start, bm) = (words[2 + 2 * e], words[3 + 2 * e]);
            if bm % size.bytes() != 0 || !allowed(&ram, bm, size.bytes()) {
                return Err(());
            }
            let span = size.span_shift(order);
            if start != 0 && start.trailing_zeros() < span {
                return Err(());
            }
            if chunks.contains(&(bm & !(PAGE_SIZE - 1))) || !bitmaps.insert(bm) {
                return Err(());
            }
            let page = mem
                .page(PhysAddr::new(bm & !(PAGE_SIZE - 1)))
                .map_err(|_| ())?
                .snapshot();
            let first = ((bm % PAGE_SIZE) / 8) as usize;
            for bit in 0..u64::from(size.bits()) {
                if page[first + (bit / 64) as usize] & (1 << (bit % 64)) == 0 {
                    continue;
                }
                let off = u128::from(bit) << order.shift();
                let phys = u64::try_from(u128::from(start) + off).map_err(|_| ())?;
                if !allowed(&ram, phys, order.bytes()) {
                    return Err(());
                }
                blocks.push(Block::new(PhysAddr::new(phys), order).map_err(|_| ())?);
            }
        }
        at = next;
    }
    Ok(blocks)
}

#[cfg(test)]
#[allow(clippy::as_conversions, clippy::cast_possible_truncation)]
mod tests;
