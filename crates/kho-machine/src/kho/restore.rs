//! The folios back: `kho_restore_folio` and `kho_restore_pages` once the
//! buddy allocator is live, checking the head page info that
//! `kho_memory_init` wrote (Linux: `kho_restore_page()` and its two callers
//! in `kernel/liveupdate/kexec_handover.c`).
//!
//! # Head page info (Linux's `union kho_page_info`)
//!
//! | bits of `page->private` | field                                  |
//! |-------------------------|----------------------------------------|
//! | 0..32                   | `order`                                |
//! | 32..64                  | `magic` = [`KHO_PAGE_MAGIC`] ("KHOP")  |
//!
//! [`KhoPageInfo`] is the one place that encodes and decodes it.

use kho::{Order, PAGE_SIZE, Pfn, PhysAddr};

use super::KhoError;
use crate::buddy::{Buddy, MAX_PAGE_ORDER, prep_compound_page};
use crate::memmap::StructPage;

/// `KHO_PAGE_MAGIC`: the high half of a restorable head page's `private`.
pub const KHO_PAGE_MAGIC: u32 = 0x4b48_4f50;

/// `union kho_page_info`: what a preserved head page's `page->private`
/// holds. The fields are raw: a page's `private` is untrusted until
/// [`kho_restore_folio`] has checked them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KhoPageInfo {
    /// The block's order (low half).
    pub order: u32,
    /// [`KHO_PAGE_MAGIC`] on a preserved head (high half).
    pub magic: u32,
}

impl KhoPageInfo {
    /// The info of a preserved head of `order`.
    pub const fn new(order: Order) -> Self {
        Self {
            order: order.as_u32(),
            magic: KHO_PAGE_MAGIC,
        }
    }

    /// Decodes a `page->private` word.
    pub const fn from_private(private: u64) -> Self {
        Self {
            order: (private & 0xffff_ffff) as u32,
            magic: (private >> 32) as u32,
        }
    }

    /// The `page->private` word.
    pub const fn to_private(self) -> u64 {
        ((self.magic as u64) << 32) | self.order as u64
    }

    /// Reads `page`'s info.
    pub fn read(page: &StructPage<'_>) -> Self {
        Self::from_private(page.private())
    }

    /// Writes this info into `page`.
    pub fn write(self, page: &StructPage<'_>) {
        page.set_private(self.to_private());
    }

    /// Whether it carries the KHO magic.
    pub const fn is_kho(self) -> bool {
        self.magic == KHO_PAGE_MAGIC
    }
}

/// The order recorded in the head page at `phys`, if it carries the KHO
/// magic (a peek: nothing is changed).
pub(crate) fn kho_preserved_order(buddy: &Buddy<'_>, phys: PhysAddr) -> Option<Order> {
    let page = buddy.memmap().pfn_to_page(phys.pfn()).ok()?;
    let info = KhoPageInfo::read(&page);
    if !info.is_kho() {
        return None;
    }
    Order::try_new(info.order).ok()
}

/// `kho_restore_page`: checks `{order, magic}` of the head page at `phys`
/// (and, if given, that the order is `expect`), then makes the block live:
/// head refcount 1, tails 0 for a folio or 1 for pages, compound page for
/// a folio of order > 0, managed pages counted. The struct pages are not
/// initialised here (Linux's restore never does: memmap_init did at boot).
fn kho_restore_page(
    buddy: &Buddy<'_>,
    phys: PhysAddr,
    is_folio: bool,
    expect: Option<Order>,
) -> Result<(Pfn, Order), KhoError> {
    if !phys.is_page_aligned() {
        return Err(KhoError::Unaligned { phys });
    }
    let mm = buddy.memmap();
    let pfn = phys.pfn();
    let memmap_err = |source| KhoError::Memmap { phys, source };
    let page = mm.pfn_to_page(pfn).map_err(memmap_err)?;
    let info = KhoPageInfo::read(&page);
    if !info.is_kho() {
        return Err(KhoError::BadMagic {
            phys,
            private: info.to_private(),
        });
    }
    let raw = info.order;
    let bad = |reason| KhoError::BadOrder {
        phys,
        order: raw,
        reason,
    };
    let order = Order::try_new(raw).map_err(|_| bad("beyond the largest order"))?;
    if !is_folio && raw > MAX_PAGE_ORDER {
        return Err(bad(
            "pages are restored in blocks of at most MAX_PAGE_ORDER",
        ));
    }
    if expect.is_some_and(|e| e != order) {
        return Err(bad("not the order of the block asked for"));
    }
    if pfn.trailing_zeros() < raw {
        return Err(bad("the address is not aligned to it"));
    }
    let nr = order.pages();
    let end = pfn
        .checked_add(nr)
        .filter(|e| e.checked_sub(1).is_some_and(|last| mm.pfn_valid(last)))
        .ok_or_else(|| bad("the block runs past the memmap"))?;
    // Clear private first, as Linux does, so a later restore fails.
    page.set_private(0);
    // No struct-page initialisation here: memmap_init initialised every
    // struct page of memory at boot and RSRV_NOINIT kept PG_reserved off
    // them. Only the refcounts (kho_init_folio / kho_init_pages,
    // torvalds/linux@40735a68): a folio's head 1 and tails 0, then the
    // compound page; pages 1 each.
    page.set_refcount(1);
    let mut p = pfn;
    while let Some(next) = p.checked_add(1).filter(|n| *n < end) {
        let refs = if is_folio { 0 } else { 1 };
        mm.pfn_to_page(next).map_err(memmap_err)?.set_refcount(refs);
        p = next;
    }
    if is_folio && raw > 0 {
        prep_compound_page(mm, pfn, order).map_err(memmap_err)?;
    }
    buddy.adjust_managed_page_count(i64::try_from(nr).unwrap_or(i64::MAX));
    Ok((pfn, order))
}

/// `kho_restore_folio`: the preserved folio whose head is at `phys`, as a
/// live folio: its head pfn and order.
///
/// Differs from Linux in one point: orders above `MAX_PAGE_ORDER` are
/// accepted (gigantic 1 GiB folios come back as folios, as hugetlb's boot
/// pool makes them); Linux's `kho_restore_page` refuses them.
pub fn kho_restore_folio(buddy: &Buddy<'_>, phys: PhysAddr) -> Result<(Pfn, Order), KhoError> {
    kho_restore_page(buddy, phys, true, None)
}

/// `kho_restore_pages`: `nr_pages` order-0 pages at `phys` preserved with
/// `kho_preserve_pages`, i.e. as the blocks of Linux's split
/// ([`kho::split_pages`]), each page with refcount 1. Returns the first
/// pfn. As in Linux, a block above `MAX_PAGE_ORDER` is refused.
///
/// Stricter than Linux: each block's recorded order must be the split's
/// order (Linux trusts the recorded order).
pub fn kho_restore_pages(
    buddy: &Buddy<'_>,
    phys: PhysAddr,
    nr_pages: u64,
) -> Result<Pfn, KhoError> {
    if !phys.is_page_aligned() {
        return Err(KhoError::Unaligned { phys });
    }
    let start = phys.pfn();
    let split = kho::split_pages(start, nr_pages).map_err(|_| KhoError::BadOrder {
        phys,
        order: 0,
        reason: "the page range runs past the last frame",
    })?;
    for block in split {
        kho_restore_page(buddy, block.phys(), false, Some(block.order()))?;
    }
    Ok(start)
}

/// Pages a blob of `size` bytes spans.
pub(crate) fn blob_pages(size: u64) -> u64 {
    size.div_ceil(PAGE_SIZE)
}
