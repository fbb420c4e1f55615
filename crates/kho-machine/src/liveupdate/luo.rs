//! The scenario's Live Update Orchestrator sessions (`kho-v4` runs): the
//! old kernel preserves the memfd checkpoint and each VM guest as LUO files
//! the way Linux's handlers do, and the new kernel retrieves each file by
//! session name and token, restores its folios and verifies every byte.
//!
//! # What the old kernel writes
//!
//! | session        | token | handler (`compatible`) | what                                        |
//! |----------------|-------|------------------------|---------------------------------------------|
//! | `kho-run-memfd`| 1     | `memfd-v2`             | the checkpoint: every folio, dense in the file |
//! | `kho-run-vm0`  | 1     | `kvm_vm_luo_v1`        | guest 0's VM: type 0, no memory attributes  |
//! | `kho-run-vm0`  | 2     | `guest_memfd_luo_v1`   | guest 0's order-0 pages, `vm_token` 1       |
//! | `kho-run-vm1`  | 1, 2  | as `vm0`               | guest 1                                     |
//!
//! A guest's session exists when the guest has RAM. How each handler
//! writes, as Linux does it:
//!
//! - memfd (linux-mm/linux-mm@1c0b4a3f78b4 `mm/memfd_luo.c`,
//!   `memfd_luo_preserve_folios`): the folios are pinned in index order
//!   (`memfd_pin_folios` over the whole size, so a hole gets a folio and
//!   the file has none); each is preserved with `kho_preserve_folio`, its
//!   entry `{pfn, DIRTY | UPTODATE, index}` (Linux marks every folio both);
//!   the entry array is a `vcalloc` preserved with `kho_preserve_vmalloc`;
//!   the record (`kho_alloc_preserve`) holds `pos`, `size`, `nr_folios` and
//!   the array's descriptor. Our shmem-like file lays the checkpoint's
//!   folios out largest order first (allocation order within an order), so
//!   every index is aligned to its folio and the file is dense; `pos` is
//!   the size (the checkpoint was written sequentially), no seals, flags 0.
//! - guest_memfd (linux-mm/linux-mm@aecca8d1e091 `virt/kvm/guest_memfd_luo.c`):
//!   `kvm_gmem_luo_can_preserve` refuses a mapping with large folio
//!   support, so only order-0 folios are ever preserved: a guest's
//!   guest_memfd holds its order-0 pages (the workload's per-guest pages)
//!   at indices 0.., flag `UPTODATE`, file flags `MMAP | INIT_SHARED`;
//!   `vm_token` is the kvm file's token (`kvm_gmem_luo_freeze`). The
//!   guest's 1 GiB (hugetlb) and 2 MiB (THP) folios have no LUO handler in
//!   Linux: they stay preserved directly by the workload
//!   (`kho_preserve_folio`) and listed in the manifest only.
//! - kvm (linux-mm/linux-mm@bd5682197f96 `include/linux/kho/abi/kvm.h`):
//!   VM type 0; no memory attributes (guest_memfd preservation refuses VMs
//!   with private memory, `kvm_arch_has_private_mem`).
//! - LUO (linux-mm/linux-mm@fb2257f1798a `include/linux/kho/abi/luo.h`):
//!   `luo-v5` header, `liveupdate_num` 1, the session and file block
//!   chains, the FLB page; the root FDT's `LUO` subnode names the header.
//!
//! # Who restores what
//!
//! Every workload folio stays listed in the manifest with its checksum
//! (the oracle of what the old kernel wrote). A folio that a LUO file lists
//! is owned by the LUO path: [`restore_luo`] restores it with
//! `kho_restore_folio` and checks it against the manifest's checksum; the
//! manifest path skips it ([`LuoRestore::owns`]). Every other manifest
//! entry (guest huge folios, replayed blocks, forgotten pages) is owned by
//! the manifest path. The LUO structure pages (header, chains, FLB page,
//! records, array chunks and pages) are restored here with
//! `kho_restore_pages`, as `kho_restore_free` / `kho_restore_vmalloc` do.

use std::collections::{HashMap, HashSet};

use kho::{
    Block, FileState, FolioSpec, GUEST_MEMFD_LUO_FH_COMPATIBLE, GUEST_MEMFD_LUO_FLAG_INIT_SHARED,
    GUEST_MEMFD_LUO_FLAG_MMAP, GUEST_MEMFD_LUO_FOLIO_UPTODATE, GuestMemfdSpec,
    KVM_LUO_FH_COMPATIBLE, KvmSpec, LUO_KHO_ENTRY_NAME, LuoBuilder, LuoCompat, LuoState,
    MEMFD_LUO_FOLIO_DIRTY, MEMFD_LUO_FOLIO_UPTODATE, MEMFD_V2_COMPATIBLE, MemfdSpec, Order,
    PAGE_SIZE, PageAlloc, PageMap, PageWriter, PhysAddr, PhysReader, RadixTree, RamMap,
    RecordWritten, WriteError, write_guest_memfd, write_kvm, write_memfd,
};
use serde::{Deserialize, Serialize};

use crate::arena::PhysMem;
use crate::buddy::Buddy;
use crate::kho::{KhoError, KhoIn, kho_restore_folio, kho_restore_pages};
use crate::manifest::{Manifest, ManifestEntry, block_checksum};

/// The checkpoint's session.
pub(crate) const MEMFD_SESSION: &str = "kho-run-memfd";
/// The checkpoint memfd's token.
pub(crate) const MEMFD_TOKEN: u64 = 1;
/// Guest `i`'s session is this prefix and `i`.
pub(crate) const VM_SESSION_PREFIX: &str = "kho-run-vm";
/// A VM session's kvm file token.
pub(crate) const KVM_TOKEN: u64 = 1;
/// A VM session's guest_memfd token.
pub(crate) const GUEST_MEMFD_TOKEN: u64 = 2;
/// `struct luo_ser.liveupdate_num` of the first live update: a cold-booted
/// kernel's count is 0 and the outgoing header carries it plus one
/// (torvalds/linux@0153094d03df `kernel/liveupdate/luo_core.c`:
/// `luo_fdt_setup` writes `luo_global.liveupdate_num + 1`, which
/// `luo_early_startup` read from the incoming handover).
pub(crate) const LIVEUPDATE_NUM: u64 = 1;

/// What the old kernel hands to LUO: the files' folios, already filled and
/// listed in the manifest, not yet preserved.
#[derive(Debug, Clone, Default)]
pub(crate) struct LuoFiles<'a> {
    /// The checkpoint's folios, in allocation order (empty: no memfd).
    pub memfd: &'a [Block],
    /// Each guest's number and order-0 pages (guest 0 first).
    pub guests: &'a [(usize, Vec<Block>)],
}

/// What [`preserve_sessions`] wrote.
#[derive(Debug, Clone, Default)]
pub(crate) struct LuoWrittenAll {
    /// The `LUO` subnode: the header and its size.
    pub header: PhysAddr,
    /// `blob-size`.
    pub size: u64,
    /// Every block preserved: folios, records, arrays, chains, header.
    pub preserved: Vec<Block>,
    /// The pages the writer allocated (all but the folios), which the
    /// tracker's page allocator recorded as its own.
    pub pages: Vec<PhysAddr>,
    /// The files, in session and chain order.
    pub files: Vec<LuoFileWritten>,
}

/// One file the old kernel preserved through LUO, as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LuoFileWritten {
    /// Its session's name.
    pub session: String,
    /// Its token.
    pub token: u64,
    /// Its handler.
    pub compatible: &'static str,
    /// The handler record's address (the file's data handle).
    pub record: PhysAddr,
    /// The file size the record holds (`None`: kvm).
    pub size: Option<u64>,
    /// Its folios, in array order.
    pub folios: Vec<FolioSpec>,
}

fn record_blocks(r: &RecordWritten, out: &mut LuoWrittenAll) {
    out.pages.push(r.ser);
    out.pages.extend(&r.array.chunks);
    // A `write_vmalloc_bytes` array's pages are the writer's; a folio
    // array's entries are too (the folios are listed separately).
    out.pages.extend(r.array.blocks.iter().map(|b| b.phys()));
}

/// The memfd's folios in file order with their page indices, and the file
/// size: largest order first, allocation order within an order, indices
/// consecutive.
fn memfd_layout(folios: &[Block]) -> (Vec<FolioSpec>, u64) {
    let mut sorted = folios.to_vec();
    sorted.sort_by_key(|b| std::cmp::Reverse(b.order()));
    let mut index = 0u64;
    let specs = sorted
        .into_iter()
        .map(|block| {
            let s = FolioSpec {
                block,
                index,
                flags: MEMFD_LUO_FOLIO_DIRTY | MEMFD_LUO_FOLIO_UPTODATE,
            };
            index = index.saturating_add(block.order().pages());
            s
        })
        .collect();
    (specs, index.saturating_mul(PAGE_SIZE))
}

/// The old kernel's LUO: preserves `files` through the handlers and writes
/// the sessions and the header into pages preserved in `tree` (see the
/// module doc), the header counting `liveupdate_num` live updates. Call
/// after the workloads, before the root FDT.
pub(crate) fn preserve_sessions<M: PageAlloc + PageMap>(
    tree: &RadixTree<M>,
    files: &LuoFiles<'_>,
    liveupdate_num: u64,
) -> Result<LuoWrittenAll, WriteError> {
    let w = PageWriter::new(tree);
    let mut out = LuoWrittenAll::default();
    let mut luo = LuoBuilder::new(LuoCompat::V5, liveupdate_num);
    if !files.memfd.is_empty() {
        let (folios, size) = memfd_layout(files.memfd);
        let rec = write_memfd(&w, &MemfdSpec::v2(size, size, 0, &folios))?;
        record_blocks(&rec, &mut out);
        out.preserved.extend(folios.iter().map(|f| f.block));
        luo.session(MEMFD_SESSION)
            .file(MEMFD_V2_COMPATIBLE, rec.ser.as_u64(), MEMFD_TOKEN);
        out.files.push(LuoFileWritten {
            session: MEMFD_SESSION.to_owned(),
            token: MEMFD_TOKEN,
            compatible: MEMFD_V2_COMPATIBLE,
            record: rec.ser,
            size: Some(size),
            folios,
        });
    }
    for (i, pages) in files.guests {
        let vm = write_kvm(
            &w,
            &KvmSpec {
                vm_type: 0,
                mem_attrs: &[],
            },
        )?;
        record_blocks(&vm, &mut out);
        let folios: Vec<FolioSpec> = (0u64..)
            .zip(pages)
            .map(|(index, &block)| FolioSpec {
                block,
                index,
                flags: GUEST_MEMFD_LUO_FOLIO_UPTODATE,
            })
            .collect();
        let size = (folios.len() as u64).saturating_mul(PAGE_SIZE);
        let gmem = write_guest_memfd(
            &w,
            &GuestMemfdSpec {
                size,
                flags: GUEST_MEMFD_LUO_FLAG_MMAP | GUEST_MEMFD_LUO_FLAG_INIT_SHARED,
                vm_token: KVM_TOKEN,
                folios: &folios,
            },
        )?;
        record_blocks(&gmem, &mut out);
        out.preserved.extend(folios.iter().map(|f| f.block));
        let session = format!("{VM_SESSION_PREFIX}{i}");
        out.files.push(LuoFileWritten {
            session: session.clone(),
            token: KVM_TOKEN,
            compatible: KVM_LUO_FH_COMPATIBLE,
            record: vm.ser,
            size: None,
            folios: Vec::new(),
        });
        out.files.push(LuoFileWritten {
            session: session.clone(),
            token: GUEST_MEMFD_TOKEN,
            compatible: GUEST_MEMFD_LUO_FH_COMPATIBLE,
            record: gmem.ser,
            size: Some(size),
            folios,
        });
        luo.session(&session)
            .file(KVM_LUO_FH_COMPATIBLE, vm.ser.as_u64(), KVM_TOKEN)
            .file(
                GUEST_MEMFD_LUO_FH_COMPATIBLE,
                gmem.ser.as_u64(),
                GUEST_MEMFD_TOKEN,
            );
    }
    let written = luo.write(&w)?;
    out.pages.push(written.header);
    out.pages.extend(&written.session_blocks);
    out.pages.extend(written.file_blocks.iter().flatten());
    out.pages.push(written.flb_header);
    out.header = written.header;
    out.size = written.size;
    for &p in &out.pages {
        if let Ok(b) = Block::new(p, Order::ZERO) {
            out.preserved.push(b);
        }
    }
    Ok(out)
}

/// One LUO file as the new kernel retrieved it: a row of `kho run`'s
/// report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LuoFileReport {
    /// Its session's name.
    pub session: String,
    /// Its token.
    pub token: u64,
    /// Its handler.
    pub compatible: String,
    /// Folios it lists (holes left out).
    pub folios: u64,
    /// Bytes of its folios restored whose contents match the manifest.
    pub bytes_verified: u64,
    /// Bytes of its folios that could not be restored or do not match.
    pub bytes_lost: u64,
}

/// What [`restore_luo`] did.
#[derive(Debug, Clone, Default)]
pub(crate) struct LuoRestore {
    /// One row per file, in session and chain order.
    pub files: Vec<LuoFileReport>,
    /// Bytes verified: folios and structure pages.
    pub verified: u64,
    /// Bytes lost.
    pub lost: u64,
    /// Bytes of listed folios that are no preserved head at all (lost, and
    /// not in what the walk counted: as the manifest path counts them).
    pub unpreserved: u64,
    /// Why the LUO handover could not be read (`None`: read, or absent).
    pub error: Option<String>,
    /// Structure pages restored (header, chains, FLB page, records,
    /// array chunks and pages).
    pub structure_pages: u64,
    /// The incoming header's `liveupdate_num`.
    pub liveupdate_num: Option<u64>,
    /// Each retrieved file with the folios restored and verified, in
    /// session and chain order: what a next generation preserves again.
    pub kept: Vec<KeptFile>,
    owned: HashSet<PhysAddr>,
}

/// A file as the new kernel retrieved it: its verified folios, in array
/// order, each with the manifest's checksum.
#[derive(Debug, Clone)]
pub(crate) struct KeptFile {
    /// Its session's name.
    pub session: String,
    /// Its handler.
    pub compatible: String,
    /// The folios restored whose contents match the manifest.
    pub folios: Vec<ManifestEntry>,
}

/// The retrieved files' verified folios, to preserve again
/// ([`LuoRestore::files_again`]).
#[derive(Debug, Clone, Default)]
pub(crate) struct FilesAgain {
    /// The memfd checkpoint's folios, in array order.
    pub memfd: Vec<Block>,
    /// Each guest's number and guest_memfd pages.
    pub guests: Vec<(usize, Vec<Block>)>,
    /// The manifest entries of all of them.
    pub entries: Vec<ManifestEntry>,
}

impl FilesAgain {
    /// As [`preserve_sessions`] takes them.
    pub(crate) fn files(&self) -> LuoFiles<'_> {
        LuoFiles {
            memfd: &self.memfd,
            guests: &self.guests,
        }
    }
}

impl LuoRestore {
    /// The files to preserve again: the memfd checkpoint's folios and each
    /// guest's guest_memfd pages (guest `i` of session `kho-run-vm<i>`),
    /// with their manifest entries. A kvm file has no folios: its session
    /// is written again with its guest_memfd.
    pub(crate) fn files_again(&self) -> FilesAgain {
        let mut out = FilesAgain::default();
        for f in &self.kept {
            let blocks: Vec<Block> = f.folios.iter().map(|e| e.block).collect();
            if f.session == MEMFD_SESSION && f.compatible == MEMFD_V2_COMPATIBLE {
                out.memfd.extend(blocks);
            } else if f.compatible == GUEST_MEMFD_LUO_FH_COMPATIBLE
                && let Some(i) = f
                    .session
                    .strip_prefix(VM_SESSION_PREFIX)
                    .and_then(|n| n.parse::<usize>().ok())
            {
                out.guests.push((i, blocks));
            } else {
                continue;
            }
            out.entries.extend(f.folios.iter().copied());
        }
        out
    }
}

impl LuoRestore {
    /// Whether the LUO path owns (restored, or tried to) the folio at
    /// `phys`: the manifest path must leave it alone.
    pub(crate) fn owns(&self, phys: PhysAddr) -> bool {
        self.owned.contains(&phys)
    }
}

fn restore_page(buddy: &Buddy<'_>, phys: PhysAddr, out: &mut LuoRestore) {
    match kho_restore_pages(buddy, phys, 1) {
        Ok(_) => {
            out.verified = out.verified.saturating_add(PAGE_SIZE);
            out.structure_pages = out.structure_pages.saturating_add(1);
        }
        Err(_) => out.lost = out.lost.saturating_add(PAGE_SIZE),
    }
}

/// The new kernel's LUO: reads the `LUO` subnode's handover, retrieves
/// every file by session name and token, restores its folios with
/// `kho_restore_folio` and checks each against `manifest`'s checksum, and
/// restores the structure pages. No `LUO` subnode: nothing.
pub(crate) fn restore_luo(
    mem: &PhysMem,
    buddy: &Buddy<'_>,
    k: &KhoIn,
    manifest: &Manifest,
) -> LuoRestore {
    let mut out = LuoRestore::default();
    let Some((blob, size)) = k.subnode(LUO_KHO_ENTRY_NAME) else {
        return out;
    };
    let mut forbidden = k.scratch.clone();
    forbidden.sort();
    let ram = mem.layout().ram();
    let map = match RamMap::new(ram, &forbidden) {
        Ok(m) => m,
        Err(e) => {
            out.error = Some(format!("LUO: RAM map: {e}"));
            return out;
        }
    };
    let state = match LuoState::read(PhysReader::new(mem, map), None, blob, size) {
        Ok(s) => s,
        Err(e) => {
            out.error = Some(format!("LUO at {blob}: {e}"));
            return out;
        }
    };
    out.liveupdate_num = Some(state.header.liveupdate_num);
    // The structure pages.
    let mut pages = vec![state.header.blob];
    pages.extend(&state.session_blocks);
    pages.extend(state.flb_header);
    for s in &state.sessions {
        pages.extend(&s.file_blocks);
        for f in &s.files {
            pages.extend(f.data.record());
            if let Some(a) = f.data.area() {
                pages.extend(&a.chunks);
                pages.extend(a.blocks.iter().map(|b| b.phys()));
            }
        }
    }
    for p in pages {
        restore_page(buddy, p, &mut out);
    }
    let listed: HashMap<PhysAddr, ManifestEntry> = manifest
        .entries
        .iter()
        .map(|e| (e.block.phys(), *e))
        .collect();
    for s in &state.sessions {
        let name = s.session.name.to_string();
        for f in &s.files {
            // Userspace's retrieve: the file of this session and token.
            let Some(file) = retrieve(&state, &name, f.file.token) else {
                continue;
            };
            let mut kept = KeptFile {
                session: name.clone(),
                compatible: file.file.compatible.to_string(),
                folios: Vec::new(),
            };
            let mut row = LuoFileReport {
                session: name.clone(),
                token: file.file.token,
                compatible: file.file.compatible.to_string(),
                folios: 0,
                bytes_verified: 0,
                bytes_lost: 0,
            };
            for e in file.data.folios() {
                let Some(pfn) = e.pfn else { continue };
                row.folios += 1;
                let phys = pfn.phys();
                out.owned.insert(phys);
                let expected = listed.get(&phys).copied();
                let bytes = expected.map_or(PAGE_SIZE, |e| e.block.size());
                // Restored at the order the manifest lists, with the
                // contents the old kernel wrote.
                let restored = kho_restore_folio(buddy, phys);
                if matches!(restored, Err(KhoError::BadMagic { .. })) {
                    out.unpreserved = out.unpreserved.saturating_add(bytes);
                }
                let ok = restored.is_ok_and(|(_, order)| {
                    expected.is_some_and(|e| {
                        e.block.order() == order
                            && block_checksum(mem, e.block).is_ok_and(|got| got == e.checksum)
                    })
                });
                if ok {
                    kept.folios.extend(expected);
                    row.bytes_verified = row.bytes_verified.saturating_add(bytes);
                } else {
                    row.bytes_lost = row.bytes_lost.saturating_add(bytes);
                }
            }
            out.verified = out.verified.saturating_add(row.bytes_verified);
            out.lost = out.lost.saturating_add(row.bytes_lost);
            out.files.push(row);
            out.kept.push(kept);
        }
    }
    out
}

/// The file `token` of the session `name` (`liveupdate_get_file_incoming`
/// after `LIVEUPDATE_IOCTL_RETRIEVE_SESSION`).
fn retrieve<'s>(state: &'s LuoState, name: &str, token: u64) -> Option<&'s FileState> {
    state
        .sessions
        .iter()
        .find(|s| s.session.name.to_str() == Some(name))?
        .files
        .iter()
        .find(|f| f.file.token == token)
}

#[cfg(test)]
mod tests;
