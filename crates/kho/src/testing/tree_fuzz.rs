//! The structure-aware fuzz harness of the radix walk and the coalescer,
//! with an oracle ([`run`]).
//!
//! The input is a description, read by [`Bytes`]:
//!
//! | part      | meaning                                                        |
//! |-----------|----------------------------------------------------------------|
//! | machine   | RAM `[0, 2^(25 + b % 11))`, optionally a hole; a forbidden range (none, or pages at a chosen place); the node budget (`for_ram`, or 1..=64) |
//! | blocks    | up to 48 items: a block of a chosen order at a chosen place in RAM, a run of up to 2048 order-0 pages (whole words and leaves), or a full leaf (32768 pages); the runs and full leaves preserve at most 131,072 pages in all |
//! | mutations | up to 6 structured edits of the written tree's own pages: set a bit, clear a word, copy an entry elsewhere (a shared child), point an entry at a tree page (a cycle, a wrong level), at an unused zeroed page (an empty subtree), or at any address |
//!
//! The blocks are preserved with the real writer ([`RadixTree`]); those it
//! refuses (overlaps) are left out of the oracle. The oracle is a plain
//! recursive reference walk ([`reference_walk`]) of the same memory with
//! the rules of [`crate::RadixReader`]: every child aligned, in RAM, clear
//! of the forbidden ranges, entered once, within the budget; every key
//! valid, every block in one RAM range and clear of the forbidden ranges;
//! no two blocks overlapping. Then:
//! - with no mutation, the reference yields exactly the blocks written;
//! - the walk fails if and only if the reference fails, and otherwise
//!   yields the reference's blocks in the same (key) order;
//! - the coalescer fails if and only if the walk does, and otherwise
//!   yields the merged ranges of those blocks and counts them.
//!
//! Any other outcome panics: a wrong block accepted, a valid tree
//! rejected, a panic in the readers.

use alloc::collections::BTreeSet;
use alloc::vec::Vec;

use super::fuzz_bytes::Bytes;
use super::tree::{merged, sorted_by_key};
use crate::addr::{Block, Order, PAGE_SIZE, PhysAddr, PhysRange};
use crate::key::{LEAF_BITS, RadixKey, TABLE_ENTRIES};
use crate::mem::{PageMap, RamMap, VecArena};
use crate::radix::RadixTree;
use crate::walk::{NodeBudget, NodeSet, RadixReader, WalkError};

/// Where the arena lives: 16 MiB.
pub const ARENA_BASE: u64 = 0x100_0000;
/// Arena pages: room for the tree of every description.
pub const ARENA_PAGES: usize = 768;
const MAX_ITEMS: usize = 48;
const MAX_MUTATIONS: u8 = 6;
/// Order-0 pages the runs and full leaves of one description may preserve
/// in all (four full leaves): enough for every shape, and it keeps one
/// execution near 100 ms, not seconds.
const MAX_RUN_PAGES: u64 = 4 * LEAF_BITS as u64;

/// What a run found, for the seeds' tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Blocks the writer accepted.
    pub written: usize,
    /// Mutations applied.
    pub mutations: usize,
    /// The walk's blocks, or `None` if it failed.
    pub walk: Option<Vec<Block>>,
}

/// Runs one input and checks the oracle (panics on a violation).
pub fn run(data: &[u8]) -> Outcome {
    let mut input = Bytes::new(data);
    let ram_bits = 25 + u32::from(input.u8() % 11);
    let ram_end = 1u64 << ram_bits;
    let shape = input.u8();
    let hole = shape & 1 != 0;
    let ram_buf = [
        range(0x1000, ram_end / 2),
        range(ram_end / 2 + 0x20_0000, ram_end),
    ];
    let ram_one = [range(0x1000, ram_end)];
    let ram: &[PhysRange] = if hole && ram_end / 2 > ARENA_BASE + 0x40_0000 {
        &ram_buf
    } else {
        &ram_one
    };
    // A forbidden range (scratch), never over the arena: the tree's own
    // pages are valid by construction, only mutations break them.
    let arena_end = ARENA_BASE + ARENA_PAGES as u64 * PAGE_SIZE;
    let forbidden_buf = [{
        let mut start = (input.below(ram_end >> 12) << 12).max(0x1000);
        let pages = 1 + input.below(64);
        if start < arena_end && start + pages * PAGE_SIZE > ARENA_BASE {
            start = arena_end;
        }
        range(start, (start + pages * PAGE_SIZE).min(ram_end).max(start))
    }];
    let forbidden: &[PhysRange] = if shape & 2 != 0 && !forbidden_buf[0].is_empty() {
        &forbidden_buf
    } else {
        &[]
    };
    let map = RamMap::new(ram, forbidden).unwrap();
    let budget_byte = input.u8();
    let for_ram = budget_byte < 200;
    let budget = if for_ram {
        NodeBudget::for_ram(&map)
    } else {
        NodeBudget::new(u64::from(budget_byte - 199))
    };

    // The blocks, through the real writer.
    let arena = VecArena::new(PhysAddr::new(ARENA_BASE), ARENA_PAGES);
    let tree = RadixTree::new(&arena).unwrap();
    let mut written = Vec::new();
    let items = usize::from(input.u8()) % (MAX_ITEMS + 1);
    let ram_pages = ram_end >> 12;
    let mut runs_left = MAX_RUN_PAGES;
    for _ in 0..items {
        if input.is_empty() {
            break;
        }
        let kind = input.u8();
        // Only blocks the machine allows are written; the writer refuses
        // overlaps.
        let mut try_block = |b: Block| {
            let fits = b
                .range()
                .is_some_and(|r| map.is_ram(r) && map.forbidden_overlap(r).is_none());
            if fits && tree.preserve(b).is_ok() {
                written.push(b);
            }
        };
        match kind % 8 {
            0..=4 => {
                const ORDERS: [u8; 8] = [0, 0, 1, 2, 4, 9, 10, 18];
                let order = match kind >> 3 {
                    0..=23 => ORDERS[usize::from(kind >> 3) % ORDERS.len()],
                    x => x % 31,
                };
                let order = Order::new(order);
                let slots = ram_pages >> order.as_u32();
                let pfn = input.below(slots) << order.as_u32();
                if let Ok(b) = Block::new(PhysAddr::new(pfn << 12), order) {
                    try_block(b);
                }
            }
            5 | 6 => {
                let n = (1 + u64::from(input.u16() % 2048)).min(runs_left);
                runs_left -= n;
                let start = input.below(ram_pages.saturating_sub(n).max(1));
                for pfn in start..start + n {
                    try_block(Block::new(PhysAddr::new(pfn << 12), Order::ZERO).unwrap());
                }
            }
            _ if runs_left < u64::from(LEAF_BITS) => {}
            _ => {
                runs_left -= u64::from(LEAF_BITS);
                let leaves = ram_pages / u64::from(LEAF_BITS);
                let leaf = input.below(leaves.max(1));
                let start = leaf * u64::from(LEAF_BITS);
                for pfn in start..(start + u64::from(LEAF_BITS)).min(ram_pages) {
                    try_block(Block::new(PhysAddr::new(pfn << 12), Order::ZERO).unwrap());
                }
            }
        }
    }
    let root = tree.root();

    // Structured mutations of the tree's own pages (allocated first, in
    // order, from the arena's start).
    let used = arena.allocated();
    let page_at = |i: u64| PhysAddr::new(ARENA_BASE + i * PAGE_SIZE);
    let mutations = usize::from(input.u8() % (MAX_MUTATIONS + 1));
    let mut applied = 0;
    for _ in 0..mutations {
        if input.is_empty() || used == 0 {
            break;
        }
        let page = page_at(input.below(used as u64));
        let kind = input.u8();
        let words = arena.page(page).unwrap().snapshot();
        let nonzero: Vec<usize> = (0..TABLE_ENTRIES).filter(|&w| words[w] != 0).collect();
        let any_word = usize::from(input.u16()) % TABLE_ENTRIES;
        let some_nonzero = if nonzero.is_empty() {
            any_word
        } else {
            nonzero[usize::from(input.u16()) % nonzero.len()]
        };
        let (word, value) = match kind % 6 {
            0 => (any_word, words[any_word] | 1u64 << (input.u8() % 64)),
            1 => (some_nonzero, 0),
            2 => {
                let other = page_at(input.below(used as u64));
                let w = arena.page(other).unwrap().snapshot();
                let src = (0..TABLE_ENTRIES).find(|&i| w[i] != 0).unwrap_or(0);
                (any_word, w[src])
            }
            3 => (some_nonzero, page_at(input.below(used as u64)).as_u64()),
            4 => {
                // An unused page of the arena: zeroed, an empty subtree.
                let spare = used as u64 + input.below((ARENA_PAGES - used).max(1) as u64);
                let spare = spare.min(ARENA_PAGES as u64 - 1);
                arena.claim(page_at(spare)).unwrap();
                (some_nonzero, page_at(spare).as_u64())
            }
            _ => (some_nonzero, input.u64()),
        };
        arena.write_word(page, word, value).unwrap();
        applied += 1;
    }

    // The oracle and the readers.
    let reference = reference_walk(&arena, map, root, budget);
    // Unmutated, within the derived budget: exactly what was written
    // (which also proves the budget holds the writer's tree).
    if applied == 0 && for_ram {
        assert_eq!(
            reference.as_ref(),
            Some(&sorted_by_key(&written)),
            "the reference walk must read back what the writer wrote"
        );
    }
    let walk = check_readers(&arena, map, root, budget, reference.as_ref());
    Outcome {
        written: written.len(),
        mutations: applied,
        walk: walk.ok(),
    }
}

/// Runs the walk and the coalescer over the tree at `root` and checks them
/// against `reference` (what [`reference_walk`] made of the same memory):
/// the walk fails if and only if the reference does, and otherwise yields
/// its blocks in the same order; the coalescer fails if and only if the
/// walk does, and otherwise yields their merged ranges and counts them.
/// Returns the walk's outcome; panics on any disagreement.
pub fn check_readers(
    mem: &VecArena,
    map: RamMap<'_>,
    root: PhysAddr,
    budget: NodeBudget,
    reference: Option<&Vec<Block>>,
) -> Result<Vec<Block>, WalkError> {
    let walk = RadixReader::open(mem, map, root, NodeSet::new(), budget)
        .and_then(|r| r.walk().collect::<Result<Vec<_>, _>>());
    match (&walk, reference) {
        (Ok(got), Some(want)) => assert_eq!(got, want, "walk and reference differ"),
        (Err(_), None) => {}
        (Ok(got), None) => panic!("the walk accepted {} blocks of an invalid tree", got.len()),
        (Err(e), Some(_)) => panic!("the walk rejected a valid tree: {e}"),
    }
    let coalesce = RadixReader::open(mem, map, root, NodeSet::new(), budget).and_then(|r| {
        let mut c = r.coalesce();
        let ranges = c.by_ref().collect::<Result<Vec<_>, _>>()?;
        Ok((ranges, c.summary().counts().total()))
    });
    match (&walk, coalesce) {
        (Ok(blocks), Ok((ranges, total))) => {
            assert_eq!(ranges, merged(blocks), "coalesced ranges");
            assert_eq!(total, blocks.len() as u64, "coalesced block count");
        }
        (Err(_), Err(_)) => {}
        (w, c) => panic!("walk and coalescer disagree: {w:?} vs {c:?}"),
    }
    walk
}

fn range(start: u64, end: u64) -> PhysRange {
    PhysRange::new(PhysAddr::new(start), PhysAddr::new(end)).unwrap()
}

/// Whether the page at `phys` may be a tree node: aligned, wholly in one
/// RAM range, clear of the forbidden ranges.
fn node_ok(ram: &RamMap<'_>, phys: u64) -> bool {
    let Ok(r) = PhysRange::from_start_size(PhysAddr::new(phys), PAGE_SIZE) else {
        return false;
    };
    phys.is_multiple_of(PAGE_SIZE) && ram.is_ram(r) && ram.forbidden_overlap(r).is_none()
}

/// The reference walk: a plain recursive descent with the reader's rules
/// (see the module doc). `None` for any broken rule.
pub fn reference_walk(
    mem: &VecArena,
    ram: RamMap<'_>,
    root: PhysAddr,
    budget: NodeBudget,
) -> Option<Vec<Block>> {
    reference(mem, ram, root, budget).ok()
}

fn reference(
    mem: &VecArena,
    ram: RamMap<'_>,
    root: PhysAddr,
    budget: NodeBudget,
) -> Result<Vec<Block>, ()> {
    let mut visited = BTreeSet::new();
    let mut blocks = Vec::new();
    if !node_ok(&ram, root.as_u64()) {
        return Err(());
    }
    visited.insert(root.as_u64());
    if visited.len() as u64 > budget.nodes() {
        return Err(());
    }
    let page = mem.page(root).map_err(|_| ())?.snapshot();
    if page[4..].iter().any(|&w| w != 0) {
        return Err(());
    }
    descend(mem, &ram, &page, 5, 0, budget, &mut visited, &mut blocks)?;
    // No two blocks overlap.
    let mut by_addr = blocks.clone();
    by_addr.sort();
    let mut reach = 0u128;
    for b in &by_addr {
        let start = u128::from(b.phys().as_u64());
        if start < reach {
            return Err(());
        }
        reach = reach.max(start + u128::from(b.size()));
    }
    Ok(blocks)
}

#[allow(clippy::too_many_arguments)]
fn descend(
    mem: &VecArena,
    ram: &RamMap<'_>,
    node: &[u64; 512],
    level: u32,
    prefix: u64,
    budget: NodeBudget,
    visited: &mut BTreeSet<u64>,
    blocks: &mut Vec<Block>,
) -> Result<(), ()> {
    for (i, &child) in node.iter().enumerate() {
        if child == 0 {
            continue;
        }
        if !node_ok(ram, child) || !visited.insert(child) || visited.len() as u64 > budget.nodes() {
            return Err(());
        }
        let page = mem.page(PhysAddr::new(child)).map_err(|_| ())?.snapshot();
        let index = (prefix << 9) | i as u64;
        if level == 1 {
            for (w, &word) in page.iter().enumerate() {
                let mut bits = word;
                while bits != 0 {
                    let bit = (w as u64) * 64 + u64::from(bits.trailing_zeros());
                    bits &= bits - 1;
                    let key = (index << 15) | bit;
                    let block = RadixKey::from_raw(key).decode().map_err(|_| ())?;
                    let r = block.range().ok_or(())?;
                    if !ram.is_ram(r) || ram.forbidden_overlap(r).is_some() {
                        return Err(());
                    }
                    blocks.push(block);
                }
            }
        } else {
            descend(mem, ram, &page, level - 1, index, budget, visited, blocks)?;
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::as_conversions, clippy::cast_possible_truncation)]
mod tests;
