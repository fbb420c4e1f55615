//! The new kernel's report: one JSON line on stdout, one row of `kho run`.

use serde::{Deserialize, Serialize};

use super::LuoFileReport;
use crate::kho::{DamageReport, OnCorruption, Strategy};
use crate::memmap::MemmapMode;

fn one() -> usize {
    1
}

fn is_reject(m: &OnCorruption) -> bool {
    *m == OnCorruption::Reject
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

fn on_corruption_serde<S: serde::Serializer>(m: &OnCorruption, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(m.as_str())
}

fn on_corruption_de<'de, D: serde::Deserializer<'de>>(d: D) -> Result<OnCorruption, D::Error> {
    let s = String::deserialize(d)?;
    s.parse().map_err(serde::de::Error::custom)
}

/// One row of the report: what the new kernel measured for one strategy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunReport {
    /// The restore strategy.
    pub strategy: Strategy,
    /// The struct-page configuration of both boots (`eager`, `deferred`,
    /// `lazy`).
    #[serde(default)]
    pub memmap: MemmapMode,
    /// CPUs of both boots (`deferred_init_memmap`'s padata split).
    #[serde(default = "one")]
    pub threads: usize,
    /// Ours: `memmap_init` split over the threads too.
    #[serde(default)]
    pub parallel_memmap_init: bool,
    /// Preserved blocks (walked in the radix tree).
    pub blocks: u64,
    /// Their bytes, plus the bytes of manifest folios that are not in the
    /// tree (the workload forgot them: they are lost), so that
    /// `verified_bytes + lost_bytes == preserved_bytes`.
    pub preserved_bytes: u64,
    /// Walking the radix tree, ms (see [`crate::reserve_preserved`] for
    /// what each strategy counts).
    pub walk_ms: f64,
    /// Accounting the preserved memory in memblock, ms.
    pub memblock_ms: f64,
    /// memmap_init + memblock_free_all + page_alloc_init_late's deferred
    /// init of the KHO boot, ms (the KHO work is not in it).
    pub mm_init_ms: f64,
    /// Of which `deferred_init_memmap` (one thread here), ms.
    #[serde(default)]
    pub deferred_init_ms: f64,
    /// The same on a boot with nothing preserved, ms.
    pub baseline_mm_init_ms: f64,
    /// Struct pages initialised before the restore (every
    /// `__init_single_page` of `memmap_init`, deferred init, the
    /// reserve path, `page_alloc_init_late`).
    #[serde(default)]
    pub memmap_inited_pages: u64,
    /// The same on the baseline boot.
    #[serde(default)]
    pub baseline_memmap_inited_pages: u64,
    /// Struct pages the restore initialised (non-zero only with `lazy`).
    #[serde(default)]
    pub restore_inited_pages: u64,
    /// Bytes whose contents matched the manifest.
    pub verified_bytes: u64,
    /// Bytes that did not.
    pub lost_bytes: u64,
    /// Regions of memblock.reserved after the reservation.
    pub memblock_reserved_regions: u64,
    /// Why the new kernel booted without KHO (`None`: KHO was used).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kho_error: Option<String>,
    /// The peer scheme that tracked and restored the memory (`None`: ours,
    /// `kho`, restored with `strategy`; a peer restores its own way and
    /// `strategy` names the closest: `per-block` or, for maple's one
    /// reservation per range, `coalesced`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<String>,
    /// Per LUO file (kho-v4 runs): session, token, handler, bytes of its
    /// folios verified and lost; their bytes are part of `verified_bytes`
    /// and `lost_bytes`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub luo_files: Vec<LuoFileReport>,
    /// Why the LUO handover could not be read (`None`: read, or none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub luo_error: Option<String>,
    /// **Ours**: what the new kernel did with a broken handover (absent:
    /// `reject`, Linux's).
    #[serde(
        default,
        skip_serializing_if = "is_reject",
        serialize_with = "on_corruption_serde",
        deserialize_with = "on_corruption_de"
    )]
    pub on_corruption: OnCorruption,
    /// Salvage: each damaged node and the span reserved for it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub damage: Vec<DamageReport>,
    /// Salvage: RAM bytes reserved for the damage (the spans merged).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub damage_reserved_bytes: u64,
    /// A chained run (`kho run --updates N`, N > 1): which live update
    /// this kernel is and what the handover it booted from measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chain: Option<Generation>,
}

/// One generation of a chained run: the handover this kernel booted from,
/// as this kernel read it (nothing here is the writer's own account).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Generation {
    /// This kernel's live update, 1-based (the first new kernel is 1).
    pub generation: u32,
    /// Live updates of the chain.
    pub updates: u32,
    /// `liveupdate_num` of the incoming LUO header (`kho-v4`; `None`
    /// without LUO): the writer's count of live updates, which Linux
    /// increments once per kernel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub liveupdate_num: Option<u64>,
    /// Radix tree pages the walk entered (root, inner nodes, leaves).
    pub tree_pages: u64,
    /// Root FDT pages (`kho_data.fdt_size`, one page).
    pub fdt_pages: u64,
    /// LUO structure pages restored: header, session and file blocks,
    /// FLB page, handler records, vmalloc chunks and array pages.
    pub luo_pages: u64,
    /// The test manifest's pages (the oracle, not KHO metadata: it grows
    /// with the folios each generation adds).
    pub manifest_pages: u64,
    /// The scratch areas of the handover, `[lowmem, global, node 0]`, as
    /// `(base, size)`.
    pub scratch: Vec<(u64, u64)>,
    /// Folios this kernel preserved again for the next one (restored and
    /// verified), `0` in the last generation.
    pub carried_folios: u64,
    /// Folios this kernel added for the next one (the small per-generation
    /// workload), `0` in the last generation.
    pub new_folios: u64,
}
