//! The buddy allocator, as Linux's `mm/page_alloc.c` has it.
//!
//! # DOC: buddy overview
//!
//! Free memory is kept in blocks of `2^order` pages, naturally aligned, for
//! orders `0..=MAX_PAGE_ORDER` (10: 4 MiB). The [`Zone`] holds one free list
//! per order (`free_area[order]`) with its length `nr_free`; the lists are
//! linked through the free blocks' own struct pages (`page->lru`, holding
//! vmemmap addresses, see [`crate::memmap`]), and a free block's head page
//! carries `PageBuddy` and its order in `page->private`.
//!
//! * Freeing (`__free_one_page`) looks at the *buddy* `pfn ^ (1 << order)`:
//!   if it is a free block of the same order it is taken off its list and
//!   the two merge, up to `MAX_PAGE_ORDER`.
//! * Allocating (`__rmqueue_smallest`) takes the first block of the smallest
//!   non-empty order that fits and splits it (`expand`), putting the upper
//!   halves back on the lower lists.
//! * At the end of boot [`memblock_free_all`] hands every free memblock range
//!   to the allocator in the largest naturally aligned chunks
//!   (`__free_pages_memory`); reserved pages stay `PG_reserved`.
//!
//! The machine has one node and a single zone (`ZONE_NORMAL`) spanning all
//! memory, one migrate type, and no per-cpu page lists: what is modelled is
//! the buddy structure and its cost, not placement policy. The zone sits
//! behind a `Mutex` (Linux's `zone->lock`), so [`Buddy`] can serve
//! [`kho::PageAlloc`] to many threads.

use core::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use kho::{MemError, Order, PageAlloc, Pfn, PhysAddr, PhysRange};

use crate::memblock::{MEMBLOCK_ALLOC_ACCESSIBLE, Memblock, MemblockError, MemblockFlags};
use crate::memmap::{
    LIST_POISON1, LIST_POISON2, MemMap, MemmapError, STRUCT_PAGE_WORDS, StructPage, TAIL_MAPPING,
    pg, vmemmap_to_pfn,
};

/// The largest order of a buddy block (`MAX_PAGE_ORDER`): 4 MiB.
pub const MAX_PAGE_ORDER: u32 = 10;
/// Number of free lists (`NR_PAGE_ORDERS`).
pub(crate) const NR_PAGE_ORDERS: usize = MAX_PAGE_ORDER as usize + 1;
/// The order of a 1 GiB gigantic folio.
pub(crate) const GIGANTIC_ORDER: Order = Order::new(18);

/// Where `zone->free_area[0].free_list` would live in the kernel: the list
/// heads are not in the simulated memory, but the `lru` links that point to
/// them hold these addresses (`FREE_AREA_BASE + 16 * order`).
pub(crate) const FREE_AREA_BASE: u64 = 0xffff_ffff_8300_0000;
const LIST_HEAD_SIZE: u64 = 16;

fn free_list_head(order: u32) -> u64 {
    FREE_AREA_BASE + LIST_HEAD_SIZE * u64::from(order)
}

/// Errors of the buddy allocator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BuddyError {
    /// No free block of the order or above.
    #[error("out of memory: no free block of order {order} or above")]
    NoMemory {
        /// The order asked for.
        order: Order,
    },
    /// An order above `MAX_PAGE_ORDER`.
    #[error("order {order} is above MAX_PAGE_ORDER ({MAX_PAGE_ORDER})")]
    BadOrder {
        /// The order.
        order: Order,
    },
    /// A block not aligned to its order.
    #[error("pfn {pfn} is not aligned to order {order}")]
    Misaligned {
        /// The frame.
        pfn: Pfn,
        /// The order.
        order: Order,
    },
    /// Freeing a page that is not an allocated page (`bad_page`).
    #[error("bad page at pfn {pfn} on free: {reason}")]
    BadPage {
        /// The frame.
        pfn: Pfn,
        /// What is wrong.
        reason: &'static str,
    },
    /// A free list link that is neither a list head nor a struct page.
    #[error("free list of order {order} is corrupt at pfn {pfn}: link {link:#x}")]
    CorruptList {
        /// The list's order.
        order: u32,
        /// The page holding the link.
        pfn: Pfn,
        /// The link's value.
        link: u64,
    },
    /// A struct page could not be reached.
    #[error(transparent)]
    Memmap(#[from] MemmapError),
    /// Memblock refused an operation.
    #[error(transparent)]
    Memblock(#[from] MemblockError),
}

/// One free list (`struct free_area`, one migrate type): the host keeps the
/// list head's two links, the struct pages keep the rest.
#[derive(Clone, Copy, Debug, Default)]
struct FreeArea {
    first: Option<Pfn>,
    last: Option<Pfn>,
    nr_free: u64,
}

/// The single zone (`struct zone`).
#[derive(Debug, Default)]
pub struct Zone {
    free_area: [FreeArea; NR_PAGE_ORDERS],
    managed_pages: u64,
}

fn pfn_add(p: Pfn, n: u64) -> Pfn {
    p.checked_add(n).unwrap_or(Pfn::MAX)
}

fn order_of(o: u32) -> Order {
    Order::try_new(o).unwrap_or(Order::MAX)
}

impl Zone {
    /// `zone_managed_pages`.
    pub fn managed_pages(&self) -> u64 {
        self.managed_pages
    }

    /// `nr_free` of `free_area[order]`.
    pub fn nr_free(&self, order: u32) -> u64 {
        self.free_area.get(order as usize).map_or(0, |a| a.nr_free)
    }

    /// Free pages over all orders.
    pub fn nr_free_pages(&self) -> u64 {
        self.free_area
            .iter()
            .enumerate()
            .map(|(o, a)| a.nr_free << o)
            .sum()
    }

    fn link_to_pfn(order: u32, at: Pfn, link: u64) -> Result<Option<Pfn>, BuddyError> {
        if link == free_list_head(order) {
            return Ok(None);
        }
        vmemmap_to_pfn(link)
            .map(Some)
            .ok_or(BuddyError::CorruptList {
                order,
                pfn: at,
                link,
            })
    }

    /// `__add_to_free_list`: at the head, or at the tail when `tail`.
    fn add_to_free_list(
        &mut self,
        mm: &MemMap<'_>,
        page: &StructPage<'_>,
        order: u32,
        tail: bool,
    ) -> Result<(), BuddyError> {
        let head = free_list_head(order);
        let area = &mut self.free_area[order as usize];
        if tail {
            match area.last {
                Some(last) => {
                    mm.pfn_to_page(last)?.set_lru_next(page.lru_addr());
                    page.set_lru_prev(mm.pfn_to_page(last)?.lru_addr());
                }
                None => {
                    page.set_lru_prev(head);
                    area.first = Some(page.pfn());
                }
            }
            page.set_lru_next(head);
            area.last = Some(page.pfn());
        } else {
            match area.first {
                Some(first) => {
                    let f = mm.pfn_to_page(first)?;
                    f.set_lru_prev(page.lru_addr());
                    page.set_lru_next(f.lru_addr());
                }
                None => {
                    page.set_lru_next(head);
                    area.last = Some(page.pfn());
                }
            }
            page.set_lru_prev(head);
            area.first = Some(page.pfn());
        }
        area.nr_free += 1;
        Ok(())
    }

    /// `del_page_from_free_list`: `list_del`, `__ClearPageBuddy`,
    /// `set_page_private(page, 0)`, `nr_free--`.
    fn del_page_from_free_list(
        &mut self,
        mm: &MemMap<'_>,
        page: &StructPage<'_>,
        order: u32,
    ) -> Result<(), BuddyError> {
        let next = Self::link_to_pfn(order, page.pfn(), page.lru_next())?;
        let prev = Self::link_to_pfn(order, page.pfn(), page.lru_prev())?;
        let area = &mut self.free_area[order as usize];
        match next {
            Some(n) => mm.pfn_to_page(n)?.set_lru_prev(page.lru_prev()),
            None => area.last = prev,
        }
        match prev {
            Some(p) => mm.pfn_to_page(p)?.set_lru_next(page.lru_next()),
            None => area.first = next,
        }
        area.nr_free = area.nr_free.saturating_sub(1);
        page.set_lru_next(LIST_POISON1);
        page.set_lru_prev(LIST_POISON2);
        page.clear_buddy();
        page.set_private(0);
        Ok(())
    }

    /// `page_is_buddy` + `find_buddy_page_pfn`: the buddy of `pfn` at
    /// `order` if it is a free block of that very order.
    fn find_buddy<'m>(mm: &MemMap<'m>, pfn: Pfn, order: u32) -> Option<StructPage<'m>> {
        let buddy_pfn = Pfn::new(pfn.as_u64() ^ (1 << order))?;
        let buddy = mm.pfn_to_page(buddy_pfn).ok()?;
        (buddy.is_buddy() && buddy.buddy_order() == u64::from(order)).then_some(buddy)
    }

    /// `buddy_merge_likely`: whether the block just freed is likely to merge
    /// soon (then it goes to the tail, to stay free longer).
    fn buddy_merge_likely(mm: &MemMap<'_>, pfn: Pfn, order: u32) -> bool {
        if order >= MAX_PAGE_ORDER - 1 {
            return false;
        }
        let higher = Pfn::new(pfn.as_u64() & !(1u64 << order)).unwrap_or(pfn);
        Self::find_buddy(mm, higher, order + 1).is_some()
    }

    /// `__free_one_page`: frees the block `(pfn, order)` and merges it with
    /// its buddies.
    pub fn __free_one_page(
        &mut self,
        mm: &MemMap<'_>,
        pfn: Pfn,
        order: u32,
        fpi_to_tail: bool,
    ) -> Result<(), BuddyError> {
        let (mut pfn, mut order) = (pfn, order);
        while order < MAX_PAGE_ORDER {
            let Some(buddy) = Self::find_buddy(mm, pfn, order) else {
                break;
            };
            self.del_page_from_free_list(mm, &buddy, order)?;
            pfn = Pfn::new(buddy.pfn().as_u64() & pfn.as_u64()).unwrap_or(pfn);
            order += 1;
        }
        let page = mm.pfn_to_page(pfn)?;
        // set_buddy_order
        page.set_private(u64::from(order));
        page.set_buddy();
        let to_tail = fpi_to_tail || Self::buddy_merge_likely(mm, pfn, order);
        self.add_to_free_list(mm, &page, order, to_tail)
    }

    /// `__rmqueue_smallest`: takes a block of `order`, splitting a larger one
    /// if needed.
    pub fn __rmqueue_smallest(
        &mut self,
        mm: &MemMap<'_>,
        order: u32,
    ) -> Result<Option<Pfn>, BuddyError> {
        for current in order..=MAX_PAGE_ORDER {
            let Some(first) = self.free_area[current as usize].first else {
                continue;
            };
            let page = mm.pfn_to_page(first)?;
            self.del_page_from_free_list(mm, &page, current)?;
            self.expand(mm, first, order, current)?;
            return Ok(Some(first));
        }
        Ok(None)
    }

    /// `expand`: puts the upper halves of a split block back.
    fn expand(&mut self, mm: &MemMap<'_>, pfn: Pfn, low: u32, high: u32) -> Result<(), BuddyError> {
        let mut high = high;
        while high > low {
            high -= 1;
            let half = mm.pfn_to_page(pfn_add(pfn, 1 << high))?;
            self.add_to_free_list(mm, &half, high, false)?;
            half.set_private(u64::from(high));
            half.set_buddy();
        }
        Ok(())
    }
}

/// The buddy allocator: the memmap and the zone behind its lock.
pub struct Buddy<'m> {
    memmap: MemMap<'m>,
    zone: Mutex<Zone>,
    bad_pages: AtomicU64,
    poison_on_alloc: AtomicBool,
}

impl fmt::Debug for Buddy<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let zone = self.zone();
        f.debug_struct("Buddy")
            .field("managed_pages", &zone.managed_pages)
            .field("nr_free_pages", &zone.nr_free_pages())
            .finish()
    }
}

impl<'m> Buddy<'m> {
    /// An allocator with empty free lists over `memmap`.
    pub fn new(memmap: MemMap<'m>) -> Self {
        Self {
            memmap,
            zone: Mutex::new(Zone::default()),
            bad_pages: AtomicU64::new(0),
            poison_on_alloc: AtomicBool::new(false),
        }
    }

    /// From now on (`on`), every block [`Buddy::alloc_pages`] hands out is
    /// first filled with `crate::manifest::POISON` (like
    /// `init_on_alloc`, with a pattern instead of zeroes), so a consumer
    /// that reads memory it did not write sees poison, never stale data.
    pub fn set_poison_on_alloc(&self, on: bool) {
        self.poison_on_alloc.store(on, Ordering::Relaxed);
    }

    /// Whether allocations are poisoned.
    pub fn poison_on_alloc(&self) -> bool {
        self.poison_on_alloc.load(Ordering::Relaxed)
    }

    /// The memmap.
    pub fn memmap(&self) -> &MemMap<'m> {
        &self.memmap
    }

    /// The zone, locked (`spin_lock(&zone->lock)`).
    pub fn zone(&self) -> MutexGuard<'_, Zone> {
        self.zone.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Free pages over all orders.
    pub fn nr_free_pages(&self) -> u64 {
        self.zone().nr_free_pages()
    }

    /// Pages handed to the allocator at boot.
    pub fn managed_pages(&self) -> u64 {
        self.zone().managed_pages
    }

    /// `adjust_managed_page_count`: pages that join (`nr > 0`) or leave the
    /// zone's managed count outside the free path (KHO restore, balloon).
    pub fn adjust_managed_page_count(&self, nr: i64) {
        let mut zone = self.zone();
        zone.managed_pages = zone.managed_pages.saturating_add_signed(nr);
    }

    /// Pages leaked by `bad_page` (invalid frees through [`PageAlloc`]).
    pub fn bad_pages(&self) -> u64 {
        self.bad_pages.load(Ordering::Relaxed)
    }

    fn check_order(order: Order) -> Result<u32, BuddyError> {
        if order.as_u32() > MAX_PAGE_ORDER {
            return Err(BuddyError::BadOrder { order });
        }
        Ok(order.as_u32())
    }

    /// `alloc_pages(order)`: a block of `2^order` pages, head refcount 1
    /// (`prep_new_page`), not compound, not zeroed.
    pub fn alloc_pages(&self, order: Order) -> Result<Pfn, BuddyError> {
        let o = Self::check_order(order)?;
        let pfn = self
            .zone()
            .__rmqueue_smallest(&self.memmap, o)?
            .ok_or(BuddyError::NoMemory { order })?;
        // post_alloc_hook
        let page = self.memmap.pfn_to_page(pfn)?;
        page.set_private(0);
        page.set_refcount(1);
        if self.poison_on_alloc() {
            let range = kho::Block::from_pfn(pfn, order)
                .ok()
                .and_then(|b| b.range())
                .ok_or(BuddyError::Misaligned { pfn, order })?;
            self.memmap
                .mem()
                .fill(range, crate::manifest::POISON)
                .map_err(MemmapError::from)?;
        }
        Ok(pfn)
    }

    /// `folio_alloc(order)`: a compound page (`prep_compound_page`).
    pub fn folio_alloc(&self, order: Order) -> Result<Pfn, BuddyError> {
        let pfn = self.alloc_pages(order)?;
        if order.as_u32() > 0 {
            prep_compound_page(&self.memmap, pfn, order)?;
        }
        Ok(pfn)
    }

    /// `__free_pages(page, order)` for a block whose head has refcount 1:
    /// `free_pages_prepare` (undoes the compound page, clears flags) then
    /// `__free_one_page`.
    pub fn free_pages(&self, pfn: Pfn, order: Order) -> Result<(), BuddyError> {
        let o = Self::check_order(order)?;
        if pfn.trailing_zeros() < o {
            return Err(BuddyError::Misaligned { pfn, order });
        }
        let page = self.memmap.pfn_to_page(pfn)?;
        let bad = |reason| Err(BuddyError::BadPage { pfn, reason });
        if page.is_buddy() {
            return bad("already free (PageBuddy)");
        }
        if page.is_reserved() {
            return bad("PG_reserved");
        }
        if page.refcount() != 1 {
            return bad("refcount is not 1");
        }
        let compound = page.is_head();
        if compound && self.memmap.folio_order(pfn)? != order {
            return bad("folio order differs from the order freed");
        }
        let links = page.flags() & !((1u64 << 32) - 1);
        for i in 1..(1u64 << o) {
            let tail = self.memmap.pfn_to_page(pfn_add(pfn, i))?;
            if compound {
                // free_tail_page_prepare: clear_compound_head, mapping.
                tail.set_lru_next(0);
                tail.set_mapping(0);
                tail.set_flags(tail.flags() & !((1u64 << 32) - 1));
            }
        }
        page.set_refcount(0);
        page.set_flags(links);
        page.set_mapping(0);
        page.set_index(0);
        page.set_private(0);
        self.zone().__free_one_page(&self.memmap, pfn, o, false)
    }

    /// `folio_put` of the last reference: frees the folio at `head` with
    /// its own order.
    pub fn folio_put(&self, head: Pfn) -> Result<(), BuddyError> {
        let order = self.memmap.folio_order(head)?;
        self.free_pages(head, order)
    }

    /// `split_page`: turns a non-compound block of `order` into `2^order`
    /// order-0 pages, each with refcount 1.
    pub fn split_page(&self, pfn: Pfn, order: Order) -> Result<(), BuddyError> {
        let o = Self::check_order(order)?;
        let head = self.memmap.pfn_to_page(pfn)?;
        if head.is_head() {
            return Err(BuddyError::BadPage {
                pfn,
                reason: "split_page of a compound page",
            });
        }
        for i in 1..(1u64 << o) {
            self.memmap.pfn_to_page(pfn_add(pfn, i))?.set_refcount(1);
        }
        Ok(())
    }

    /// `alloc_pages_exact`: `pages` contiguous pages, as a block of the
    /// next order split into pages, the tail beyond `pages` freed. Returns
    /// the first frame.
    pub fn alloc_pages_exact(&self, pages: u64) -> Result<Pfn, BuddyError> {
        let order = Order::try_new(pages.max(1).next_power_of_two().ilog2())
            .ok()
            .filter(|o| o.as_u32() <= MAX_PAGE_ORDER)
            .ok_or(BuddyError::BadOrder {
                order: Order::new(MAX_PAGE_ORDER as u8 + 1),
            })?;
        let head = self.alloc_pages(order)?;
        self.split_page(head, order)?;
        for i in pages..order.pages() {
            let pfn = head.checked_add(i).ok_or(BuddyError::NoMemory { order })?;
            self.free_pages(pfn, Order::ZERO)?;
        }
        Ok(head)
    }

    /// The free lists, walked through the struct pages: `(order, pfns in
    /// ascending order)` for each order, after checking every link (each
    /// page is `PageBuddy` with its list's order, `prev` links mirror `next`
    /// links, the length is `nr_free`).
    pub fn free_lists(&self) -> Result<Vec<(Order, Vec<Pfn>)>, BuddyError> {
        let zone = self.zone();
        let mut out = Vec::with_capacity(NR_PAGE_ORDERS);
        for (o, area) in zone.free_area.iter().enumerate() {
            let order = o as u32;
            let mut pfns = Vec::new();
            let mut prev_link = free_list_head(order);
            let mut cur = area.first;
            while let Some(p) = cur {
                if pfns.len() as u64 >= area.nr_free {
                    return Err(BuddyError::CorruptList {
                        order,
                        pfn: p,
                        link: prev_link,
                    });
                }
                let page = self.memmap.pfn_to_page(p)?;
                if !page.is_buddy()
                    || page.buddy_order() != u64::from(order)
                    || page.lru_prev() != prev_link
                {
                    return Err(BuddyError::CorruptList {
                        order,
                        pfn: p,
                        link: page.lru_prev(),
                    });
                }
                pfns.push(p);
                prev_link = page.lru_addr();
                cur = Zone::link_to_pfn(order, p, page.lru_next())?;
                if cur.is_none() && area.last != Some(p) {
                    return Err(BuddyError::CorruptList {
                        order,
                        pfn: p,
                        link: page.lru_next(),
                    });
                }
            }
            if pfns.len() as u64 != area.nr_free {
                return Err(BuddyError::CorruptList {
                    order,
                    pfn: Pfn::default(),
                    link: area.nr_free,
                });
            }
            pfns.sort_unstable();
            out.push((order_of(order), pfns));
        }
        Ok(out)
    }
}

impl PageAlloc for Buddy<'_> {
    fn alloc_zeroed_page(&self) -> Result<PhysAddr, MemError> {
        let pfn = self
            .alloc_pages(Order::ZERO)
            .map_err(|_| MemError::OutOfMemory)?;
        let phys = pfn.phys();
        self.memmap.mem().page_at(phys)?.zero();
        Ok(phys)
    }

    fn free_page(&self, phys: PhysAddr) {
        if !phys.is_page_aligned() || self.free_pages(phys.pfn(), Order::ZERO).is_err() {
            // bad_page(): report and leak the page.
            self.bad_pages.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// `prep_compound_page`: makes `2^order` pages at `head` a folio: `PG_head`
/// on the head, `compound_head = head | 1` and `TAIL_MAPPING` on the tails,
/// and in the first tail (`prep_compound_head`) the order in the low byte of
/// `_flags_1`, `_large_mapcount` and `_entire_mapcount` at -1,
/// `_nr_pages_mapped` and `_pincount` at 0, and `_folio_nr_pages`.
/// (`_deferred_list` of page 2 is not modelled.)
pub(crate) fn prep_compound_page(
    mm: &MemMap<'_>,
    head: Pfn,
    order: Order,
) -> Result<(), MemmapError> {
    let page = mm.pfn_to_page(head)?;
    page.set_flag(pg::HEAD);
    let nr = order.pages();
    mm.for_each_chunk(pfn_add(head, 1), pfn_add(head, nr), false, |_, words| {
        for w in words.chunks_exact(STRUCT_PAGE_WORDS) {
            if let [_, w1, _, w3, _, w5, ..] = w {
                w3.store(TAIL_MAPPING, Ordering::Relaxed);
                w1.store(crate::memmap::pfn_to_vmemmap(head) | 1, Ordering::Relaxed);
                w5.store(0, Ordering::Relaxed);
            }
        }
    })?;
    if nr > 1 {
        let first = mm.pfn_to_page(pfn_add(head, 1))?;
        first.set_flags((first.flags() & !0xff) | u64::from(order.as_u8()));
        let w = first.words();
        w[2].store(u64::MAX, Ordering::Relaxed);
        w[3].store(0, Ordering::Relaxed);
        w[4].store(nr & 0xffff_ffff, Ordering::Relaxed);
    }
    Ok(())
}

/// `__free_pages_core` (boot flavour): clears `PG_reserved` and the refcount
/// of every page, counts them as managed, then `__free_one_page(FPI_TO_TAIL)`.
fn __free_pages_core(
    zone: &mut Zone,
    mm: &MemMap<'_>,
    pfn: Pfn,
    order: u32,
) -> Result<(), BuddyError> {
    let nr = 1u64 << order;
    mm.for_each_chunk(pfn, pfn_add(pfn, nr), false, |_, words| {
        for w in words.chunks_exact(STRUCT_PAGE_WORDS) {
            if let [w0, _, _, _, _, _, w6, _] = w {
                w0.store(
                    w0.load(Ordering::Relaxed) & !(1 << pg::RESERVED),
                    Ordering::Relaxed,
                );
                w6.store(w6.load(Ordering::Relaxed) & 0xffff_ffff, Ordering::Relaxed);
            }
        }
    })?;
    zone.managed_pages += nr;
    zone.__free_one_page(mm, pfn, order, true)
}

/// `__free_pages_memory`: frees `[start, end)` in the largest naturally
/// aligned chunks, at most `MAX_PAGE_ORDER`.
fn __free_pages_memory(
    zone: &mut Zone,
    mm: &MemMap<'_>,
    start: u64,
    end: u64,
) -> Result<(), BuddyError> {
    let mut start = start;
    while start < end {
        let mut order = if start == 0 {
            MAX_PAGE_ORDER
        } else {
            MAX_PAGE_ORDER.min(start.trailing_zeros())
        };
        while start + (1u64 << order) > end {
            order -= 1;
        }
        let pfn = Pfn::new(start).ok_or(BuddyError::BadPage {
            pfn: Pfn::MAX,
            reason: "pfn out of range",
        })?;
        __free_pages_core(zone, mm, pfn, order)?;
        start += 1u64 << order;
    }
    Ok(())
}

/// `memblock_free_all` (torvalds/linux@40735a68 `mm/memblock.c`): the end
/// of memblock. Clears scratch-only mode, gives reserved regions their node
/// and `PG_reserved` (`memmap_init_reserved_pages`, which skips
/// `RSRV_NOINIT`), then frees every free range (memory minus reserved,
/// NOMAP excluded) to the buddy allocator (`free_low_memory_core_early`);
/// under deferred init only the frames below `first_deferred_pfn`
/// (`memblock_free_pages` skips the rest). Returns the pages freed.
///
/// **Ours, not Linux's** (the `skip` restore strategy, DESIGN.md section 4):
/// the pages of `skip` are not freed although memblock does not know them
/// as reserved: every free range is cut by `skip` (sorted by start,
/// disjoint) with one cursor, O(ranges). Because memblock does not know the
/// skipped memory, scratch-only mode then stays on while
/// `memmap_init_reserved_pages` may still allocate (an array doubling), and
/// is cleared only before the hand-over to the buddy allocator. With an
/// empty `skip` this is exactly Linux's.
pub(crate) fn memblock_free_all(
    memblock: &mut Memblock,
    buddy: &Buddy<'_>,
    skip: &[PhysRange],
) -> Result<u64, BuddyError> {
    if skip.is_empty() {
        memblock.memblock_clear_kho_scratch_only();
    }
    // memmap_init_reserved_pages: set nid on all reserved pages; repeat if
    // the reserved array was doubled meanwhile.
    loop {
        let max_reserved = memblock.reserved.max();
        let mems: Vec<_> = memblock
            .for_each_mem_region()
            .map(|r| (r.base, r.size, r.nid))
            .collect();
        for (base, size, nid) in mems {
            memblock.memblock_set_reserved_node(base, size, nid)?;
        }
        if max_reserved == memblock.reserved.max() {
            break;
        }
    }
    // ... and PG_reserved on reserved pages, except RSRV_NOINIT ones.
    crate::memmap::memmap_init_reserved_pages(memblock, &buddy.memmap)?;
    memblock.memblock_clear_kho_scratch_only();
    let ranges: Vec<_> = memblock
        .for_each_free_mem_range(MemblockFlags::NONE)
        .collect();
    // Deferred init: memblock_free_pages skips the frames from
    // first_deferred_pfn on (their struct pages are not initialised yet):
    // deferred_init_memmap frees them.
    let limit = buddy
        .memmap
        .first_deferred_pfn()
        .map_or(u64::MAX, |p| p.as_u64());
    let mut zone = buddy.zone();
    let mut count = 0u64;
    for_each_free_range_except(&ranges, skip, |start, end| {
        let end = end.min(limit);
        if start < end {
            __free_pages_memory(&mut zone, &buddy.memmap, start, end)?;
            count += end - start;
        }
        Ok(())
    })?;
    Ok(count)
}

/// Calls `f(start_pfn, end_pfn)` for every page range of `ranges` (free
/// memblock ranges, ascending) minus `skip` (sorted, disjoint), with one
/// cursor over `skip` ([`crate::memmap::for_each_piece_outside`]).
fn for_each_free_range_except(
    ranges: &[PhysRange],
    skip: &[PhysRange],
    mut f: impl FnMut(u64, u64) -> Result<(), BuddyError>,
) -> Result<(), BuddyError> {
    let excl = crate::memmap::page_ranges(skip);
    let mut cursor = 0usize;
    for r in ranges {
        let start = r.start().as_u64().div_ceil(kho::PAGE_SIZE);
        let end = r.end().as_u64() >> kho::PAGE_SHIFT;
        if start < end {
            crate::memmap::for_each_piece_outside(start, end, &excl, &mut cursor, &mut f)?;
        }
    }
    Ok(())
}

/// `deferred_init_memmap` (linux-mm@65660710 `mm/mm_init.c`, run from
/// `page_alloc_init_late`): for every free range (memory minus reserved,
/// and minus `skip` for our `skip` strategy) from `first_deferred_pfn` on,
/// in `MAX_ORDER_NR_PAGES`-aligned chunks, initialises the struct pages
/// (`deferred_init_pages`) and frees them (`deferred_free_pages`: a whole
/// aligned chunk at `MAX_PAGE_ORDER`, anything else page by page). As
/// Linux does, the work is split into section-aligned jobs run on the
/// node's CPUs (`padata_do_multithreaded`; here the memmap's threads,
/// `--threads`); the frees serialise on the zone lock. Returns the pages
/// freed; a no-op when nothing was deferred.
pub(crate) fn deferred_init_memmap(
    memblock: &Memblock,
    buddy: &Buddy<'_>,
    skip: &[PhysRange],
) -> Result<u64, BuddyError> {
    let Some(first) = buddy.memmap.first_deferred_pfn() else {
        return Ok(0);
    };
    let first = first.as_u64();
    let ranges: Vec<_> = memblock
        .for_each_free_mem_range(MemblockFlags::NONE)
        .collect();
    let mm = &buddy.memmap;
    let max_nr = 1u64 << MAX_PAGE_ORDER;
    // The chunks deferred_init_memmap_chunk would visit, grouped by
    // section: padata's jobs (align and min_chunk PAGES_PER_SECTION).
    let mut jobs: Vec<Vec<(u64, u64)>> = Vec::new();
    let mut section = u64::MAX;
    for_each_free_range_except(&ranges, skip, |start, end| {
        let mut spfn = start.max(first);
        while spfn < end {
            let chunk_end = ((spfn + 1).div_ceil(max_nr) * max_nr).min(end);
            let sec = spfn / crate::memmap::PAGES_PER_SECTION;
            if sec != section || jobs.is_empty() {
                jobs.push(Vec::new());
                section = sec;
            }
            if let Some(job) = jobs.last_mut() {
                job.push((spfn, chunk_end));
            }
            spfn = chunk_end;
        }
        Ok(())
    })?;
    let count = AtomicU64::new(0);
    mm.run_jobs(&jobs, |job| {
        for &(spfn, chunk_end) in job {
            let (s, e) = (to_pfn(spfn)?, to_pfn(chunk_end)?);
            mm.init_range(s, e, false, false)?;
            let mut zone = buddy.zone();
            if chunk_end - spfn == max_nr && spfn % max_nr == 0 {
                __free_pages_core(&mut zone, mm, s, MAX_PAGE_ORDER)?;
            } else {
                for p in spfn..chunk_end {
                    __free_pages_core(&mut zone, mm, to_pfn(p)?, 0)?;
                }
            }
            count.fetch_add(chunk_end - spfn, Ordering::Relaxed);
        }
        Ok::<(), BuddyError>(())
    })?;
    Ok(count.into_inner())
}

fn to_pfn(raw: u64) -> Result<Pfn, BuddyError> {
    Pfn::new(raw).ok_or(BuddyError::BadPage {
        pfn: Pfn::MAX,
        reason: "pfn out of range",
    })
}

/// hugetlb's boot pool (`alloc_bootmem_huge_page`): a gigantic block taken
/// from memblock before [`memblock_free_all`], raw, naturally aligned.
/// With the vmemmap optimisation, all struct pages but the first are marked
/// `RSRV_NOINIT`: [`prep_bootmem_huge_folio`] initialises them later.
pub(crate) fn alloc_bootmem_huge_page(
    memblock: &mut Memblock,
    order: Order,
) -> Result<Pfn, BuddyError> {
    let size = order.bytes();
    let base = memblock.memblock_alloc_try_nid_raw(
        size,
        size,
        PhysAddr::ZERO,
        MEMBLOCK_ALLOC_ACCESSIBLE,
        crate::memblock::NUMA_NO_NODE,
    )?;
    let page = kho::PAGE_SIZE;
    if let Some(rest) = base.checked_add(page) {
        memblock.memblock_reserved_mark_noinit(rest, size - page)?;
    }
    Ok(base.pfn())
}

/// `gather_bootmem_prealloc` for one boot huge page, after
/// [`crate::memmap::memmap_init`]: initialises its struct pages
/// (`hugetlb_folio_init_vmemmap`), clears `PG_reserved` and preps it as a
/// folio of `order` whose head has refcount 1 and tails refcount 0.
pub(crate) fn prep_bootmem_huge_folio(
    mm: &MemMap<'_>,
    head: Pfn,
    order: Order,
) -> Result<(), MemmapError> {
    let end = pfn_add(head, order.pages());
    mm.init_range(head, end, false, false)?;
    mm.for_each_chunk(pfn_add(head, 1), end, false, |_, words| {
        for w in words.chunks_exact(STRUCT_PAGE_WORDS) {
            if let [.., w6, _] = w {
                w6.store(0xffff_ffff, Ordering::Relaxed);
            }
        }
    })?;
    prep_compound_page(mm, head, order)
}

#[cfg(test)]
mod tests;
