//! A LUO handover written by the writers on a [`Machine`], shared by the LUO
//! and cross-check tests: two sessions, every handler kind, holes, a
//! large folio, an FLB.
//!
//! | session | file | handler              | token | content                                   |
//! |---------|------|----------------------|-------|-------------------------------------------|
//! | `vm0`   | 0    | `kvm_vm_luo_v1`      | 1     | type 2, two memory attributes            |
//! | `vm0`   | 1    | `guest_memfd_luo_v1` | 2     | 16 KiB, `vm_token` 1, folios at pages 56, 57 |
//! | `ckpt`  | 0    | `memfd-v2`           | 7     | 5 pages, seals 0x5: page 48 (index 0), order 2 at page 52 (index 4), page 49 (index 1) |
//! | `ckpt`  | 1    | `vfio-v1` (unknown)  | 9     | raw data `0x77000`                        |
//!
//! FLB `iommu-v1`, data `0x5000`, count 2. A root FDT (`kho-v4;radix-v1;
//! vmalloc-v1`) names `LUO` and `memblock`, whose blob holds one
//! `reserve_mem` region, pages 60 and 61. Pages 48 .. 63 are claimed before
//! the tree is built, so the allocator never hands them out.

use alloc::vec::Vec;

use crate::addr::{Block, Order, PhysAddr};
use crate::fdt::{KhoCompat, KhoFdtBuilder};
use crate::luo::kvm::{GUEST_MEMFD_LUO_FH_COMPATIBLE, KVM_LUO_FH_COMPATIBLE, KvmLuoMemAttr};
use crate::luo::memfd::{MEMFD_LUO_FOLIO_DIRTY, MEMFD_LUO_FOLIO_UPTODATE};
use crate::luo::state::LuoState;
use crate::luo::writer::{
    FolioSpec, GuestMemfdSpec, KvmSpec, LuoBuilder, LuoWritten, MemfdSpec, RecordWritten,
    write_guest_memfd, write_kvm, write_memfd,
};
use crate::luo::{LuoCompat, LuoError};
use crate::mem::PageMap;
use crate::phys::PageWriter;
use crate::radix::RadixTree;
use crate::testing::abi_fuzz::Machine;
use crate::tracker::{PreservedLookup, PreservedSet, TrackerPages};
use crate::walk::NodeBudget;

/// Arena page `i`.
pub(crate) fn page(i: u64) -> PhysAddr {
    Machine::page(i)
}

/// An order-`o` block at arena page `i`.
pub(crate) fn block(i: u64, o: u8) -> Block {
    Block::new(page(i), Order::new(o)).unwrap()
}

/// What the fixture wrote.
#[derive(Debug)]
pub(crate) struct Written {
    pub root: PhysAddr,
    pub luo: LuoWritten,
    pub kvm: RecordWritten,
    pub gmem: RecordWritten,
    pub memfd: RecordWritten,
    pub memfd_folios: Vec<FolioSpec>,
    pub gmem_folios: Vec<FolioSpec>,
    pub fdt_phys: PhysAddr,
    pub fdt: Vec<u8>,
    pub memblock: (PhysAddr, u64),
}

/// The machine and what was written, with the LUO header `compat`.
pub(crate) fn handover(compat: LuoCompat) -> (Machine, Written) {
    let m = Machine::new();
    for i in 48..64 {
        m.arena.claim(page(i)).unwrap();
    }
    let written = write(&m, compat);
    (m, written)
}

fn write(m: &Machine, compat: LuoCompat) -> Written {
    let tree = RadixTree::new(&m.arena).unwrap();
    let w = PageWriter::new(&tree);
    let attrs = [KvmLuoMemAttr::new(0x100, 8), KvmLuoMemAttr::new(0x200, 8)];
    let kvm = write_kvm(
        &w,
        &KvmSpec {
            vm_type: 2,
            mem_attrs: &attrs,
        },
    )
    .unwrap();
    let gmem_folios = alloc::vec![
        FolioSpec {
            block: block(56, 0),
            index: 0,
            flags: 1
        },
        FolioSpec {
            block: block(57, 0),
            index: 3,
            flags: 0
        },
    ];
    let gmem = write_guest_memfd(
        &w,
        &GuestMemfdSpec {
            size: 4 * 4096,
            flags: 3,
            vm_token: 1,
            folios: &gmem_folios,
        },
    )
    .unwrap();
    let f = MEMFD_LUO_FOLIO_DIRTY | MEMFD_LUO_FOLIO_UPTODATE;
    let memfd_folios = alloc::vec![
        FolioSpec {
            block: block(48, 0),
            index: 0,
            flags: f
        },
        FolioSpec {
            block: block(52, 2),
            index: 4,
            flags: f
        },
        FolioSpec {
            block: block(49, 0),
            index: 1,
            flags: f
        },
    ];
    let memfd = write_memfd(&w, &MemfdSpec::v2(123, 5 * 4096 + 17, 0x5, &memfd_folios)).unwrap();
    let mut b = LuoBuilder::new(compat, 42);
    b.session("vm0")
        .file(KVM_LUO_FH_COMPATIBLE, kvm.ser.as_u64(), 1)
        .file(GUEST_MEMFD_LUO_FH_COMPATIBLE, gmem.ser.as_u64(), 2);
    b.session("ckpt")
        .file("memfd-v2", memfd.ser.as_u64(), 7)
        .file("vfio-v1", 0x77000, 9);
    b.flb("iommu-v1", 0x5000, 2);
    let luo = b.write(&w).unwrap();
    let memblock = crate::memblock::write_memblock(&w, &[("trace", page(60), 2 * 4096)]).unwrap();
    let root = tree.root();
    let mut fdt = KhoFdtBuilder::new(root).compat(KhoCompat::V4_RADIX_VMALLOC);
    fdt.add_subnode(crate::luo::LUO_KHO_ENTRY_NAME, luo.header, luo.size);
    fdt.add_subnode(crate::memblock::MEMBLOCK_KHO_FDT, memblock.0, memblock.1);
    let fdt = fdt.build().unwrap();
    let fdt_phys = w.write_preserved("root FDT", &fdt).unwrap();
    Written {
        root,
        luo,
        kvm,
        gmem,
        memfd,
        memfd_folios,
        gmem_folios,
        fdt_phys,
        fdt,
        memblock,
    }
}

/// The tracker of the machine's tree.
pub(crate) fn tracker(m: &Machine, w: &Written) -> (PreservedSet, TrackerPages) {
    PreservedSet::read_tree(&m.arena, m.ram(), w.root, NodeBudget::new(64)).unwrap()
}

/// Reads the handover with the tracker.
pub(crate) fn read(m: &Machine, w: &Written) -> Result<LuoState, LuoError> {
    let (set, _) = tracker(m, w);
    LuoState::read(
        m.reader(),
        Some(&set as &dyn PreservedLookup),
        w.luo.header,
        Some(w.luo.size),
    )
}

/// Stores `bytes` at byte `offset` of the page at `phys`.
pub(crate) fn poke(m: &Machine, phys: PhysAddr, offset: usize, bytes: &[u8]) {
    crate::phys::copy_in(m.arena.page(phys).unwrap(), offset, bytes);
}
