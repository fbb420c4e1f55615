//! **Ours**: the tracker designs of the debate as the simulated kernels see
//! them. A handover written by another design (`kho run --scheme`: Linux
//! 6.16's xarray and kho-v1 chunk list, mainline's radix tree, the maple
//! proposal) is written and read through a [`PeerScheme`], implemented in
//! kho-lab: [`super::kho_populate`] lets it parse the root FDT (its own
//! compatible), and [`super::kho_memory_init`] lets it account the
//! preserved memory through [`super::reserve_preserved`] under any restore
//! [`Strategy`] its handover can feed ([`PeerScheme::strategies`]): the
//! tracker decides what is read, the strategy what memblock does.

use std::fmt;
use std::sync::Arc;

use kho::{Block, KhoVersion, PhysAddr, RamMap};

use super::{KhoMemoryInitStats, ReservationSink, Strategy};
use crate::arena::PhysMem;
use crate::preserve::TreeAlloc;

/// A preserved-memory tracker other than the built-in radix tree, as both
/// kernels see it: kho-lab's peer schemes implement it, `kho run --scheme`
/// picks one.
pub trait PeerScheme: fmt::Debug + Send + Sync {
    /// The scheme's name (`--scheme`).
    fn name(&self) -> &'static str;
    /// The old kernel: preserves `blocks`, in order, through a fresh
    /// tracker whose memory comes from `alloc`, finalizes it, and builds
    /// the root FDT around its handover with `subnodes` (name, blob, size).
    fn hand_over(
        &self,
        alloc: &TreeAlloc<'_, '_>,
        blocks: &[Block],
        subnodes: &[(&str, PhysAddr, u64)],
    ) -> Result<PeerHandover, PeerError>;
    /// The new kernel: parses the root FDT, refusing any compatible but
    /// the scheme's.
    fn parse_fdt(&self, bytes: &[u8]) -> Result<PeerFdt, PeerError>;
    /// The restore strategies its handover can feed (never `skip`: that
    /// is the machine's own path).
    fn strategies(&self) -> &'static [Strategy];
    /// The new kernel's accounting for this scheme: reads the handover
    /// whose map is at `root` in `mem` (checked against `ram`) and accounts
    /// it in `sink` with [`super::reserve_preserved`] per `strategy`;
    /// refuses a strategy not in [`PeerScheme::strategies`].
    fn reserve_preserved(
        &self,
        strategy: Strategy,
        mem: &PhysMem,
        ram: RamMap<'_>,
        root: PhysAddr,
        sink: &mut dyn ReservationSink,
    ) -> Result<KhoMemoryInitStats, PeerError>;
}

/// What a [`PeerScheme`] left in the old kernel's memory.
#[derive(Debug, Clone, PartialEq)]
pub struct PeerHandover {
    /// The root FDT's bytes.
    pub fdt: Vec<u8>,
    /// Its `preserved-memory-map`.
    pub root: PhysAddr,
    /// Finalize (the handover preparation), ms.
    pub finalize_ms: f64,
    /// The tracker's metadata pages, counted exactly (simulated pages plus
    /// the slab pages of its modelled kernel objects).
    pub metadata_pages: u64,
}

/// A root FDT as a [`PeerScheme`] parsed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerFdt {
    /// The subnode format (`kho-v1`: `fdt`, no size; `kho-v3`:
    /// `preserved-data` and `blob-size`).
    pub version: KhoVersion,
    /// `preserved-memory-map`.
    pub root: PhysAddr,
    /// The subnodes: `(name, data, size)`.
    pub subnodes: Vec<(String, PhysAddr, Option<u64>)>,
}

/// A [`PeerScheme`]'s error, its source kept (the schemes and their error
/// types live in kho-lab, above this crate). Two are equal when they are
/// the same error (one clone of the other).
#[derive(Clone)]
pub struct PeerError(Arc<dyn std::error::Error + Send + Sync + 'static>);

impl PeerError {
    /// Wraps a scheme's error.
    pub fn new(source: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self(Arc::new(source))
    }

    /// The scheme's error.
    pub fn get(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        &*self.0
    }
}

impl fmt::Debug for PeerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for PeerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&*self.0, f)
    }
}

impl std::error::Error for PeerError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

impl PartialEq for PeerError {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for PeerError {}
