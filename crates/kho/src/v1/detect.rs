//! Which bitmap size a kho-v1 list was written with, decided from the
//! evidence in memory ([`detect_bitmap_size`]).
//!
//! Both sizes shipped under the one `kho-v1` compatible (see
//! [`V1Reader`]): 512-byte bitmaps from `kzalloc(512)` (Linux 6.16, early
//! 6.17.y), then page bitmaps ("kho: make preserved bitmaps PAGE_SIZE").
//! The list itself is the same either way; what differs is what each
//! reading makes of the bitmap pointers and the bytes they point at.
//!
//! # Evidence, strongest first
//!
//! | evidence                                            | verdict | why                                                        |
//! |-----------------------------------------------------|---------|------------------------------------------------------------|
//! | a bitmap at a 512-byte boundary, not page aligned   | 512     | a page bitmap is page aligned; kmalloc-512 packs eight to a page |
//! | a `phys_start` on the 512-byte span, not the page span | 512  | Linux's `phys_start` is a multiple of the bitmap's span     |
//! | the page reading fails (a block outside RAM, in a forbidden range, an overlap, ...) while the 512-byte one validates | 512 | only one reading is consistent with the machine |
//! | bits past bit 4095 of a page-aligned bitmap, and the page reading validates | page | a 512-byte bitmap ends at bit 4095, and no listed bitmap covers those bytes (it would not be page aligned) |
//! | the 512-byte reading fails while the page one validates | page | (no list does this: a valid page reading is a valid 512-byte one) |
//! | none of the above, both readings validate           | undecided, harmless | every bitmap page aligned, on the page span, nothing past bit 4095: both sizes give the same blocks |
//! | none of the above, neither reading validates        | undecided | the list is broken whatever the size; the caller must choose a size to see that reading's error |
//!
//! One fact makes the table complete: a list that validates with page
//! bitmaps validates with 512-byte ones too (page alignment implies 512-byte
//! alignment, the page span is a multiple of the 512-byte span, and the
//! 512-byte reading's blocks are the page reading's bits 0..4095), and
//! their blocks differ exactly when some page-aligned bitmap has a bit set
//! past 4095. So two valid readings that disagree are always decided by the
//! fourth row; "undecided" is either harmless (same blocks) or a broken
//! list.
//!
//! The fourth row is evidence, not proof: in a 6.16 kernel the rest of a
//! kmalloc-512 page holds other objects, which could be non-zero. It is
//! taken only when every block those bits name is valid (in RAM, clear of
//! the forbidden ranges, overlapping nothing), which garbage rarely is.

use alloc::collections::BTreeSet;
use core::fmt;
use core::sync::atomic::Ordering;

use super::{BitmapSize, FIRST_ENTRY_WORD, KHOSER_BITMAP_SIZE, V1Error, V1Reader};
use crate::addr::{Order, PAGE_SIZE, PhysAddr};
use crate::mem::{PageMap, RamMap};

/// What decided a bitmap size (see the module table).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BitmapEvidence {
    /// A bitmap on a 512-byte boundary that is not page aligned.
    NotPageAligned {
        /// The chunk.
        chunk: PhysAddr,
        /// The entry index.
        entry: u32,
        /// The bitmap.
        bitmap: PhysAddr,
    },
    /// A `phys_start` that is a multiple of the 512-byte bitmap's span but
    /// not of the page bitmap's.
    PhysStartNotPageSpan {
        /// The chunk.
        chunk: PhysAddr,
        /// The entry index.
        entry: u32,
        /// The value.
        phys_start: PhysAddr,
        /// The chunk's order.
        order: Order,
    },
    /// Read with page bitmaps the list fails with this error; read with
    /// 512-byte bitmaps it validates.
    PageReadingInvalid(V1Error),
    /// Bits set past bit 4095 of a page-aligned bitmap (and the page
    /// reading validates).
    BitsPast4095 {
        /// The chunk.
        chunk: PhysAddr,
        /// The entry index.
        entry: u32,
        /// The bitmap.
        bitmap: PhysAddr,
        /// How many bits are set past 4095 in that bitmap.
        bits: u32,
    },
    /// Read with 512-byte bitmaps the list fails with this error; read
    /// with page bitmaps it validates.
    Bytes512ReadingInvalid(V1Error),
}

impl fmt::Display for BitmapEvidence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotPageAligned {
                chunk,
                entry,
                bitmap,
            } => write!(
                f,
                "chunk {chunk} entry {entry}: bitmap {bitmap} is 512-byte aligned, not page aligned"
            ),
            Self::PhysStartNotPageSpan {
                chunk,
                entry,
                phys_start,
                order,
            } => write!(
                f,
                "chunk {chunk} entry {entry}: phys_start {phys_start} is a multiple of the \
                 512-byte bitmap span of order {order}, not of the page bitmap span"
            ),
            Self::PageReadingInvalid(e) => write!(f, "read with page bitmaps: {e}"),
            Self::BitsPast4095 {
                chunk,
                entry,
                bitmap,
                bits,
            } => write!(
                f,
                "chunk {chunk} entry {entry}: bitmap {bitmap} has {bits} bits set past bit 4095, \
                 and no listed 512-byte bitmap covers them"
            ),
            Self::Bytes512ReadingInvalid(e) => write!(f, "read with 512-byte bitmaps: {e}"),
        }
    }
}

/// Why no size could be decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Undecided {
    /// Every bitmap page aligned, every `phys_start` on the page span, no
    /// bit past 4095: both sizes give these same blocks.
    NoEvidence {
        /// Entries (bitmaps) listed.
        entries: u64,
        /// Blocks listed (the same under both sizes).
        blocks: u64,
    },
    /// Neither reading validates, and the layout decides nothing.
    NeitherValidates {
        /// The 512-byte reading's error.
        bytes512: V1Error,
        /// The page reading's error.
        page: V1Error,
    },
}

impl fmt::Display for Undecided {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoEvidence { entries, blocks } => write!(
                f,
                "no evidence decides: all {entries} bitmaps are page aligned on page-span \
                 phys_starts and none has a bit set past 4095, so both sizes give the same \
                 {blocks} blocks"
            ),
            Self::NeitherValidates { bytes512, page } => write!(
                f,
                "neither size validates (512-byte bitmaps: {bytes512}; page bitmaps: {page}) \
                 and the layout decides nothing"
            ),
        }
    }
}

/// The outcome of [`detect_bitmap_size`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BitmapVerdict {
    /// The size, and the strongest evidence found for it.
    Decided {
        /// The size.
        size: BitmapSize,
        /// What decided it.
        evidence: BitmapEvidence,
    },
    /// Memory holds no evidence either way.
    Undecided(Undecided),
}

impl BitmapVerdict {
    /// The size decided, if any.
    pub fn size(&self) -> Option<BitmapSize> {
        match self {
            Self::Decided { size, .. } => Some(*size),
            Self::Undecided(_) => None,
        }
    }
}

/// What the layout scan found: the first piece of each kind of evidence.
#[derive(Debug, Default)]
struct Layout {
    not_page_aligned: Option<BitmapEvidence>,
    phys_start: Option<BitmapEvidence>,
    bits_past: Option<BitmapEvidence>,
}

/// Decides the bitmap size of the kho-v1 list at `head` from the evidence
/// in `map` (the module doc's table, in its order).
///
/// Costs one pass over the list's layout (at most the chunk budget of
/// [`V1Reader::new`] chunks, each bitmap page's last 3584 bytes loaded
/// once) and one [`V1Reader::check`] per size.
pub fn detect_bitmap_size<M: PageMap + ?Sized>(
    map: &M,
    ram: RamMap<'_>,
    head: PhysAddr,
) -> BitmapVerdict {
    let small = V1Reader::new(map, ram, BitmapSize::Bytes512);
    let page = V1Reader::new(map, ram, BitmapSize::Page);
    let layout = scan_layout(map, head, small.chunk_budget());
    let small_check = small.check(head, |_| ());
    let page_check = page.check(head, |_| ());
    let decided = |size, evidence| BitmapVerdict::Decided { size, evidence };
    if let Some(e) = layout.not_page_aligned.or(layout.phys_start) {
        return decided(BitmapSize::Bytes512, e);
    }
    match (small_check, page_check) {
        (Ok(_), Err(e)) => decided(BitmapSize::Bytes512, BitmapEvidence::PageReadingInvalid(e)),
        (Err(e), Ok(_)) => decided(BitmapSize::Page, BitmapEvidence::Bytes512ReadingInvalid(e)),
        (Ok(s), Ok(_)) => match layout.bits_past {
            Some(e) => decided(BitmapSize::Page, e),
            None => BitmapVerdict::Undecided(Undecided::NoEvidence {
                entries: s.entries,
                blocks: s.blocks,
            }),
        },
        (Err(bytes512), Err(page)) => {
            BitmapVerdict::Undecided(Undecided::NeitherValidates { bytes512, page })
        }
    }
}

/// Follows the list's chunks (until its end, an unmapped or malformed
/// chunk, a chunk seen before, or `budget` chunks) and notes the layout
/// evidence of its entries.
fn scan_layout<M: PageMap + ?Sized>(map: &M, head: PhysAddr, budget: u64) -> Layout {
    let mut out = Layout::default();
    let mut seen = BTreeSet::new();
    let mut at = head;
    while at != PhysAddr::ZERO
        && u64::try_from(seen.len()).unwrap_or(u64::MAX) < budget
        && seen.insert(at)
    {
        let Ok(chunk) = map.page(at) else { break };
        let words = chunk.words();
        let load = |i: usize| words.get(i).map_or(0, |w| w.load(Ordering::Relaxed));
        let packed = load(1);
        let order = u32::try_from(packed & 0xffff_ffff).unwrap_or(u32::MAX);
        let num = usize::try_from(packed >> 32).unwrap_or(usize::MAX);
        let Ok(order) = Order::try_new(order) else {
            break;
        };
        if num > KHOSER_BITMAP_SIZE {
            break;
        }
        for i in 0..num {
            let Some(w) = i
                .checked_mul(2)
                .and_then(|x| x.checked_add(FIRST_ENTRY_WORD))
            else {
                break;
            };
            let phys_start = PhysAddr::new(load(w));
            let bitmap = PhysAddr::new(load(w.saturating_add(1)));
            let entry = u32::try_from(i).unwrap_or(u32::MAX);
            note_entry(map, &mut out, at, entry, order, phys_start, bitmap);
        }
        at = PhysAddr::new(load(0));
    }
    out
}

/// Notes the evidence one entry holds.
fn note_entry<M: PageMap + ?Sized>(
    map: &M,
    out: &mut Layout,
    chunk: PhysAddr,
    entry: u32,
    order: Order,
    phys_start: PhysAddr,
    bitmap: PhysAddr,
) {
    if out.not_page_aligned.is_none()
        && bitmap.is_aligned(BitmapSize::Bytes512.bytes())
        && !bitmap.is_aligned(PAGE_SIZE)
    {
        out.not_page_aligned = Some(BitmapEvidence::NotPageAligned {
            chunk,
            entry,
            bitmap,
        });
    }
    let tz = phys_start.as_u64().trailing_zeros();
    if out.phys_start.is_none()
        && phys_start != PhysAddr::ZERO
        && tz >= BitmapSize::Bytes512.span_shift(order)
        && tz < BitmapSize::Page.span_shift(order)
    {
        out.phys_start = Some(BitmapEvidence::PhysStartNotPageSpan {
            chunk,
            entry,
            phys_start,
            order,
        });
    }
    if out.bits_past.is_none()
        && bitmap != PhysAddr::ZERO
        && bitmap.is_aligned(PAGE_SIZE)
        && let Ok(page) = map.page(bitmap)
    {
        let bits: u32 = page
            .words()
            .get(BitmapSize::Bytes512.words()..)
            .unwrap_or_default()
            .iter()
            .map(|w| w.load(Ordering::Relaxed).count_ones())
            .fold(0u32, u32::saturating_add);
        if bits > 0 {
            out.bits_past = Some(BitmapEvidence::BitsPast4095 {
                chunk,
                entry,
                bitmap,
                bits,
            });
        }
    }
}

#[cfg(test)]
mod tests;
