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
use crate::buddy::{Buddy, prep_compound_page};
use crate::memmap::{MemmapMode, StructPage};

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

/// `kho_restore_page` (torvalds/linux@40735a68
/// `kernel/liveupdate/kexec_handover.c`): the page frame of `phys`
/// (`PHYS_PFN`, as `pfn_to_online_page`: a frame without a struct page
/// fails) must carry the KHO magic, which also implies that it heads a
/// block of its recorded order (only `kho_memory_init` sets it, on heads).
/// Then, as Linux: `private` cleared so that a later restore fails, and
/// the block made live with the recorded order: a folio's head refcount 1
/// and tails 0, then the compound page (`kho_init_folio`); pages refcount 1
/// each (`kho_init_pages`); managed pages counted. Those are Linux's only
/// checks: the recorded order is trusted.
///
/// The struct pages are not initialised here (Linux's restore never does:
/// `memmap_init`, or under deferred init `kho_get_preserved_page`,
/// initialised them at boot), except under [`MemmapMode::Lazy`] (ours),
/// where `memmap_init` left them alone and the restore runs
/// `__init_single_page` over the block first.
///
/// One bound is the model's, not Linux's: a recorded order whose block runs
/// past the memmap is refused ([`KhoError::BadOrder`]) where Linux would
/// write struct pages out of bounds.
fn kho_restore_page(
    buddy: &Buddy<'_>,
    phys: PhysAddr,
    is_folio: bool,
) -> Result<(Pfn, Order), KhoError> {
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
    let past = || KhoError::BadOrder {
        phys,
        order: raw,
        reason: "the block runs past the memmap",
    };
    let order = Order::try_new(raw).map_err(|_| past())?;
    let nr = order.pages();
    let end = pfn
        .checked_add(nr)
        .filter(|e| e.checked_sub(1).is_some_and(|last| mm.pfn_valid(last)))
        .ok_or_else(past)?;
    // Clear private first, as Linux does, so a later restore fails.
    page.set_private(0);
    if mm.mode() == MemmapMode::Lazy {
        mm.init_range(pfn, end, false, false).map_err(memmap_err)?;
    }
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
/// live folio: its head pfn and order (Linux's checks only, see
/// `kho_restore_page`; torvalds/linux@40735a68 has no `MAX_PAGE_ORDER`
/// check, so gigantic 1 GiB folios come back as folios).
pub fn kho_restore_folio(buddy: &Buddy<'_>, phys: PhysAddr) -> Result<(Pfn, Order), KhoError> {
    kho_restore_page(buddy, phys, true)
}

/// `kho_restore_pages`: `nr_pages` order-0 pages at `phys` preserved with
/// `kho_preserve_pages`, walked as Linux walks them: the blocks of the
/// split ([`kho::split_pages`]), each restored with `kho_restore_page` at
/// its recorded order, each page with refcount 1. Returns the first pfn.
pub fn kho_restore_pages(
    buddy: &Buddy<'_>,
    phys: PhysAddr,
    nr_pages: u64,
) -> Result<Pfn, KhoError> {
    let start = phys.pfn();
    let split = kho::split_pages(start, nr_pages).map_err(|_| KhoError::BadOrder {
        phys,
        order: 0,
        reason: "the page range runs past the last frame",
    })?;
    for block in split {
        kho_restore_page(buddy, block.phys(), false)?;
    }
    Ok(start)
}

/// Pages a blob of `size` bytes spans.
pub(crate) fn blob_pages(size: u64) -> u64 {
    size.div_ceil(PAGE_SIZE)
}
