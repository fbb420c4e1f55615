//! The schemes on the simulated machine: [`MachineScheme`] implements
//! kho-machine's [`PeerScheme`], so `kho run --scheme` preserves, hands
//! over and restores through a peer across the real two-process kexec.
//!
//! | scheme           | root FDT `compatible` | `preserved-memory-map` | subnodes (the manifest)                      |
//! |------------------|-----------------------|------------------------|----------------------------------------------|
//! | `xarray`, `xarray-512` | `kho-v1`        | first chunk            | `fdt` = blob phys, no size (6.16's format; the blob's header gives its length) |
//! | `radix-mainline` | `kho-v3`              | radix root             | `preserved-data`, `blob-size`                |
//! | `maple`          | `kho-maple-v1` (this lab's own: the proposal defined none) | first chunk | `preserved-data`, `blob-size` (as kho-v3) |
//!
//! The new kernel's accounting is the scheme's [`SchemeKind::restore`] into
//! memblock (`memblock_reserve` + `memblock_reserved_mark_noinit`) and the
//! head pages (`{order, KHOP}`), timed like the machine's `per-block`
//! strategy: a read-only pass (`walk`, validating the whole handover before
//! memblock changes), then the real pass (`memblock` = it minus the walk).

use std::sync::Arc;
use std::time::{Duration, Instant};

use dtoolkit::fdt::Fdt;
use dtoolkit::{Node, Property};
use kho::{
    Block, KhoFdt, KhoFdtBuilder, KhoVersion, PROP_BLOB_SIZE, PROP_COMPATIBLE, PROP_PRESERVED_DATA,
    PROP_PRESERVED_MEMORY_MAP, PhysAddr, PhysRange, RamMap,
};
use kho_machine::kho::{
    KhoError, KhoIn, KhoMemoryInitStats, PeerFdt, PeerHandover, PeerScheme, kho_forbidden,
    write_head,
};
use kho_machine::memblock::Memblock;
use kho_machine::memmap::MemMap;
use kho_machine::workload::TreeAlloc;
use kho_machine::{Machine, Strategy};

use super::{MAPLE_COMPATIBLE, Reserve, SchemeError, SchemeKind};

/// A scheme as the simulated machine's kernels use it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MachineScheme(pub SchemeKind);

impl MachineScheme {
    /// The `--scheme` named `name`: `None` for `kho` (the machine's own
    /// path, with every strategy) and for unknown names.
    pub fn by_name(name: &str) -> Option<Arc<dyn PeerScheme>> {
        match SchemeKind::from_name(name)? {
            SchemeKind::Kho => None,
            k => Some(Arc::new(Self(k))),
        }
    }

    /// The restore strategy a report names for `kind`: the peers'
    /// reservation granularity (per block; maple per range).
    pub fn strategy(kind: SchemeKind) -> Option<Strategy> {
        match kind {
            SchemeKind::Kho => None,
            SchemeKind::Maple => Some(Strategy::Coalesced),
            _ => Some(Strategy::PerBlock),
        }
    }
}

fn s(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// The root FDT of a maple handover: `kho-v3`'s layout under
/// [`MAPLE_COMPATIBLE`].
pub fn maple_fdt(root: PhysAddr, subnodes: &[(&str, PhysAddr, u64)]) -> Result<Vec<u8>, String> {
    let mut w = vm_fdt::FdtWriter::new().map_err(s)?;
    let top = w.begin_node("").map_err(s)?;
    w.property_string(PROP_COMPATIBLE, MAPLE_COMPATIBLE)
        .map_err(s)?;
    w.property(PROP_PRESERVED_MEMORY_MAP, &root.as_u64().to_ne_bytes())
        .map_err(s)?;
    for &(name, data, size) in subnodes {
        let n = w.begin_node(name).map_err(s)?;
        w.property(PROP_PRESERVED_DATA, &data.as_u64().to_ne_bytes())
            .map_err(s)?;
        w.property(PROP_BLOB_SIZE, &size.to_ne_bytes()).map_err(s)?;
        w.end_node(n).map_err(s)?;
    }
    w.end_node(top).map_err(s)?;
    let bytes = w.finish().map_err(s)?;
    if bytes.len() > kho::KHO_FDT_MAX_SIZE {
        return Err(format!("root FDT of {} bytes", bytes.len()));
    }
    Ok(bytes)
}

fn u64_prop(value: &[u8], what: &str) -> Result<u64, String> {
    value
        .try_into()
        .map(u64::from_ne_bytes)
        .map_err(|_| format!("{what}: {} bytes, not 8", value.len()))
}

/// Parses a maple root FDT (bytes past `totalsize` ignored).
pub fn parse_maple_fdt(bytes: &[u8]) -> Result<PeerFdt, String> {
    let total = bytes
        .get(4..8)
        .and_then(|b| b.try_into().ok())
        .map(u32::from_be_bytes)
        .and_then(|t| usize::try_from(t).ok())
        .filter(|&t| t <= kho::KHO_FDT_MAX_SIZE)
        .ok_or("no FDT header, or larger than a page")?;
    let bytes = bytes.get(..total).ok_or("FDT truncated")?;
    let fdt = Fdt::new(bytes).map_err(s)?;
    let top = fdt.root();
    let compatible_prop = top.property(PROP_COMPATIBLE).ok_or("no compatible")?;
    let compatible = compatible_prop.value();
    let want = [MAPLE_COMPATIBLE.as_bytes(), b"\0"].concat();
    if compatible != want.as_slice() {
        return Err(format!(
            "compatible {:?}, not {MAPLE_COMPATIBLE}",
            String::from_utf8_lossy(compatible)
        ));
    }
    let root = u64_prop(
        top.property(PROP_PRESERVED_MEMORY_MAP)
            .ok_or("no preserved-memory-map")?
            .value(),
        PROP_PRESERVED_MEMORY_MAP,
    )?;
    let mut subnodes = Vec::new();
    for n in top.children() {
        let data = n
            .property(PROP_PRESERVED_DATA)
            .ok_or_else(|| format!("{}: no preserved-data", n.name()))?;
        let size = n
            .property(PROP_BLOB_SIZE)
            .ok_or_else(|| format!("{}: no blob-size", n.name()))?;
        subnodes.push((
            n.name().to_owned(),
            PhysAddr::new(u64_prop(data.value(), PROP_PRESERVED_DATA)?),
            Some(u64_prop(size.value(), PROP_BLOB_SIZE)?),
        ));
    }
    Ok(PeerFdt {
        version: KhoVersion::V3,
        root: PhysAddr::new(root),
        subnodes,
    })
}

/// Reads and discards: the read-only (validating) pass.
struct Discard;

impl Reserve for Discard {
    fn reserve(&mut self, _: PhysRange) -> Result<(), SchemeError> {
        Ok(())
    }

    fn head(&mut self, _: Block) -> Result<(), SchemeError> {
        Ok(())
    }
}

/// The new kernel's memblock and struct pages.
struct Target<'a, 'm> {
    mb: &'a mut Memblock,
    mm: &'a MemMap<'m>,
}

impl Reserve for Target<'_, '_> {
    fn reserve(&mut self, range: PhysRange) -> Result<(), SchemeError> {
        let err = |e: kho_machine::MemblockError| SchemeError::Reserve {
            range,
            reason: e.to_string(),
        };
        self.mb
            .memblock_reserve(range.start(), range.size())
            .map_err(err)?;
        self.mb
            .memblock_reserved_mark_noinit(range.start(), range.size())
            .map_err(err)
    }

    fn head(&mut self, block: Block) -> Result<(), SchemeError> {
        write_head(self.mm, block).map_err(|e| SchemeError::Reserve {
            range: block.range().unwrap_or_default(),
            reason: e.to_string(),
        })
    }
}

impl PeerScheme for MachineScheme {
    fn name(&self) -> &'static str {
        self.0.name()
    }

    fn hand_over(
        &self,
        alloc: &TreeAlloc<'_, '_>,
        blocks: &[Block],
        subnodes: &[(&str, PhysAddr, u64)],
    ) -> Result<PeerHandover, String> {
        let mut t = self.0.tracker(alloc).map_err(s)?;
        for &b in blocks {
            t.preserve(b).map_err(s)?;
        }
        let start = Instant::now();
        let h = t.finalize().map_err(s)?;
        let finalize = start.elapsed();
        let metadata_pages = t.metadata().total_pages();
        let fdt = match self.0 {
            SchemeKind::Maple => maple_fdt(h.root, subnodes)?,
            k => {
                let v = match k {
                    SchemeKind::Xarray512 | SchemeKind::XarrayPage => KhoVersion::V1,
                    _ => KhoVersion::V3,
                };
                let mut b = KhoFdtBuilder::new(h.root).version(v);
                for &(name, data, size) in subnodes {
                    b.add_subnode(name, data, size);
                }
                b.build().map_err(s)?
            }
        };
        Ok(PeerHandover {
            fdt,
            root: h.root,
            finalize_ms: finalize.as_secs_f64() * 1e3,
            metadata_pages,
        })
    }

    fn parse_fdt(&self, bytes: &[u8]) -> Result<PeerFdt, String> {
        if self.0 == SchemeKind::Maple {
            return parse_maple_fdt(bytes);
        }
        let f = KhoFdt::parse(bytes).map_err(s)?;
        let ok = match self.0 {
            SchemeKind::Xarray512 | SchemeKind::XarrayPage => f.version() == KhoVersion::V1,
            _ => matches!(f.version(), KhoVersion::V2 | KhoVersion::V3),
        };
        if !ok {
            return Err(format!(
                "compatible {}, not {}",
                f.version(),
                self.0.compatible()
            ));
        }
        Ok(PeerFdt {
            version: f.version(),
            root: f.root(),
            subnodes: f
                .subnodes()
                .map(|n| (n.name().to_owned(), n.data(), n.size()))
                .collect(),
        })
    }

    fn memory_init(
        &self,
        machine: &mut Machine<'_>,
        k: &KhoIn,
    ) -> Result<KhoMemoryInitStats, KhoError> {
        let err = |e: SchemeError| KhoError::Scheme {
            scheme: self.0.name(),
            reason: e.to_string(),
        };
        let mem = machine.mem();
        let forbidden = kho_forbidden(machine, k);
        let map = RamMap::new(mem.layout().ram(), &forbidden).map_err(KhoError::RamMap)?;
        let t = Instant::now();
        self.0
            .restore(mem, map, k.root, &mut Discard)
            .map_err(err)?;
        let walk = t.elapsed();
        let (mb, mm) = machine.memblock_and_memmap();
        let mm = mm.ok_or(KhoError::NoMemmap)?;
        let mut target = Target { mb, mm };
        let t = Instant::now();
        let st = self.0.restore(mem, map, k.root, &mut target).map_err(err)?;
        let memblock = t.elapsed().saturating_sub(walk);
        Ok(KhoMemoryInitStats {
            blocks: st.blocks,
            bytes: st.bytes,
            ranges: if self.0 == SchemeKind::Maple {
                st.reservations
            } else {
                0
            },
            nodes: 0,
            walk,
            heads: Duration::ZERO,
            memblock,
            reserved_regions: target.mb.reserved.cnt() as u64,
        })
    }
}
