//! A kho-v1 chunk list writer, to build the reader's inputs: Linux's
//! `kho_mem_serialize()` layout (see [`crate::V1Reader`]).

use alloc::collections::BTreeMap;
use alloc::vec;
use alloc::vec::Vec;
use core::sync::atomic::Ordering;

use crate::addr::{Block, Order, PAGE_SIZE, PhysAddr};
use crate::mem::{MemError, PageAlloc, PageMap};
use crate::v1::{BitmapSize, KhoserMemBitmapPtr, KhoserMemChunk};

/// Serializes `blocks` into a kho-v1 chunk list the way Linux's
/// `kho_mem_serialize()` lays it out (a fresh chunk per order, orders
/// and bitmaps ascending, 255 entries per chunk), with bitmaps of
/// `size` (512-byte bitmaps packed eight to a page, as kmalloc-512
/// would). Returns the head (zero if `blocks` is empty). The memory is
/// allocated from `mem` and never freed.
pub fn write_v1<A: PageAlloc + PageMap + ?Sized>(
    mem: &A,
    blocks: &[Block],
    size: BitmapSize,
) -> Result<PhysAddr, MemError> {
    // (order, xarray index) -> bitmap words.
    let mut bitmaps: BTreeMap<(Order, u64), Vec<u64>> = BTreeMap::new();
    for &block in blocks {
        let span_shift = size.span_shift(block.order());
        let index = block.phys().as_u64().checked_shr(span_shift).unwrap_or(0);
        let offset = block
            .phys()
            .as_u64()
            .saturating_sub(phys_start(index, span_shift));
        let bit = offset.checked_shr(block.order().shift()).unwrap_or(0);
        let words = bitmaps
            .entry((block.order(), index))
            .or_insert_with(|| vec![0; size.words()]);
        let word = usize::try_from(bit / 64).unwrap_or(usize::MAX);
        if let Some(w) = words.get_mut(word) {
            *w |= 1u64 << (bit % 64);
        }
    }

    // Bitmap storage, in (order, index) order.
    let per_page = PAGE_SIZE.checked_div(size.bytes()).unwrap_or(1);
    let mut slab: Option<(PhysAddr, u64)> = None; // page, slots used
    let mut entries: Vec<(Order, KhoserMemBitmapPtr)> = Vec::new();
    for (&(order, index), words) in &bitmaps {
        let (page, used) = match slab {
            Some((page, used)) if used < per_page => (page, used),
            _ => (mem.alloc_zeroed_page()?, 0),
        };
        slab = Some((page, used.saturating_add(1)));
        let at = page
            .checked_add(used.saturating_mul(size.bytes()))
            .ok_or(MemError::OutOfMemory)?;
        let first = usize::try_from(used.saturating_mul(size.bytes()) / 8).unwrap_or(0);
        let dst = mem.page(page)?.words().iter().skip(first);
        for (d, &w) in dst.zip(words) {
            d.store(w, Ordering::Relaxed);
        }
        let start = PhysAddr::new(phys_start(index, size.span_shift(order)));
        entries.push((order, KhoserMemBitmapPtr::new(start, at)));
    }

    // Chunks.
    let mut chunks: Vec<(PhysAddr, KhoserMemChunk)> = Vec::new();
    for (order, entry) in entries {
        let fits = chunks
            .last_mut()
            .is_some_and(|(_, c)| c.hdr().order_raw() == order.as_u32() && c.push(entry));
        if !fits {
            let phys = mem.alloc_zeroed_page()?;
            if let Some((_, prev)) = chunks.last_mut() {
                prev.set_next(phys);
            }
            let mut chunk = KhoserMemChunk::new(order);
            chunk.push(entry);
            chunks.push((phys, chunk));
        }
    }
    for (phys, chunk) in &chunks {
        let page = mem.page(*phys)?;
        for (d, w) in page.words().iter().zip(chunk.to_words()) {
            d.store(w, Ordering::Relaxed);
        }
    }
    Ok(chunks.first().map_or(PhysAddr::ZERO, |(p, _)| *p))
}

/// `index << span_shift`, zero when the shift leaves 64 bits (only
/// index 0 exists then).
fn phys_start(index: u64, span_shift: u32) -> u64 {
    index.checked_shl(span_shift).unwrap_or(0)
}
