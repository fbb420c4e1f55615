//! **Ours**: salvage restore ([`OnCorruption::Salvage`], `kho run
//! --on-corruption salvage`), and the fault injection that tests it
//! ([`inject_corruption`], `kho run --corrupt CLASS`).
//!
//! Linux (torvalds/linux@019fc368, `kernel/liveupdate/kexec_handover.c`)
//! rejects a broken handover whole: `kho_populate` prints "disabling KHO
//! revival" for a bad FDT, compatible or `preserved-memory-map`, and
//! `kho_memory_init` clears `kho_in.fdt_phys` when `kho_mem_retrieve`
//! fails; every preserved page then goes to the buddy allocator. That is
//! the default. Under salvage:
//!
//! | what is broken                           | reserved (never freed, never restored) | restored            |
//! |------------------------------------------|----------------------------------------|---------------------|
//! | a radix node ([`kho::SalvageWalk`])      | the span of its subtree, less the blocks of other orders there | every block but the node's order's in its span |
//! | the root, the spine, a shared node       | all RAM outside scratch                | nothing             |
//! | the root FDT (read, parse, compatible)   | all RAM outside scratch                | nothing: KHO off, boot from scratch |
//! | a peer's map (kho-v1 chunk list)         | all RAM outside scratch: past a damaged chunk header nothing says what the list covers | nothing |
//!
//! Spans are reserved with plain `memblock_reserve` after the blocks are
//! accounted (per strategy), minus the scratch areas and the kernel image;
//! a block of the damaged node's order that meets its span gets no head
//! page, so `kho_restore_folio` refuses it, and `memblock_free_all` never
//! frees it. A block of another order in the span validated in its own
//! subtree: it is kept (restored), and cut out of the span reserved.

use kho::{
    Block, Damage, NodeBudget, NodeSet, Order, PageMap, PhysAddr, PhysRange, RamMap, SalvageWalk,
    Salvaged,
};
use serde::{Deserialize, Serialize};

use super::memory_init::{Extent, MapSummary, PreservedMap, RadixMapError, ReserveError};
use crate::arena::PhysMem;
use crate::memblock::Memblock;

/// One damaged node as the new kernel reports it (`kho run` prints these;
/// the JSON row's `damage` list).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DamageReport {
    /// The damaged node's address (the child a pointer names, the leaf,
    /// the radix root or, for the root FDT, its page).
    pub node: u64,
    /// Its level (0: leaf, 5: root; the FDT: 5).
    pub level: u8,
    /// The order whose blocks it held (`None`: every order, all RAM).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order: Option<u8>,
    /// The span reserved for it, `[start, end)`.
    pub start: u64,
    /// End of the span.
    pub end: u64,
    /// Bytes of RAM in the span outside scratch and the kernel image (what
    /// memblock reserved for it).
    pub reserved_bytes: u64,
    /// The broken invariant.
    pub error: String,
}

impl DamageReport {
    /// The span.
    pub fn span(&self) -> PhysRange {
        PhysRange::new(PhysAddr::new(self.start), PhysAddr::new(self.end)).unwrap_or_default()
    }

    pub(crate) fn new(
        node: PhysAddr,
        level: u8,
        order: Option<u8>,
        span: PhysRange,
        error: String,
        ram: &[PhysRange],
        forbidden: &[PhysRange],
    ) -> Self {
        Self {
            node: node.as_u64(),
            level,
            order,
            start: span.start().as_u64(),
            end: span.end().as_u64(),
            reserved_bytes: pieces(span, ram, forbidden).iter().map(|r| r.size()).sum(),
            error,
        }
    }

    pub(crate) fn of(d: &Damage, ram: &[PhysRange], forbidden: &[PhysRange]) -> Self {
        Self::new(
            d.node,
            d.level.as_u8(),
            d.order.map(|o| o.as_u8()),
            d.span,
            d.error.to_string(),
            ram,
            forbidden,
        )
    }
}

impl std::fmt::Display for DamageReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "node {:#x} (level {}{}): reserved {} ({} KiB of RAM): {}",
            self.node,
            self.level,
            self.order
                .map_or_else(String::new, |o| format!(", order {o}")),
            self.span(),
            self.reserved_bytes / 1024,
            self.error
        )
    }
}

/// The parts of `span` inside `ram` and outside `forbidden` (both sorted,
/// disjoint), ascending.
pub(crate) fn pieces(
    span: PhysRange,
    ram: &[PhysRange],
    forbidden: &[PhysRange],
) -> Vec<PhysRange> {
    let mut out = Vec::new();
    for r in ram {
        let lo = r.start().max(span.start());
        let hi = r.end().min(span.end());
        if lo >= hi {
            continue;
        }
        let mut at = lo;
        for f in forbidden {
            if f.end() <= at || f.start() >= hi {
                continue;
            }
            if f.start() > at {
                out.extend(PhysRange::new(at, f.start()).ok());
            }
            at = at.max(f.end());
        }
        if at < hi {
            out.extend(PhysRange::new(at, hi).ok());
        }
    }
    out
}

/// Reserves every span (merged) inside RAM and outside `forbidden` with
/// `memblock_reserve`; returns the bytes reserved.
pub(crate) fn reserve_spans(
    memblock: &mut Memblock,
    spans: &[PhysRange],
    ram: &[PhysRange],
    forbidden: &[PhysRange],
) -> Result<u64, ReserveError> {
    let mut bytes = 0;
    for span in kho::merge_ranges(spans.to_vec()) {
        for p in pieces(span, ram, forbidden) {
            memblock
                .memblock_reserve(p.start(), p.size())
                .map_err(|source| ReserveError::Memblock {
                    what: "reserving a damaged span",
                    range: p,
                    source,
                })?;
            bytes += p.size();
        }
    }
    Ok(bytes)
}

/// Ours: the radix tree at `root` read by the salvage walk, as a
/// [`PreservedMap`] of the blocks that validated and meet no damaged span
/// of their order (a first walk finds the damage, [`SalvageMap::damage`];
/// a second the spans to reserve, [`SalvageMap::spans`]).
#[derive(Debug)]
pub struct SalvageMap<'m, 'r, M: PageMap + ?Sized> {
    mem: &'m M,
    ram: RamMap<'r>,
    root: PhysAddr,
    damage: Vec<Damage>,
    /// The damaged spans of each order, merged.
    by_order: Vec<Vec<PhysRange>>,
    /// Some damage covers every order (all RAM).
    total: bool,
    /// The spans to reserve (see [`SalvageMap::spans`]).
    spans: Vec<PhysRange>,
}

/// Whether `r` meets one of the sorted, disjoint `spans`.
fn meets(spans: &[PhysRange], r: PhysRange) -> bool {
    let i = spans.partition_point(|s| s.end() <= r.start());
    spans.get(i).is_some_and(|s| s.start() < r.end())
}

/// Whether `r` lies wholly inside one of the sorted, disjoint `spans`.
fn holds(spans: &[PhysRange], r: PhysRange) -> bool {
    let i = spans.partition_point(|s| s.end() <= r.start());
    spans.get(i).is_some_and(|s| s.contains_range(r))
}

impl<'m, 'r, M: PageMap + ?Sized> SalvageMap<'m, 'r, M> {
    /// Walks the tree at `root` for its damage, then for the spans to
    /// reserve.
    pub fn new(mem: &'m M, ram: RamMap<'r>, root: PhysAddr) -> Self {
        let mut map = Self {
            mem,
            ram,
            root,
            damage: Vec::new(),
            by_order: vec![Vec::new(); kho::ORDERS],
            total: false,
            spans: Vec::new(),
        };
        for item in map.walk() {
            if let Salvaged::Damage(d) = item {
                map.damage.push(d);
            }
        }
        for d in &map.damage {
            match d
                .order
                .and_then(|o| map.by_order.get_mut(usize::from(o.as_u8())))
            {
                Some(spans) => spans.push(d.span),
                None => map.total = true,
            }
        }
        for spans in &mut map.by_order {
            *spans = kho::merge_ranges(std::mem::take(spans));
        }
        let all = kho::merge_ranges(map.damage.iter().map(|d| d.span).collect());
        // A damaged block sticking out of its span is reserved whole (none
        // should: a subtree's span is aligned to its order's blocks); a
        // block kept inside another order's span is cut out of it (its own
        // reservation, or `skip`, accounts for it).
        let (mut grow, mut keep) = (Vec::new(), Vec::new());
        if !map.total && !all.is_empty() {
            for item in map.walk() {
                let Salvaged::Run(run) = item else { continue };
                if !meets(&all, run.range()) {
                    continue;
                }
                for b in run.blocks() {
                    let Some(r) = b.range() else { continue };
                    if map.excluded(b) {
                        if !holds(&all, r) {
                            grow.push(r);
                        }
                    } else if meets(&all, r) {
                        keep.push(r);
                    }
                }
            }
        }
        grow.extend_from_slice(&all);
        let keep = kho::merge_ranges(keep);
        map.spans = kho::merge_ranges(grow)
            .into_iter()
            .flat_map(|s| pieces(s, &[s], &keep))
            .collect();
        map
    }

    fn walk(&self) -> SalvageWalk<'m, 'r, M, NodeSet> {
        SalvageWalk::open(
            self.mem,
            self.ram,
            self.root,
            NodeSet::new(),
            NodeBudget::for_ram(&self.ram),
        )
    }

    /// Whether `b` lies under the damage: all RAM is damaged, or a damaged
    /// span of its order meets it.
    pub fn excluded(&self, b: Block) -> bool {
        self.total
            || b.range().is_none_or(|r| {
                self.by_order
                    .get(usize::from(b.order().as_u8()))
                    .is_some_and(|s| meets(s, r))
            })
    }

    /// The damaged nodes, in walk order.
    pub fn damage(&self) -> &[Damage] {
        &self.damage
    }

    /// The spans to reserve, sorted and disjoint: the damaged nodes' spans
    /// (grown by a damaged block that sticks out), less the blocks of
    /// other orders kept inside them.
    pub fn spans(&self) -> &[PhysRange] {
        &self.spans
    }

    /// Whether the damage covers all RAM (nothing can be restored).
    pub fn is_total(&self) -> bool {
        self.total
    }
}

impl<M: PageMap + ?Sized> PreservedMap for SalvageMap<'_, '_, M> {
    type Error = RadixMapError;

    fn for_each_extent<F>(&mut self, mut f: F) -> Result<MapSummary, RadixMapError>
    where
        F: FnMut(Extent) -> Result<(), ReserveError>,
    {
        let mut walk = self.walk();
        let mut summary = MapSummary::default();
        for item in walk.by_ref() {
            let Salvaged::Run(run) = item else { continue };
            let whole = !self.total
                && self
                    .by_order
                    .get(usize::from(run.order().as_u8()))
                    .is_none_or(|s| !meets(s, run.range()));
            for b in run.blocks() {
                if whole || !self.excluded(b) {
                    let e = Extent::block(b);
                    f(e)?;
                    summary.add(e);
                }
            }
        }
        summary.nodes = walk.nodes();
        Ok(summary)
    }
}

// ---------------------------------------------------------------------------
// Fault injection

/// What `kho run --corrupt` breaks in the handover just before the exec.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CorruptClass {
    /// A level-1 entry (a pointer to an order's leaf, off the spine): its
    /// low byte flipped (unaligned).
    ChildPointer,
    /// A byte of a leaf whose flipped bits name blocks outside RAM or in
    /// scratch or the kernel image.
    LeafWord,
    /// The top byte of the root FDT's `preserved-memory-map` value.
    FdtProperty,
    /// A kho-v1 chunk header's `num_elms` (its second byte: above 255).
    ChunkHeader,
}

impl CorruptClass {
    /// Every class.
    pub const ALL: [Self; 4] = [
        Self::ChildPointer,
        Self::LeafWord,
        Self::FdtProperty,
        Self::ChunkHeader,
    ];

    /// The command-line name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::ChildPointer => "child-pointer",
            Self::LeafWord => "leaf-word",
            Self::FdtProperty => "fdt-property",
            Self::ChunkHeader => "chunk-header",
        }
    }
}

impl std::fmt::Display for CorruptClass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A name that is no [`CorruptClass`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown corruption class {0:?} (child-pointer, leaf-word, fdt-property, chunk-header)")]
pub struct UnknownCorruptClass(pub String);

impl std::str::FromStr for CorruptClass {
    type Err = UnknownCorruptClass;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| UnknownCorruptClass(s.to_owned()))
    }
}

/// One byte [`inject_corruption`] changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Corruption {
    /// The class.
    pub class: CorruptClass,
    /// The byte's address.
    pub at: PhysAddr,
    /// Its value before.
    pub old: u8,
    /// Its value after.
    pub new: u8,
    /// What it belongs to.
    pub what: String,
}

impl std::fmt::Display for Corruption {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: byte at {} {:#04x} -> {:#04x} ({})",
            self.class, self.at, self.old, self.new, self.what
        )
    }
}

/// A leaf of the (trusted, just written) tree off the spine: its address,
/// the entry pointing to it, its order and first key.
#[derive(Debug, Clone, Copy)]
struct LeafAt {
    leaf: PhysAddr,
    entry: PhysAddr,
    order: Order,
    key: u64,
}

impl LeafAt {
    fn block(&self, bit: u64) -> Option<Block> {
        let marker = 1u64 << (52 - self.order.as_u32());
        let phys = ((self.key | bit) - marker).checked_shl(self.order.shift())?;
        Block::new(PhysAddr::new(phys), self.order).ok()
    }

    fn span(&self) -> Option<PhysRange> {
        let first = self.block(0)?;
        PhysRange::from_start_size(first.phys(), first.size() << 15).ok()
    }
}

/// Every leaf off the spine, in key order (the tree is the old kernel's
/// own: read with bounds, not validated).
fn leaves(mem: &PhysMem, root: PhysAddr) -> Result<Vec<LeafAt>, kho::MemError> {
    let mut out = Vec::new();
    // (node, level, key prefix, on the spine)
    let mut stack = vec![(root, 5u32, 0u64, true)];
    while let Some((node, level, prefix, spine)) = stack.pop() {
        let page = mem.page(node)?;
        let shift = 15 + 9 * (level - 1);
        for i in (0..512u64).rev() {
            let v = page.load(i as usize).unwrap_or(0);
            if v == 0 || (level == 5 && i >= 4) {
                continue;
            }
            let key = prefix | (i << shift);
            let on_spine = spine && i == 0;
            if level == 1 {
                if !on_spine && key != 0 {
                    let order = Order::try_new(52 - (63 - key.leading_zeros()))
                        .map_err(|_| kho::MemError::OutOfMemory)?;
                    out.push(LeafAt {
                        leaf: PhysAddr::new(v),
                        entry: PhysAddr::new(node.as_u64() + i * 8),
                        order,
                        key,
                    });
                }
            } else {
                stack.push((PhysAddr::new(v), level - 1, key, on_spine));
            }
        }
    }
    Ok(out)
}

/// Flips one byte of the handover in `mem` as `class` says, choosing the
/// target so that the break is one a reader can see: the tree at `root`
/// (or, for [`CorruptClass::ChunkHeader`], the kho-v1 chunk list at
/// `root`), the root FDT page `fdt`. `forbidden` (sorted) is what no block
/// may touch; leaves whose span holds a block of `keep` (the handover's
/// own metadata: FDT, manifest, LUO pages) are avoided when another will
/// do, so that the new kernel can still read what it restores. Returns the
/// byte changed, or why no target exists.
pub fn inject_corruption(
    mem: &PhysMem,
    class: CorruptClass,
    fdt: PhysRange,
    root: PhysAddr,
    forbidden: &[PhysRange],
    keep: &[Block],
) -> Result<Corruption, String> {
    let flip = |at: PhysAddr, mask: u8, what: String| -> Result<Corruption, String> {
        // The byte's word: the byte helpers copy whole aligned words.
        let word = PhysAddr::new(at.as_u64() & !7);
        let i = (at.as_u64() & 7) as usize;
        let mut w =
            crate::physio::read_bytes(mem, word, 8).map_err(|e| format!("reading {at}: {e}"))?;
        let old = w.get(i).copied().unwrap_or(0);
        let new = old ^ mask;
        if let Some(b) = w.get_mut(i) {
            *b = new;
        }
        crate::physio::write_bytes(mem, word, &w).map_err(|e| format!("writing {at}: {e}"))?;
        Ok(Corruption {
            class,
            at,
            old,
            new,
            what,
        })
    };
    let ram = mem.layout().ram();
    let bad_block = |b: Block| {
        b.range().is_none_or(|r| {
            !ram.iter().any(|x| x.contains_range(r)) || forbidden.iter().any(|f| f.overlaps(r))
        })
    };
    match class {
        CorruptClass::FdtProperty | CorruptClass::ChunkHeader => {
            if class == CorruptClass::ChunkHeader {
                // The chunk list head is the map's root.
                let is_chunk = {
                    let p = mem
                        .page(root)
                        .map_err(|e| format!("chunk list head {root}: {e}"))?;
                    let w = p.load(1).unwrap_or(0);
                    (w >> 32) <= 255 && (w & 0xffff_ffff) <= 51
                };
                if !is_chunk {
                    return Err(format!(
                        "no kho-v1 chunk header at {root} (chunk-header needs --scheme xarray or xarray-512)"
                    ));
                }
                let at = PhysAddr::new(root.as_u64() + 13);
                return flip(at, 0xff, format!("num_elms of the chunk at {root}"));
            }
            let bytes = crate::physio::read_bytes(mem, fdt.start(), fdt.size() as usize)
                .map_err(|e| format!("root FDT {fdt}: {e}"))?;
            let needle = root.as_u64().to_le_bytes();
            let hits: Vec<usize> = bytes
                .windows(8)
                .enumerate()
                .filter(|(_, w)| *w == needle)
                .map(|(i, _)| i)
                .collect();
            // The hit that is the property: flipping it changes the root
            // the FDT names (the address may also appear elsewhere).
            let is_property = |off: usize| {
                let mut b = bytes.clone();
                if let Some(x) = b.get_mut(off + 7) {
                    *x ^= 0xff;
                }
                kho::KhoFdt::parse(&b).is_ok_and(|f| f.root() != root)
            };
            let Some(off) = hits.into_iter().find(|&o| is_property(o)) else {
                return Err(format!(
                    "the root FDT at {fdt} holds no preserved-memory-map equal to {root}"
                ));
            };
            let at = PhysAddr::new(fdt.start().as_u64() + off as u64 + 7);
            flip(at, 0xff, "preserved-memory-map, top byte".to_owned())
        }
        CorruptClass::ChildPointer | CorruptClass::LeafWord => {
            let mut all = leaves(mem, root).map_err(|e| format!("reading the tree: {e}"))?;
            // Smallest spans first; then leaves whose span holds no
            // metadata block.
            all.sort_by_key(|l| {
                let span = l.span().unwrap_or_default();
                let holds = keep
                    .iter()
                    .any(|b| b.range().is_some_and(|r| r.overlaps(span)));
                (holds, l.order, l.key)
            });
            for l in &all {
                let page = mem
                    .page(l.leaf)
                    .map_err(|e| format!("leaf {}: {e}", l.leaf))?;
                if page.is_zero() {
                    continue;
                }
                if class == CorruptClass::ChildPointer {
                    return flip(
                        l.entry,
                        0xff,
                        format!(
                            "level-1 entry pointing to the order-{} leaf {}",
                            l.order, l.leaf
                        ),
                    );
                }
                for byte in 0..4096u64 {
                    let v = (page.load((byte / 8) as usize).unwrap_or(0) >> ((byte % 8) * 8)) as u8;
                    let detectable = (0..8u64)
                        .filter(|i| v & (1 << i) == 0)
                        .any(|i| l.block(byte * 8 + i).is_none_or(bad_block));
                    if detectable {
                        return flip(
                            PhysAddr::new(l.leaf.as_u64() + byte),
                            0xff,
                            format!("order-{} leaf {}, byte {byte}", l.order, l.leaf),
                        );
                    }
                }
            }
            Err(format!(
                "no {class} target in the tree at {root}: no leaf with a preserved block{}",
                if class == CorruptClass::LeafWord {
                    " and a byte whose flip names a block outside RAM or in a forbidden range"
                } else {
                    ""
                }
            ))
        }
    }
}

#[cfg(test)]
mod tests;
