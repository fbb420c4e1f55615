//! The schemes on the simulated machine: [`MachineScheme`] implements
//! kho-machine's [`PeerScheme`], so `kho run --scheme` preserves, hands
//! over and restores through a peer across the real two-process kexec.
//!
//! | scheme                 | root FDT `compatible` | `preserved-memory-map` | subnodes (the manifest)         |
//! |------------------------|-----------------------|------------------------|---------------------------------|
//! | `xarray`, `xarray-512` | `kho-v1`              | first chunk            | `fdt` = blob phys, no size (1)  |
//! | `radix-mainline`       | `kho-v3`              | radix root             | `preserved-data`, `blob-size`   |
//! | `maple`                | `kho-maple-v1` (2)    | first chunk            | `preserved-data`, `blob-size`   |
//!
//! (1) 6.16's format: the blob's header gives its length. (2) This lab's
//! own: the proposal defined none.
//!
//! The new kernel's accounting is the scheme's [`SchemeKind::restore`]
//! under the strategy the new kernel was given (one of
//! [`SchemeKind::strategies`]): its map read by the machine's one
//! accounting ([`kho_machine::reserve_preserved`]) into the machine's
//! memblock and head pages, timed as the machine times ours.

use std::sync::Arc;
use std::time::Instant;

use dtoolkit::fdt::Fdt;
use dtoolkit::{Node, Property};
use kho::{
    Block, KhoFdt, KhoFdtBuilder, KhoVersion, PROP_BLOB_SIZE, PROP_COMPATIBLE, PROP_PRESERVED_DATA,
    PROP_PRESERVED_MEMORY_MAP, PhysAddr, RamMap,
};
use kho_machine::{
    KhoMemoryInitStats, PeerError, PeerFdt, PeerHandover, PeerScheme, PhysMem, ReservationSink,
    Strategy, TreeAlloc,
};

use super::{MAPLE_COMPATIBLE, SchemeError, SchemeKind};

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
}

/// The root FDT of a maple handover: `kho-v3`'s layout under
/// [`MAPLE_COMPATIBLE`].
pub fn maple_fdt(
    root: PhysAddr,
    subnodes: &[(&str, PhysAddr, u64)],
) -> Result<Vec<u8>, SchemeError> {
    let mut w = vm_fdt::FdtWriter::new()?;
    let top = w.begin_node("")?;
    w.property_string(PROP_COMPATIBLE, MAPLE_COMPATIBLE)?;
    w.property(PROP_PRESERVED_MEMORY_MAP, &root.as_u64().to_ne_bytes())?;
    for &(name, data, size) in subnodes {
        let n = w.begin_node(name)?;
        w.property(PROP_PRESERVED_DATA, &data.as_u64().to_ne_bytes())?;
        w.property(PROP_BLOB_SIZE, &size.to_ne_bytes())?;
        w.end_node(n)?;
    }
    w.end_node(top)?;
    let bytes = w.finish()?;
    if bytes.len() > kho::KHO_FDT_MAX_SIZE {
        return Err(SchemeError::FdtTooLarge { size: bytes.len() });
    }
    Ok(bytes)
}

fn u64_prop(value: &[u8], property: &'static str) -> Result<u64, SchemeError> {
    value
        .try_into()
        .map(u64::from_ne_bytes)
        .map_err(|_| SchemeError::PropertySize {
            property,
            len: value.len(),
        })
}

/// Parses a maple root FDT (bytes past `totalsize` ignored).
pub fn parse_maple_fdt(bytes: &[u8]) -> Result<PeerFdt, SchemeError> {
    let layout = |reason| SchemeError::FdtLayout { reason };
    let total = bytes
        .get(4..8)
        .and_then(|b| b.try_into().ok())
        .map(u32::from_be_bytes)
        .and_then(|t| usize::try_from(t).ok())
        .filter(|&t| t <= kho::KHO_FDT_MAX_SIZE)
        .ok_or(layout("no FDT header, or larger than a page"))?;
    let bytes = bytes.get(..total).ok_or(layout("FDT truncated"))?;
    let fdt = Fdt::new(bytes)?;
    let top = fdt.root();
    let missing = |node: &str, property| SchemeError::MissingProperty {
        node: node.to_owned(),
        property,
    };
    let compatible_prop = top
        .property(PROP_COMPATIBLE)
        .ok_or_else(|| missing("", PROP_COMPATIBLE))?;
    let compatible = compatible_prop.value();
    let want = [MAPLE_COMPATIBLE.as_bytes(), b"\0"].concat();
    if compatible != want.as_slice() {
        return Err(SchemeError::Compatible {
            found: String::from_utf8_lossy(compatible).into_owned(),
            want: MAPLE_COMPATIBLE,
        });
    }
    let root = u64_prop(
        top.property(PROP_PRESERVED_MEMORY_MAP)
            .ok_or_else(|| missing("", PROP_PRESERVED_MEMORY_MAP))?
            .value(),
        PROP_PRESERVED_MEMORY_MAP,
    )?;
    let mut subnodes = Vec::new();
    for n in top.children() {
        let data = n
            .property(PROP_PRESERVED_DATA)
            .ok_or_else(|| missing(n.name(), PROP_PRESERVED_DATA))?;
        let size = n
            .property(PROP_BLOB_SIZE)
            .ok_or_else(|| missing(n.name(), PROP_BLOB_SIZE))?;
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

impl MachineScheme {
    fn hand_over(
        self,
        alloc: &TreeAlloc<'_, '_>,
        blocks: &[Block],
        subnodes: &[(&str, PhysAddr, u64)],
    ) -> Result<PeerHandover, SchemeError> {
        let mut t = self.0.tracker(alloc)?;
        for &b in blocks {
            t.preserve(b)?;
        }
        let start = Instant::now();
        let h = t.finalize()?;
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
                b.build()?
            }
        };
        Ok(PeerHandover {
            fdt,
            root: h.root,
            finalize_ms: finalize.as_secs_f64() * 1e3,
            metadata_pages,
        })
    }

    fn parse_fdt(self, bytes: &[u8]) -> Result<PeerFdt, SchemeError> {
        if self.0 == SchemeKind::Maple {
            return parse_maple_fdt(bytes);
        }
        let f = KhoFdt::parse(bytes)?;
        let ok = match self.0 {
            SchemeKind::Xarray512 | SchemeKind::XarrayPage => f.version() == KhoVersion::V1,
            _ => matches!(f.version(), KhoVersion::V2 | KhoVersion::V3),
        };
        if !ok {
            return Err(SchemeError::Compatible {
                found: f.version().to_string(),
                want: self.0.compatible(),
            });
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
    ) -> Result<PeerHandover, PeerError> {
        MachineScheme::hand_over(*self, alloc, blocks, subnodes).map_err(PeerError::new)
    }

    fn parse_fdt(&self, bytes: &[u8]) -> Result<PeerFdt, PeerError> {
        MachineScheme::parse_fdt(*self, bytes).map_err(PeerError::new)
    }

    fn strategies(&self) -> &'static [Strategy] {
        self.0.strategies()
    }

    fn reserve_preserved(
        &self,
        strategy: Strategy,
        mem: &PhysMem,
        ram: RamMap<'_>,
        root: PhysAddr,
        sink: &mut dyn ReservationSink,
    ) -> Result<KhoMemoryInitStats, PeerError> {
        // Never `skip` (not in its strategies): no ranges to hand back.
        self.0
            .restore(strategy, mem, ram, root, sink)
            .map(|(st, _)| st)
            .map_err(PeerError::new)
    }
}
