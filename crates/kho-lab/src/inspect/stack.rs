//! Above the tracker: the `LUO` subnode's sessions, files and folios, the
//! `memblock` subnode's regions, and the core's cross-layer check
//! ([`kho::CrossCheck`]) with its orphans, for `kho inspect`.
//!
//! The simulator's own `kho-run` subnode is read too: its manifest's
//! blocks that no LUO file lists count as referenced, so on a healthy
//! `kho run --dump-core` core nothing is orphaned.
//!
//! Every error names an address and, inside LUO, the structure path
//! (session / file / folio slot), as the core's errors do.

use std::collections::{BTreeMap, HashSet};

use kho::{
    Block, CrossCheck, FileData, FolioEntry, HandlerKind, KhoFdt, LUO_KHO_ENTRY_NAME, LuoPath,
    LuoState, MEMBLOCK_KHO_FDT, MemblockFdt, Order, PAGE_BYTES, PAGE_SIZE, PageMap, PhysAddr,
    PhysRange, PhysReader, PreservedBlocks, PreservedLookup, RamMap, TrackerPages,
};
use kho_machine::{MANIFEST_NODE, Manifest};
use serde::Serialize;

use super::{Finding, OrderCount, hex};
use crate::image::MemImage;

/// The LUO handover, as `--json` shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct LuoInfo {
    /// The header's `compatible`.
    pub compatible: String,
    /// `liveupdate_num`.
    pub liveupdate_number: u64,
    /// The header's address.
    #[serde(serialize_with = "hex")]
    pub header: u64,
    /// The sessions, in chain order.
    pub sessions: Vec<SessionInfo>,
    /// The FLBs.
    pub flbs: Vec<FlbInfo>,
}

/// One session.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SessionInfo {
    /// Its name.
    pub name: String,
    /// Its files, in chain order.
    pub files: Vec<FileInfo>,
}

/// One file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct FileInfo {
    /// The handler's `compatible`.
    pub compatible: String,
    /// Userspace's token.
    pub token: u64,
    /// `memfd`, `guest_memfd`, `kvm` or `unknown`.
    pub kind: String,
    /// The file size the record holds (memfd, guest_memfd).
    pub size: Option<u64>,
    /// Folio entries that name a folio (holes left out).
    pub folios: u64,
    /// Their bytes, at the orders the tracker holds them.
    pub bytes: u64,
    /// Entries whose pfn is 0 (Linux skips them).
    pub holes: u64,
    /// Folios per order.
    pub orders: Vec<OrderCount>,
    /// Folios per flags value.
    pub flags: Vec<FlagCount>,
    /// The handler record's address (`None`: unknown handler).
    pub record: Option<String>,
    /// An unknown handler's raw data handle.
    pub data: Option<String>,
    /// The folios, in array order: slot, block (`None`: not a preserved
    /// block head), page index, flags.
    #[serde(skip)]
    pub folio_list: Vec<FolioRow>,
}

/// Folios sharing one flags value.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct FlagCount {
    /// The flags.
    pub flags: u16,
    /// Folios with them.
    pub folios: u64,
}

/// One folio of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FolioRow {
    /// Its slot in the folio array.
    pub slot: u64,
    /// The preserved block it heads (`None`: none, a finding says why).
    pub block: Option<Block>,
    /// Its page index in the file.
    pub index: u64,
    /// Its flags.
    pub flags: u16,
}

/// One FLB.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct FlbInfo {
    /// Its name.
    pub name: String,
    /// Its data handle.
    #[serde(serialize_with = "hex")]
    pub data: u64,
    /// Files that depend on it.
    pub count: u64,
}

/// Preserved blocks no structure read names.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct OrphanInfo {
    /// How many.
    pub blocks: u64,
    /// Their bytes.
    pub bytes: u64,
    /// The first addresses, ascending (`0x` strings).
    pub first: Vec<String>,
}

/// What [`read_stack`] found.
#[derive(Debug, Default)]
pub(super) struct Stack {
    pub luo: Option<LuoInfo>,
    pub orphans: Option<OrphanInfo>,
    pub errors: Vec<Finding>,
    pub notes: Vec<String>,
    /// The root FDT's address, when known.
    pub fdt_phys: Option<PhysAddr>,
}

fn kind_name(k: HandlerKind) -> &'static str {
    match k {
        HandlerKind::Memfd(_) => "memfd",
        HandlerKind::GuestMemfd => "guest_memfd",
        HandlerKind::Kvm => "kvm",
        HandlerKind::Unknown => "unknown",
    }
}

fn file_info(tracker: &dyn PreservedLookup, f: &kho::FileState) -> FileInfo {
    let mut orders = BTreeMap::<u8, u64>::new();
    let mut flags = BTreeMap::<u16, u64>::new();
    let mut info = FileInfo {
        compatible: f.file.compatible.to_string(),
        token: f.file.token,
        kind: kind_name(HandlerKind::of(f.file.compatible.as_bytes())).to_owned(),
        size: f.data.size(),
        record: f.data.record().map(|p| format!("{:#x}", p.as_u64())),
        data: match f.data {
            FileData::Unknown { data } => Some(format!("{data:#x}")),
            _ => None,
        },
        ..FileInfo::default()
    };
    for e in f.data.folios() {
        let FolioEntry {
            slot,
            pfn,
            flags: fl,
            index,
            ..
        } = *e;
        let Some(pfn) = pfn else {
            info.holes += 1;
            continue;
        };
        let block = tracker
            .block_containing(pfn.phys())
            .filter(|b| b.phys() == pfn.phys());
        info.folios += 1;
        if let Some(b) = block {
            info.bytes = info.bytes.saturating_add(b.size());
            *orders.entry(b.order().as_u8()).or_default() += 1;
        }
        *flags.entry(fl).or_default() += 1;
        info.folio_list.push(FolioRow {
            slot,
            block,
            index,
            flags: fl,
        });
    }
    info.orders = orders
        .into_iter()
        .map(|(order, blocks)| OrderCount { order, blocks })
        .collect();
    info.flags = flags
        .into_iter()
        .map(|(flags, folios)| FlagCount { flags, folios })
        .collect();
    info
}

fn luo_info(tracker: &dyn PreservedLookup, state: &LuoState) -> LuoInfo {
    LuoInfo {
        compatible: state.header.compat.as_str().to_owned(),
        liveupdate_number: state.header.liveupdate_num,
        header: state.header.blob.as_u64(),
        sessions: state
            .sessions
            .iter()
            .map(|s| SessionInfo {
                name: s.session.name.to_string(),
                files: s.files.iter().map(|f| file_info(tracker, f)).collect(),
            })
            .collect(),
        flbs: state
            .flbs
            .iter()
            .map(|f| FlbInfo {
                name: f.name.to_string(),
                data: f.data,
                count: f.count,
            })
            .collect(),
    }
}

/// The record of the file at `path`: where a path-only finding points.
fn path_phys(state: Option<&LuoState>, path: &LuoPath) -> Option<PhysAddr> {
    let state = state?;
    let (si, _) = path.session?;
    let s = state.sessions.get(usize::try_from(si).ok()?)?;
    match path.file {
        Some((fi, _)) => {
            let f = s.files.get(usize::try_from(fi).ok()?)?;
            f.data.record().or(Some(f.file.entry))
        }
        None => Some(s.session.entry),
    }
}

/// The page of the image that holds exactly the root FDT file's bytes,
/// among the preserved order-0 blocks (the root FDT is one): its address
/// if exactly one does. The blocks are enumerated again, one page compared
/// at a time (its first word first): nothing is held per block.
fn locate_fdt(image: &MemImage, tracker: &dyn PreservedBlocks, bytes: &[u8]) -> Option<PhysAddr> {
    let len = bytes.len().min(PAGE_BYTES);
    let head = bytes.get(..len)?;
    let mut words = head.chunks(8).map(|c| {
        let mut w = [0u8; 8];
        w.iter_mut().zip(c).for_each(|(d, s)| *d = *s);
        (u64::from_le_bytes(w), c.len())
    });
    let (first, first_len) = words.next()?;
    let mask = |n: usize| {
        u32::try_from(n * 8)
            .ok()
            .and_then(|bits| 1u64.checked_shl(bits))
            .map_or(u64::MAX, |b| b.wrapping_sub(1))
    };
    let matches = |phys: PhysAddr| {
        let Ok(page) = image.page(phys) else {
            return false;
        };
        let w = page.words();
        let load = |i: usize| {
            w.get(i)
                .map_or(0, |x| x.load(std::sync::atomic::Ordering::Relaxed))
        };
        if load(0) & mask(first_len) != first {
            return false;
        }
        head.chunks(8).enumerate().skip(1).all(|(i, c)| {
            let mut b = [0u8; 8];
            b.iter_mut().zip(c).for_each(|(d, s)| *d = *s);
            load(i) & mask(c.len()) == u64::from_le_bytes(b)
        })
    };
    // Only pages the file holds can hold the bytes (the rest reads as
    // zero, and an FDT starts with its magic).
    let held: Vec<PhysRange> = image.held().collect();
    let mut found: Option<PhysAddr> = None;
    let mut twice = false;
    let _ = tracker.for_each_run(&mut |first: Block, count: u64| {
        if first.order() != Order::ZERO || twice {
            return;
        }
        let start = first.phys();
        let end = count
            .checked_mul(PAGE_SIZE)
            .and_then(|b| start.checked_add(b))
            .unwrap_or(PhysAddr::new(u64::MAX));
        let i = held.partition_point(|h| h.end() <= start);
        for h in held.get(i..).unwrap_or_default() {
            if h.start() >= end {
                break;
            }
            let mut at = h.start().max(start);
            while at < h.end().min(end) {
                if matches(at) {
                    if found.is_some() {
                        twice = true;
                        return;
                    }
                    found = Some(at);
                }
                let Some(next) = at.checked_add(PAGE_SIZE) else {
                    break;
                };
                at = next;
            }
        }
    });
    if twice { None } else { found }
}

/// Reads LUO and memblock above a tracker read to its end, then runs the
/// cross-layer check. `fdt_phys` is the root FDT's address when given;
/// with an FDT file, its page is looked up in the image.
#[allow(clippy::too_many_arguments)]
pub(super) fn read_stack(
    image: &MemImage,
    map: RamMap<'_>,
    fdt: &KhoFdt<'_>,
    fdt_bytes: &[u8],
    fdt_phys: Option<PhysAddr>,
    tracker: &dyn PreservedBlocks,
    tree_pages: &TrackerPages,
) -> Stack {
    let mut out = Stack {
        fdt_phys: fdt_phys.or_else(|| locate_fdt(image, tracker, fdt_bytes)),
        ..Stack::default()
    };
    let reader = PhysReader::new(image, map);
    let state = fdt.subnode(LUO_KHO_ENTRY_NAME).and_then(|n| {
        match LuoState::read(reader, Some(tracker), n.data(), n.size()) {
            Ok(s) => Some(s),
            Err(e) => {
                let at = e.phys().unwrap_or(n.data());
                out.errors.push(Finding::phys(at, e));
                None
            }
        }
    });
    out.luo = state.as_ref().map(|s| luo_info(tracker, s));
    let mut buf = [0u8; PAGE_BYTES];
    let memblock = fdt.subnode(MEMBLOCK_KHO_FDT).and_then(|n| {
        match MemblockFdt::read(reader, n.data(), n.size(), &mut buf) {
            Ok(m) => Some(m),
            Err(e) => {
                out.errors
                    .push(Finding::phys(n.data(), format!("memblock: {e}")));
                None
            }
        }
    });
    let mut check = CrossCheck::new(tracker)
        .tracker_pages(tree_pages)
        .kho_fdt(fdt, out.fdt_phys);
    if let Some(s) = &state {
        check = check.luo(s);
    }
    if let Some(m) = &memblock {
        check = check.memblock(m);
    }
    let (check, listed) = simulator_manifest(image, fdt, state.as_ref(), check, &mut out);
    if let Some(n) = listed {
        out.notes.push(format!(
            "subnode `{MANIFEST_NODE}`: {n} directly preserved blocks its manifest lists are referenced"
        ));
    }
    let report = check.run();
    for f in &report.findings {
        let at =
            finding_phys(f).or_else(|| finding_path(f).and_then(|p| path_phys(state.as_ref(), &p)));
        out.errors
            .push(Finding::phys(at.unwrap_or(PhysAddr::ZERO), f));
    }
    out.orphans = Some(OrphanInfo {
        blocks: report.orphans.blocks,
        bytes: report.orphans.bytes,
        first: report
            .orphans
            .first
            .iter()
            .map(|b| format!("{:#x}", b.phys().as_u64()))
            .collect(),
    });
    out
}

/// The simulator's own `kho-run` subnode (`kho run --dump-core`): the
/// manifest lists every workload folio; those no LUO file lists are claims
/// (preserved directly by the workload). A manifest that does not parse is
/// a finding. Returns how many blocks it claimed.
fn simulator_manifest<'t>(
    image: &MemImage,
    fdt: &KhoFdt<'_>,
    state: Option<&LuoState>,
    mut check: CrossCheck<'t>,
    out: &mut Stack,
) -> (CrossCheck<'t>, Option<u64>) {
    let Some(n) = fdt.subnode(MANIFEST_NODE) else {
        return (check, None);
    };
    let len = n
        .size()
        .and_then(|s| usize::try_from(s).ok())
        .unwrap_or(PAGE_BYTES);
    // Never more than the image holds: a blob size is the image's claim.
    let held =
        usize::try_from(image.present_pages().saturating_mul(PAGE_SIZE)).unwrap_or(usize::MAX);
    let manifest = if len > held {
        Err(format!(
            "blob-size {len} exceeds the {held} bytes the image holds"
        ))
    } else {
        image
            .read(n.data(), len)
            .ok_or_else(|| format!("{len} bytes are not in the image"))
            .and_then(|b| Manifest::from_bytes(&b).map_err(|e| e.to_string()))
    };
    let manifest = match manifest {
        Ok(m) => m,
        Err(e) => {
            out.errors.push(Finding::phys(
                n.data(),
                format!("subnode `{MANIFEST_NODE}`: manifest: {e}"),
            ));
            return (check, None);
        }
    };
    let in_luo: HashSet<PhysAddr> = state
        .iter()
        .flat_map(|s| s.files())
        .flat_map(|(_, f)| f.data.folios().iter().filter_map(|e| e.pfn))
        .map(|p| p.phys())
        .collect();
    let mut claimed = 0u64;
    for (i, e) in (0u64..).zip(&manifest.entries) {
        if !in_luo.contains(&e.block.phys()) {
            check = check.listed(MANIFEST_NODE, i, e.block);
            claimed += 1;
        }
    }
    (check, Some(claimed))
}

fn finding_phys(f: &kho::Finding) -> Option<PhysAddr> {
    use kho::Finding as F;
    match f {
        F::NotPreserved { claim } | F::OtherOrder { claim, .. } | F::NotHead { claim, .. } => {
            Some(claim.range.start())
        }
        F::Uncovered { page, .. } | F::TrackerPage { page, .. } => Some(*page),
        F::Overlap { second, .. } => Some(second.range.start()),
        _ => None,
    }
}

fn finding_path(f: &kho::Finding) -> Option<LuoPath> {
    use kho::Finding as F;
    match f {
        F::IndexBeyondSize { path, .. }
        | F::IndexMisaligned { path, .. }
        | F::IndexOverlap { path, .. }
        | F::VmTokenUnknown { path, .. }
        | F::VmTokenNotKvm { path, .. } => Some(*path),
        F::DuplicateToken { session, .. } => Some(*session),
        _ => None,
    }
}

/// The tree's lines below the subnodes: LUO sessions, files, folio
/// summaries and the first `folios` folios of each file.
pub fn luo_tree(luo: &LuoInfo, folios: usize) -> Vec<String> {
    let mut out = vec![format!(
        "  LUO {} (liveupdate {}), header {:#x}, {} sessions, {} FLBs",
        luo.compatible,
        luo.liveupdate_number,
        luo.header,
        luo.sessions.len(),
        luo.flbs.len()
    )];
    for s in &luo.sessions {
        out.push(format!("    session `{}`: {} files", s.name, s.files.len()));
        for f in &s.files {
            let size = f
                .size
                .map_or_else(String::new, |s| format!(", size {s:#x}"));
            let what = match (&f.record, &f.data) {
                (Some(r), _) => format!("record {r}"),
                (None, Some(d)) => format!("unknown handler, data {d}"),
                (None, None) => String::new(),
            };
            out.push(format!(
                "      file token {:#x} `{}` ({}): {what}{size}",
                f.token, f.compatible, f.kind
            ));
            if f.kind == "memfd" || f.kind == "guest_memfd" {
                let orders: Vec<String> = f
                    .orders
                    .iter()
                    .map(|o| format!("{}:{}", o.order, o.blocks))
                    .collect();
                let flags: Vec<String> = f
                    .flags
                    .iter()
                    .map(|c| format!("{:#x}:{}", c.flags, c.folios))
                    .collect();
                out.push(format!(
                    "        folios {}, {} bytes, orders {{{}}}, holes {}, flags {{{}}}",
                    f.folios,
                    f.bytes,
                    orders.join(" "),
                    f.holes,
                    flags.join(" ")
                ));
                for r in f.folio_list.iter().take(folios) {
                    let b = r.block.map_or_else(
                        || "not a preserved head".to_owned(),
                        |b| format!("{} order {}", b.phys(), b.order()),
                    );
                    out.push(format!(
                        "        folio {}: {b}, index {:#x}, flags {:#x}",
                        r.slot, r.index, r.flags
                    ));
                }
                if f.folio_list.len() > folios {
                    out.push(format!(
                        "        ... {} more folios",
                        f.folio_list.len() - folios
                    ));
                }
            }
        }
    }
    for f in &luo.flbs {
        out.push(format!(
            "    FLB `{}`: data {:#x}, {} files",
            f.name, f.data, f.count
        ));
    }
    out
}
