//! LUO tests: golden bytes built by hand from the header layouts, a
//! handover built by hand in memory and read back, the writer's bytes, round
//! trips, and one test per error of the LUO and handler readers.

extern crate std;

use alloc::vec::Vec;

use zerocopy::{FromBytes, IntoBytes};

use super::kvm::{GuestMemfdLuoSer, KvmLuoMemAttr, KvmLuoSer};
use super::memfd::{MemfdLuoFolioSer, MemfdLuoSer, MemfdLuoSerV1};
use super::state::{FileData, LuoState};
use super::*;
use crate::addr::{Block, Order, Pfn};
use crate::testing::abi_fuzz::Machine;
use crate::testing::luo_fixture::{Written, block, handover, page, poke, read, tracker};
use crate::tracker::{PreservedLookup, PreservedSet};
use crate::vmalloc::{KHO_VMALLOC_ALLOC, KhoVmalloc, VmallocError};

fn le(v: u64) -> [u8; 8] {
    v.to_le_bytes()
}

fn field<const N: usize>(s: &[u8]) -> [u8; N] {
    let mut f = [0u8; N];
    f[..s.len()].copy_from_slice(s);
    f
}

// ---- golden bytes -----------------------------------------------------------

#[test]
fn luo_ser_golden_bytes_for_both_spellings() {
    let tail = LuoSerTail::new(42, PhysAddr::new(0x10_0000), PhysAddr::new(0x20_0000));
    let v5 = LuoSerV5 {
        compatible: *b"luo-v5\0\0",
        tail,
    };
    let mut expected = b"luo-v5\0\0".to_vec();
    expected.extend_from_slice(&le(42));
    expected.extend_from_slice(&le(0x10_0000));
    expected.extend_from_slice(&le(0x20_0000));
    assert_eq!(v5.as_bytes(), expected.as_slice());
    assert_eq!(expected.len(), LuoCompat::V5.header_size());

    let vb = LuoSerV5Block {
        compatible: *b"luo-v5;block-v1\0",
        tail,
    };
    let mut expected = b"luo-v5;block-v1\0".to_vec();
    expected.extend_from_slice(&le(42));
    expected.extend_from_slice(&le(0x10_0000));
    expected.extend_from_slice(&le(0x20_0000));
    assert_eq!(vb.as_bytes(), expected.as_slice());
    assert_eq!(expected.len(), 40);
    assert_eq!(LuoCompat::V5Block.compat_len(), 16);
}

#[test]
fn session_file_and_flb_golden_bytes() {
    let s = LuoSessionSer::new("vm0", PhysAddr::new(0xabc000), 3).unwrap();
    let mut expected = field::<64>(b"vm0").to_vec();
    expected.extend_from_slice(&le(0xabc000));
    expected.extend_from_slice(&le(3));
    assert_eq!(s.as_bytes(), expected.as_slice());
    assert_eq!(LuoSessionSer::read_from_bytes(&expected).unwrap(), s);
    assert!(LuoSessionSer::new(&"x".repeat(64), PhysAddr::ZERO, 0).is_none());
    assert!(LuoSessionSer::new(&"x".repeat(63), PhysAddr::ZERO, 0).is_some());

    let f = LuoFileSer::new("memfd-v2;vmalloc-v1", 0x1234_5000, 0xdead).unwrap();
    let mut expected = field::<48>(b"memfd-v2;vmalloc-v1").to_vec();
    expected.extend_from_slice(&le(0x1234_5000));
    expected.extend_from_slice(&le(0xdead));
    assert_eq!(f.as_bytes(), expected.as_slice());

    let h = LuoFlbHeaderSer::new(1, 2);
    assert_eq!(h.as_bytes(), [le(1), le(2)].concat().as_slice());
    let e = LuoFlbSer::new("iommu-v1", 0x5000, 7).unwrap();
    let mut expected = field::<48>(b"iommu-v1").to_vec();
    expected.extend_from_slice(&le(0x5000));
    expected.extend_from_slice(&le(7));
    assert_eq!(e.as_bytes(), expected.as_slice());
}

#[test]
fn memfd_records_and_folio_entry_golden_bytes() {
    let desc = KhoVmalloc::new(PhysAddr::new(0x7000), 2, KHO_VMALLOC_ALLOC, 0);
    let mut d = Vec::new();
    d.extend_from_slice(&le(0x7000));
    d.extend_from_slice(&2u32.to_le_bytes());
    d.extend_from_slice(&1u16.to_le_bytes());
    d.extend_from_slice(&0u16.to_le_bytes());

    let v2 = MemfdLuoSer::new(10, 20, 0x5, 0, 3, desc);
    let mut expected = [le(10), le(20)].concat();
    expected.extend_from_slice(&0x5u32.to_le_bytes());
    expected.extend_from_slice(&0u32.to_le_bytes());
    expected.extend_from_slice(&le(3));
    expected.extend_from_slice(&d);
    assert_eq!(v2.as_bytes(), expected.as_slice());
    // The seals:8 draft of memfd-v2 has the same bytes: seals in the low
    // byte of the third word, the rest zero.
    assert_eq!(expected[16], 0x5);
    assert!(expected[17..24].iter().all(|&b| b == 0));

    let v1 = MemfdLuoSerV1::new(10, 20, 3, desc);
    let mut expected = [le(10), le(20), le(3)].concat();
    expected.extend_from_slice(&d);
    assert_eq!(v1.as_bytes(), expected.as_slice());

    // pfn:52 in the low bits, flags:12 above, then the index.
    let e = MemfdLuoFolioSer::new(0x12345, 0x3, 77).unwrap();
    let mut expected = le(0x12345 | (0x3 << 52)).to_vec();
    expected.extend_from_slice(&le(77));
    assert_eq!(e.as_bytes(), expected.as_slice());
    assert_eq!((e.pfn(), e.flags(), e.index()), (0x12345, 3, 77));
    let top = MemfdLuoFolioSer::read_from_bytes(&[le(u64::MAX), le(0)].concat()).unwrap();
    assert_eq!((top.pfn(), top.flags()), ((1 << 52) - 1, 0xfff));
    assert!(MemfdLuoFolioSer::new(1 << 52, 0, 0).is_none());
    assert!(MemfdLuoFolioSer::new(1, 0x1000, 0).is_none());
}

#[test]
fn guest_memfd_and_kvm_golden_bytes() {
    let desc = KhoVmalloc::new(PhysAddr::new(0x9000), 1, KHO_VMALLOC_ALLOC, 0);
    let g = GuestMemfdLuoSer::new(0x4000, 3, 2, 1, desc);
    let mut expected = [le(0x4000), le(3), le(2), le(1)].concat();
    expected.extend_from_slice(desc.as_bytes());
    assert_eq!(g.as_bytes(), expected.as_slice());
    assert_eq!(expected.len(), 48);

    let k = KvmLuoSer::new(2, 5, desc);
    let mut expected = [le(2), le(5)].concat();
    expected.extend_from_slice(desc.as_bytes());
    assert_eq!(k.as_bytes(), expected.as_slice());
    assert_eq!(
        KvmLuoMemAttr::new(0x100, 8).as_bytes(),
        [le(0x100), le(8)].concat().as_slice()
    );
}

// ---- a handover built by hand -----------------------------------------------

#[test]
fn a_hand_built_handover_reads() {
    // Page 1 header, 2 session block, 3 file block, 4 FLB page, 5 memfd
    // record, 6 its chunk, 7 its folio array, 8 and 9 the folios.
    let m = Machine::new();
    let mut hdr = b"luo-v5;block-v1\0".to_vec();
    hdr.extend_from_slice(&le(3));
    hdr.extend_from_slice(&le(page(2).as_u64()));
    hdr.extend_from_slice(&le(page(4).as_u64()));
    poke(&m, page(1), 0, &hdr);
    let mut sess = [le(0), le(1)].concat();
    sess.extend_from_slice(&field::<64>(b"ckpt"));
    sess.extend_from_slice(&le(page(3).as_u64()));
    sess.extend_from_slice(&le(1));
    poke(&m, page(2), 0, &sess);
    let mut file = [le(0), le(1)].concat();
    file.extend_from_slice(&field::<48>(b"memfd-v1"));
    file.extend_from_slice(&le(page(5).as_u64()));
    file.extend_from_slice(&le(0x77));
    poke(&m, page(3), 0, &file);
    poke(&m, page(4), 0, &[le(1), le(0)].concat());
    let mut rec = [le(0), le(8192), le(2)].concat();
    rec.extend_from_slice(&le(page(6).as_u64()));
    rec.extend_from_slice(&1u32.to_le_bytes());
    rec.extend_from_slice(&1u16.to_le_bytes());
    rec.extend_from_slice(&0u16.to_le_bytes());
    poke(&m, page(5), 0, &rec);
    poke(&m, page(6), 0, &[le(0), le(page(7).as_u64())].concat());
    let e0 = le(page(8).pfn().as_u64() | (2 << 52));
    let e1 = le(page(9).pfn().as_u64());
    poke(&m, page(7), 0, &[e0, le(0), e1, le(1)].concat());
    let set = PreservedSet::from_blocks((1..10).map(|i| block(i, 0))).unwrap();
    let s = LuoState::read(m.reader(), Some(&set), page(1), Some(40)).unwrap();
    assert_eq!(s.header.compat, LuoCompat::V5Block);
    assert_eq!(s.header.liveupdate_num, 3);
    assert_eq!(s.session_blocks, [page(2)]);
    assert_eq!(s.flb_header, Some(page(4)));
    assert!(s.flbs.is_empty());
    assert_eq!(s.sessions.len(), 1);
    let sess = &s.sessions[0];
    assert_eq!(sess.session.name.to_str(), Some("ckpt"));
    assert_eq!(sess.file_blocks, [page(3)]);
    let f = &sess.files[0];
    assert_eq!(f.file.token, 0x77);
    assert_eq!(f.file.kind(), HandlerKind::Memfd(MemfdVersion::V1));
    let FileData::Memfd { rec, folios, area } = &f.data else {
        panic!("{:?}", f.data)
    };
    assert_eq!((rec.size, rec.nr_folios, rec.seals), (8192, 2, 0));
    assert_eq!(area.chunks, [page(6)]);
    assert_eq!(area.blocks, [block(7, 0)]);
    assert_eq!(folios[0].pfn, Some(page(8).pfn()));
    assert_eq!((folios[0].flags, folios[0].index), (2, 0));
    assert_eq!((folios[1].pfn, folios[1].index), (Some(page(9).pfn()), 1));
}

// ---- the writer's bytes and round trips --------------------------------------

#[test]
fn the_writer_writes_the_bytes_of_the_layout() {
    let (m, w) = handover(LuoCompat::V5);
    let r = m.reader();
    let mut hdr = [0u8; 32];
    r.read_bytes(w.luo.header, &mut hdr).unwrap();
    let mut expected = b"luo-v5\0\0".to_vec();
    expected.extend_from_slice(&le(42));
    expected.extend_from_slice(&le(w.luo.session_blocks[0].as_u64()));
    expected.extend_from_slice(&le(w.luo.flb_header.as_u64()));
    assert_eq!(hdr.as_slice(), expected.as_slice());
    assert_eq!(w.luo.size, 32);
    // The session block: header {0, 2}, then "vm0" and "ckpt".
    let sb = w.luo.session_blocks[0];
    let mut b = [0u8; 16 + 160];
    r.read_bytes(sb, &mut b).unwrap();
    let mut expected = [le(0), le(2)].concat();
    expected.extend_from_slice(&field::<64>(b"vm0"));
    expected.extend_from_slice(&le(w.luo.file_blocks[0][0].as_u64()));
    expected.extend_from_slice(&le(2));
    expected.extend_from_slice(&field::<64>(b"ckpt"));
    expected.extend_from_slice(&le(w.luo.file_blocks[1][0].as_u64()));
    expected.extend_from_slice(&le(2));
    assert_eq!(b.as_slice(), expected.as_slice());
    // The FLB page.
    let mut f = [0u8; 80];
    r.read_bytes(w.luo.flb_header, &mut f).unwrap();
    let mut expected = [le(1), le(1)].concat();
    expected.extend_from_slice(&field::<48>(b"iommu-v1"));
    expected.extend_from_slice(&le(0x5000));
    expected.extend_from_slice(&le(2));
    assert_eq!(f.as_slice(), expected.as_slice());
    // The memfd record.
    let mut rec = [0u8; 48];
    r.read_bytes(w.memfd.ser, &mut rec).unwrap();
    let mut expected = [le(123), le(5 * 4096 + 17)].concat();
    expected.extend_from_slice(&5u32.to_le_bytes());
    expected.extend_from_slice(&0u32.to_le_bytes());
    expected.extend_from_slice(&le(3));
    expected.extend_from_slice(w.memfd.array.desc.as_bytes());
    assert_eq!(rec.as_slice(), expected.as_slice());
    assert_eq!(w.memfd.array.desc.total_pages(), 1);
}

#[test]
fn writer_to_reader_round_trip_for_both_header_spellings() {
    for compat in [LuoCompat::V5, LuoCompat::V5Block] {
        let (m, w) = handover(compat);
        let s = read(&m, &w).unwrap();
        check_fixture(&s, &w, compat);
    }
}

fn check_fixture(s: &LuoState, w: &Written, compat: LuoCompat) {
    assert_eq!(s.header.compat, compat);
    assert_eq!(s.header.liveupdate_num, 42);
    assert_eq!(s.sessions.len(), 2);
    let vm = &s.sessions[0];
    assert_eq!(vm.session.name.to_str(), Some("vm0"));
    assert_eq!(vm.files.len(), 2);
    let FileData::Kvm { rec, attrs, area } = &vm.files[0].data else {
        panic!()
    };
    assert_eq!((rec.vm_type, rec.nr_mem_attrs), (2, 2));
    assert_eq!(attrs[1].gfn(), 0x200);
    assert_eq!(area.chunks, w.kvm.array.chunks);
    let FileData::GuestMemfd { rec, folios, .. } = &vm.files[1].data else {
        panic!()
    };
    assert_eq!((rec.size, rec.flags, rec.vm_token), (4 * 4096, 3, 1));
    assert_eq!(folios.len(), 2);
    assert_eq!(folios[1].pfn, Some(w.gmem_folios[1].block.pfn()));
    assert_eq!(folios[1].index, 3);
    let ck = &s.sessions[1];
    let FileData::Memfd { rec, folios, area } = &ck.files[0].data else {
        panic!()
    };
    assert_eq!(
        (rec.version, rec.pos, rec.seals),
        (MemfdVersion::V2, 123, 5)
    );
    assert_eq!(area.blocks, w.memfd.array.blocks);
    for (got, want) in folios.iter().zip(&w.memfd_folios) {
        assert_eq!(
            (got.pfn, got.index, got.flags),
            (Some(want.block.pfn()), want.index, want.flags)
        );
    }
    assert_eq!(ck.files[1].data, FileData::Unknown { data: 0x77000 });
    assert_eq!(ck.files[1].file.compatible.to_str(), Some("vfio-v1"));
    assert_eq!(s.flbs.len(), 1);
    assert_eq!(
        (s.flbs[0].name.to_str(), s.flbs[0].data, s.flbs[0].count),
        (Some("iommu-v1"), 0x5000, 2)
    );
}

#[test]
#[cfg_attr(
    miri,
    ignore = "heavy for Miri: 1 ms or more natively, thousands of times that interpreted"
)]
fn many_sessions_and_files_span_several_blocks() {
    let arena = crate::mem::VecArena::new(PhysAddr::new(0x100_0000), 256);
    let tree = crate::radix::RadixTree::new(&arena).unwrap();
    let w = crate::phys::PageWriter::new(&tree);
    let mut b = writer::LuoBuilder::new(LuoCompat::V5Block, 1);
    for i in 0..60 {
        let s = b.session(&alloc::format!("s{i}"));
        let files = if i == 3 { 70 } else { 1 };
        for t in 0..files {
            s.file("x-v1", 0, t);
        }
    }
    let out = b.write(&w).unwrap();
    assert_eq!(out.session_blocks.len(), 2, "51 sessions per block");
    assert_eq!(out.file_blocks[3].len(), 2, "63 files per block");
    let ram = [arena.range()];
    let map = crate::mem::RamMap::new(&ram, &[]).unwrap();
    let (set, _) =
        PreservedSet::read_tree(&arena, map, tree.root(), crate::walk::NodeBudget::new(64))
            .unwrap();
    let reader = crate::phys::PhysReader::new(&arena, map);
    let s = LuoState::read(reader, Some(&set), out.header, Some(out.size)).unwrap();
    assert_eq!(s.sessions.len(), 60);
    assert_eq!(s.sessions[55].session.name.to_str(), Some("s55"));
    assert_eq!(s.sessions[3].files.len(), 70);
    assert_eq!(s.sessions[3].files[69].file.token, 69);
    assert_eq!(s.sessions[3].file_blocks, out.file_blocks[3]);
    assert_eq!(s.session_blocks, out.session_blocks);
}

#[test]
fn paths_name_session_file_and_flb() {
    let p = LuoPath::session(1, SessionName::new("ckpt").unwrap()).file(0, 7);
    assert_eq!(
        alloc::format!("{p}"),
        "LUO / session 1 `ckpt` / file 0 (token 0x7)"
    );
    assert_eq!(alloc::format!("{}", LuoPath::flb(3)), "LUO / FLB 3");
    let odd = CName::<8>::from_field(b"a\xffb\0\0\0\0\0").unwrap();
    assert_eq!(alloc::format!("{odd}"), "a\\xffb");
    assert!(CName::<4>::from_field(b"abcd").is_none());
}

#[test]
fn handler_names_map_to_kinds_and_unknown_sub_components_are_unknown() {
    assert_eq!(
        HandlerKind::of(b"memfd-v1"),
        HandlerKind::Memfd(MemfdVersion::V1)
    );
    assert_eq!(
        HandlerKind::of(b"memfd-v2"),
        HandlerKind::Memfd(MemfdVersion::V2)
    );
    assert_eq!(
        HandlerKind::of(b"memfd-v2;vmalloc-v1"),
        HandlerKind::Memfd(MemfdVersion::V2)
    );
    assert_eq!(HandlerKind::of(b"memfd-v2;zzz-v1"), HandlerKind::Unknown);
    assert_eq!(
        HandlerKind::of(b"memfd-v1;vmalloc-v1"),
        HandlerKind::Unknown
    );
    assert_eq!(HandlerKind::of(b"memfd"), HandlerKind::Unknown);
    assert_eq!(
        HandlerKind::of(b"guest_memfd_luo_v1"),
        HandlerKind::GuestMemfd
    );
    assert_eq!(HandlerKind::of(b"kvm_vm_luo_v1"), HandlerKind::Kvm);
    assert_eq!(HandlerKind::of(b"\xff"), HandlerKind::Unknown);
}

// ---- one test per LUO reader error -------------------------------------------

fn err(m: &Machine, w: &Written) -> LuoError {
    read(m, w).unwrap_err()
}

fn read_at(
    m: &Machine,
    w: &Written,
    blob: PhysAddr,
    size: Option<u64>,
) -> Result<LuoState, LuoError> {
    let (set, _) = tracker(m, w);
    LuoState::read(m.reader(), Some(&set as &dyn PreservedLookup), blob, size)
}

#[test]
fn error_null_and_unaligned_blob() {
    let (m, w) = handover(LuoCompat::V5);
    assert_eq!(
        read_at(&m, &w, PhysAddr::ZERO, None),
        Err(LuoError::NullBlob)
    );
    let bad = w.luo.header.checked_add(8).unwrap();
    assert_eq!(
        read_at(&m, &w, bad, None),
        Err(LuoError::BlobUnaligned { blob: bad })
    );
}

#[test]
fn error_blob_outside_ram() {
    let (m, w) = handover(LuoCompat::V5);
    let far = PhysAddr::new(0x4000_0000);
    assert!(matches!(
        read_at(&m, &w, far, Some(32)),
        Err(LuoError::Read { what: "header", phys, source: ReadError::OutsideRam { .. }, .. }) if phys == far
    ));
}

#[test]
fn error_blob_not_preserved() {
    let (m, w) = handover(LuoCompat::V5);
    let (set, _) = tracker(&m, &w);
    let less = PreservedSet::from_blocks(
        set.blocks()
            .iter()
            .copied()
            .filter(|b| b.phys() != w.luo.header),
    )
    .unwrap();
    let e = LuoState::read(m.reader(), Some(&less), w.luo.header, Some(32)).unwrap_err();
    assert_eq!(
        e,
        LuoError::NotPreserved {
            path: LuoPath::ROOT,
            what: "header",
            phys: w.luo.header,
            source: Unpreserved::Missing {
                expected: Block::new(w.luo.header, Order::ZERO).unwrap()
            }
        }
    );
}

#[test]
fn error_fdt_era_blob_is_named() {
    let (m, w) = handover(LuoCompat::V5);
    let mut fdt = vm_fdt::FdtWriter::new().unwrap();
    let root = fdt.begin_node("").unwrap();
    fdt.property_string("compatible", "luo-v1").unwrap();
    fdt.property("liveupdate-number", &le(3)).unwrap();
    fdt.end_node(root).unwrap();
    let bytes = fdt.finish().unwrap();
    poke(&m, w.luo.header, 0, &bytes);
    let size = bytes.len() as u64;
    assert_eq!(
        read_at(&m, &w, w.luo.header, Some(size)),
        Err(LuoError::FdtEra {
            blob: w.luo.header,
            compatible: FdtName::new("luo-v1")
        })
    );
}

#[test]
fn error_compatible_not_terminated_or_not_text() {
    let (m, w) = handover(LuoCompat::V5);
    poke(&m, w.luo.header, 0, &[b'a'; 48]);
    assert_eq!(
        err(&m, &w),
        LuoError::CompatibleNotTerminated { blob: w.luo.header }
    );
    poke(&m, w.luo.header, 0, b"\xffuo-v5\0");
    assert_eq!(
        err(&m, &w),
        LuoError::CompatibleNotText { blob: w.luo.header }
    );
}

#[test]
fn error_unknown_compatible() {
    let (m, w) = handover(LuoCompat::V5);
    poke(&m, w.luo.header, 0, b"luo-v4\0\0");
    assert_eq!(
        err(&m, &w),
        LuoError::UnknownCompatible {
            blob: w.luo.header,
            found: FdtName::new("luo-v4")
        }
    );
}

#[test]
fn error_unknown_sub_component() {
    let (m, w) = handover(LuoCompat::V5Block);
    poke(&m, w.luo.header, 0, b"luo-v5;zzzz-v1\0");
    assert_eq!(
        err(&m, &w),
        LuoError::UnknownSubComponent {
            blob: w.luo.header,
            token: FdtName::new("zzzz-v1")
        }
    );
    poke(&m, w.luo.header, 0, b"luo-v5;;\0");
    assert!(matches!(
        err(&m, &w),
        LuoError::Compat {
            source: CompatError::EmptyToken { position: 0 },
            ..
        }
    ));
}

#[test]
fn error_truncated_blob() {
    let (m, w) = handover(LuoCompat::V5Block);
    assert_eq!(
        read_at(&m, &w, w.luo.header, Some(32)),
        Err(LuoError::Truncated {
            blob: w.luo.header,
            size: 32,
            compat: LuoCompat::V5Block,
            expected: 40
        })
    );
    assert_eq!(
        read_at(&m, &w, w.luo.header, Some(64)),
        Err(LuoError::Oversized {
            blob: w.luo.header,
            size: 64,
            compat: LuoCompat::V5Block,
            expected: 40
        })
    );
    // kho-v2 has no blob-size: nothing to compare.
    assert!(read_at(&m, &w, w.luo.header, None).is_ok());
}

#[test]
fn error_cycle_in_the_session_chain() {
    let (m, w) = handover(LuoCompat::V5);
    let sb = w.luo.session_blocks[0];
    poke(&m, sb, 0, &le(sb.as_u64()));
    assert!(matches!(
        err(&m, &w),
        LuoError::Block {
            what: "session chain",
            source: BlockError::Cycle { .. },
            ..
        }
    ));
}

#[test]
fn error_bad_pointer_in_the_file_chain() {
    let (m, w) = handover(LuoCompat::V5);
    let sb = w.luo.session_blocks[0];
    // Session 1's `files`: entry 1 at 16 + 80, its pointer 64 bytes in.
    let bad = w.luo.file_blocks[1][0].checked_add(0x10).unwrap();
    poke(&m, sb, 16 + 80 + 64, &le(bad.as_u64()));
    let e = err(&m, &w);
    let LuoError::Block {
        path,
        what: "file chain",
        source: BlockError::Unaligned { block },
    } = e
    else {
        panic!("{e:?}")
    };
    assert_eq!(block, bad);
    assert_eq!(
        path.session
            .map(|(i, n)| (i, n.to_str().map(alloc::string::String::from))),
        Some((1, Some("ckpt".into())))
    );
}

#[test]
fn error_session_name_not_terminated() {
    let (m, w) = handover(LuoCompat::V5);
    let sb = w.luo.session_blocks[0];
    poke(&m, sb, 16, &[b'n'; 64]);
    assert_eq!(
        err(&m, &w),
        LuoError::SessionNameNotTerminated {
            path: LuoPath::ROOT,
            entry: sb.checked_add(16).unwrap()
        }
    );
}

#[test]
fn error_handler_name_not_terminated() {
    let (m, w) = handover(LuoCompat::V5);
    let fb = w.luo.file_blocks[0][0];
    poke(&m, fb, 16 + 64, &[b'h'; 48]);
    let e = err(&m, &w);
    assert!(
        matches!(e, LuoError::HandlerNotTerminated { path, entry }
        if entry == fb.checked_add(16 + 64).unwrap() && path.file == Some((1, 2))),
        "{e:?}"
    );
}

#[test]
fn error_files_without_chain_and_count_mismatch() {
    let (m, w) = handover(LuoCompat::V5);
    let sb = w.luo.session_blocks[0];
    poke(&m, sb, 16 + 64, &le(0));
    assert!(matches!(
        err(&m, &w),
        LuoError::FilesWithoutChain { count: 2, .. }
    ));
    let (m, w) = handover(LuoCompat::V5);
    let sb = w.luo.session_blocks[0];
    poke(&m, sb, 16 + 72, &le(3));
    assert!(matches!(
        err(&m, &w),
        LuoError::FileCountMismatch {
            expected: 3,
            found: 2,
            ..
        }
    ));
}

#[test]
fn error_flb_header() {
    let (m, w) = handover(LuoCompat::V5);
    let h = w.luo.flb_header;
    // `flbs_pa` sits at 8 + 16 in a luo-v5 header.
    let bad = h.checked_add(8).unwrap();
    poke(&m, w.luo.header, 24, &le(bad.as_u64()));
    assert_eq!(err(&m, &w), LuoError::FlbUnaligned { header: bad });
    poke(&m, w.luo.header, 24, &le(h.as_u64()));
    poke(&m, h, 0, &le(2));
    assert_eq!(
        err(&m, &w),
        LuoError::FlbPageCount {
            header: h,
            pgcnt: 2,
            expected: 1
        }
    );
    poke(&m, h, 0, &[le(1), le(64)].concat());
    assert_eq!(
        err(&m, &w),
        LuoError::FlbCountOverflow {
            header: h,
            count: 64,
            max: 63
        }
    );
    poke(&m, h, 8, &le(1));
    poke(&m, h, 16, &[b'f'; 48]);
    assert_eq!(
        err(&m, &w),
        LuoError::FlbNameNotTerminated {
            path: LuoPath::flb(0),
            entry: h.checked_add(16).unwrap()
        }
    );
}

// ---- one test per handler error ----------------------------------------------

/// The handler error of file `file` of session `session`.
fn handler_err(m: &Machine, w: &Written) -> (LuoPath, HandlerError) {
    match err(m, w) {
        LuoError::Handler { path, source } => (path, source),
        e => panic!("not a handler error: {e:?}"),
    }
}

/// Points file `file` of session `session` at `data`.
fn set_data(m: &Machine, w: &Written, session: usize, file: usize, data: u64) {
    poke(
        m,
        w.luo.file_blocks[session][0],
        16 + 64 * file + 48,
        &le(data),
    );
}

#[test]
fn error_handler_null_unaligned_outside_ram_not_preserved() {
    let (m, w) = handover(LuoCompat::V5);
    set_data(&m, &w, 1, 0, 0);
    let (path, e) = handler_err(&m, &w);
    assert_eq!(e, HandlerError::NullData { what: "memfd" });
    assert_eq!(path.file, Some((0, 7)));
    set_data(&m, &w, 1, 0, w.memfd.ser.as_u64() + 8);
    assert_eq!(
        handler_err(&m, &w).1,
        HandlerError::Unaligned {
            what: "memfd",
            ser: w.memfd.ser.checked_add(8).unwrap()
        }
    );
    set_data(&m, &w, 1, 0, 0x4000_0000);
    assert!(matches!(
        handler_err(&m, &w).1,
        HandlerError::Read {
            what: "memfd",
            source: ReadError::OutsideRam { .. },
            ..
        }
    ));
    // A page the writer never preserved.
    set_data(&m, &w, 1, 0, page(47).as_u64());
    assert_eq!(
        handler_err(&m, &w).1,
        HandlerError::NotPreserved {
            what: "memfd",
            ser: page(47),
            source: Unpreserved::Missing {
                expected: block(47, 0)
            }
        }
    );
}

#[test]
fn error_handler_unknown_seals() {
    let (m, w) = handover(LuoCompat::V5);
    poke(&m, w.memfd.ser, 16, &0x45u32.to_le_bytes());
    assert_eq!(
        handler_err(&m, &w).1,
        HandlerError::UnknownSeals {
            ser: w.memfd.ser,
            seals: 0x45,
            known: 0x3f
        }
    );
}

#[test]
fn error_guest_memfd_flags_and_size() {
    let (m, w) = handover(LuoCompat::V5);
    poke(&m, w.gmem.ser, 8, &le(0x4));
    assert_eq!(
        handler_err(&m, &w).1,
        HandlerError::UnknownFlags {
            what: "guest_memfd",
            ser: w.gmem.ser,
            flags: 4,
            known: 3
        }
    );
    poke(&m, w.gmem.ser, 8, &le(0));
    for size in [0, 100] {
        poke(&m, w.gmem.ser, 0, &le(size));
        assert_eq!(
            handler_err(&m, &w).1,
            HandlerError::BadSize {
                what: "guest_memfd",
                ser: w.gmem.ser,
                size
            }
        );
    }
}

#[test]
fn error_folio_array_breaks_a_vmalloc_rule() {
    let (m, w) = handover(LuoCompat::V5);
    // The memfd descriptor's flags, at 32 + 12.
    poke(&m, w.memfd.ser, 44, &8u16.to_le_bytes());
    assert_eq!(
        handler_err(&m, &w).1,
        HandlerError::Array {
            what: "memfd",
            ser: w.memfd.ser,
            array: "folio array",
            source: VmallocError::UnknownFlags { flags: 8, known: 3 }
        }
    );
    // More folios than the array's page holds.
    let (m, w) = handover(LuoCompat::V5);
    poke(&m, w.memfd.ser, 24, &le(257));
    assert!(matches!(
        handler_err(&m, &w).1,
        HandlerError::Array {
            source: VmallocError::ArrayTooSmall { count: 257, .. },
            ..
        }
    ));
}

#[test]
fn error_folio_flags() {
    let (m, w) = handover(LuoCompat::V5);
    let array = w.memfd.array.blocks[0].phys();
    // Folio 1's flags: bits 52.. of its first word.
    let pfn = w.memfd_folios[1].block.pfn().as_u64();
    poke(&m, array, 16, &le(pfn | (0x4 << 52)));
    assert_eq!(
        handler_err(&m, &w).1,
        HandlerError::FolioFlags {
            what: "memfd",
            ser: w.memfd.ser,
            slot: 1,
            entry: array.checked_add(16).unwrap(),
            flags: 4,
            known: 3
        }
    );
}

#[test]
fn holes_are_listed_not_rejected() {
    let (m, w) = handover(LuoCompat::V5);
    let array = w.memfd.array.blocks[0].phys();
    poke(&m, array, 16, &le(0));
    let s = read(&m, &w).unwrap();
    let f = s.sessions[1].files[0].data.folios();
    assert_eq!(f[1].pfn, None);
    assert_eq!(
        f[0].pfn,
        Some(Pfn::new(w.memfd_folios[0].block.pfn().as_u64()).unwrap())
    );
}
