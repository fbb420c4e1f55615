//! Cross-layer checks on the fixture handover: clean as written, then one
//! test per finding, and the orphan report.

use super::*;
use crate::luo::LuoCompat;
use crate::phys::PAGE_BYTES;
use crate::testing::abi_fuzz::Machine;
use crate::testing::luo_fixture::{Written, block, handover, page, poke, read, tracker};

fn report(m: &Machine, w: &Written) -> CrossReport {
    let state = read(m, w).unwrap();
    let (set, pages) = tracker(m, w);
    let fdt = KhoFdt::parse(&w.fdt).unwrap();
    let mut buf = [0u8; PAGE_BYTES];
    let mb = MemblockFdt::read(m.reader(), w.memblock.0, Some(w.memblock.1), &mut buf).unwrap();
    CrossCheck::new(&set)
        .tracker_pages(&pages)
        .kho_fdt(&fdt, Some(w.fdt_phys))
        .luo(&state)
        .memblock(&mb)
        .run()
}

fn has(r: &CrossReport, f: impl Fn(&Finding) -> bool) -> bool {
    r.findings.iter().any(f)
}

/// Sets slot `slot` of a folio array: its first word (pfn and flags).
fn set_pfn(m: &Machine, array: PhysAddr, slot: usize, pfn_flags: u64) {
    poke(m, array, 16 * slot, &pfn_flags.to_le_bytes());
}

fn set_index(m: &Machine, array: PhysAddr, slot: usize, index: u64) {
    poke(m, array, 16 * slot + 8, &index.to_le_bytes());
}

fn memfd_array(w: &Written) -> PhysAddr {
    w.memfd.array.blocks[0].phys()
}

fn gmem_array(w: &Written) -> PhysAddr {
    w.gmem.array.blocks[0].phys()
}

#[test]
fn the_written_handover_is_clean() {
    let (m, w) = handover(LuoCompat::V5);
    let r = report(&m, &w);
    assert_eq!(r.findings, [], "{:#?}", r.findings);
    assert_eq!(r.orphans, Orphans::default());
    assert!(r.is_clean());
    // The memfd's order-2 folio's claim grew to its block.
    assert!(
        r.claims
            .iter()
            .any(|c| c.range == block(52, 2).range().unwrap()
                && matches!(c.kind, ClaimKind::Folio(_, 1)))
    );
    let (set, _) = tracker(&m, &w);
    // Blobs claim their bytes; round to pages.
    let claimed: u64 = r
        .claims
        .iter()
        .map(|c| c.range.size().next_multiple_of(4096))
        .sum();
    assert_eq!(claimed, set.bytes(), "every preserved page is claimed once");
}

#[test]
fn unclaimed_blocks_are_orphans() {
    // Without the root FDT and memblock: its page, the memblock blob and the
    // reserve_mem region's block are orphans.
    let (m, w) = handover(LuoCompat::V5);
    let state = read(&m, &w).unwrap();
    let (set, pages) = tracker(&m, &w);
    let r = CrossCheck::new(&set)
        .tracker_pages(&pages)
        .luo(&state)
        .run();
    assert_eq!(r.findings, []);
    let mut first = alloc::vec![
        Block::new(w.fdt_phys, Order::ZERO).unwrap(),
        Block::new(w.memblock.0, Order::ZERO).unwrap(),
        block(60, 1),
    ];
    first.sort_by_key(|b| b.phys());
    assert_eq!(
        r.orphans,
        Orphans {
            blocks: 3,
            bytes: 4 * 4096,
            first
        }
    );
}

/// A block a subnode's list names (a format the caller parsed) is claimed
/// as exactly that block: the orphan goes away; at another order, or
/// unpreserved, it is a finding.
#[test]
fn listed_blocks_are_claims_of_their_order() {
    let (m, w) = handover(LuoCompat::V5);
    let (set, pages) = tracker(&m, &w);
    let state = read(&m, &w).unwrap();
    let fdt = KhoFdt::parse(&w.fdt).unwrap();
    let base = || {
        CrossCheck::new(&set)
            .tracker_pages(&pages)
            .kho_fdt(&fdt, Some(w.fdt_phys))
            .luo(&state)
    };
    // Without memblock the reserve_mem region's block is an orphan ...
    let r = base().run();
    assert_eq!(r.orphans.first, [block(60, 1)]);
    // ... and a list naming it claims it.
    let r = base().listed("list", 0, block(60, 1)).run();
    assert_eq!(r.findings, []);
    assert_eq!(r.orphans, Orphans::default());
    // Named at order 0 it is preserved at another order.
    let r = base().listed("list", 3, block(60, 0)).run();
    assert!(
        has(&r, |f| matches!(f, Finding::OtherOrder { claim, .. }
            if matches!(claim.kind, ClaimKind::Listed(n, 3) if n.as_str() == "list"))),
        "{:#?}",
        r.findings
    );
    // An unpreserved block is not preserved.
    let r = base().listed("list", 1, block(47, 0)).run();
    assert!(has(&r, |f| matches!(f, Finding::NotPreserved { claim }
        if matches!(claim.kind, ClaimKind::Listed(_, 1)))));
}

#[test]
fn a_memfd_that_lists_no_folio_leaks_its_array_and_folios() {
    let (m, w) = handover(LuoCompat::V5);
    poke(&m, w.memfd.ser, 24, &0u64.to_le_bytes());
    let r = report(&m, &w);
    assert_eq!(r.findings, []);
    // Three folios, the array's chunk and page: Linux never restores them.
    assert_eq!(r.orphans.blocks, 5);
    assert_eq!(r.orphans.bytes, (1 + 4 + 1 + 1 + 1) * 4096);
}

#[test]
fn finding_folio_not_preserved() {
    let (m, w) = handover(LuoCompat::V5);
    set_pfn(&m, memfd_array(&w), 0, page(47).pfn().as_u64() | (3 << 52));
    let r = report(&m, &w);
    assert!(
        has(&r, |f| matches!(f, Finding::NotPreserved { claim }
        if matches!(claim.kind, ClaimKind::Folio(p, 0) if p.file == Some((0, 7)))
            && claim.range.start() == page(47))),
        "{:#?}",
        r.findings
    );
    // Its real folio is now unclaimed.
    assert_eq!(r.orphans.first, [block(48, 0)]);
}

#[test]
fn finding_folio_preserved_at_another_order() {
    // guest_memfd preserves order-0 folios only; page 52 heads an order-2 block.
    let (m, w) = handover(LuoCompat::V5);
    set_pfn(&m, gmem_array(&w), 0, page(52).pfn().as_u64() | (1 << 52));
    let r = report(&m, &w);
    assert!(
        has(
            &r,
            |f| matches!(f, Finding::OtherOrder { expected, found, claim }
        if *expected == Order::ZERO && *found == block(52, 2)
            && matches!(claim.kind, ClaimKind::Folio(p, 0) if p.file == Some((1, 2))))
        ),
        "{:#?}",
        r.findings
    );
}

#[test]
fn finding_folio_inside_a_larger_block() {
    let (m, w) = handover(LuoCompat::V5);
    set_pfn(&m, memfd_array(&w), 0, page(53).pfn().as_u64() | (3 << 52));
    let r = report(&m, &w);
    assert!(
        has(
            &r,
            |f| matches!(f, Finding::NotHead { found, .. } if *found == block(52, 2))
        ),
        "{:#?}",
        r.findings
    );
}

#[test]
fn finding_two_files_share_a_folio() {
    let (m, w) = handover(LuoCompat::V5);
    // guest_memfd folio 1 -> the memfd's folio at page 48.
    set_pfn(&m, gmem_array(&w), 1, page(48).pfn().as_u64());
    let r = report(&m, &w);
    let overlap = r.findings.iter().find_map(|f| match f {
        Finding::Overlap { first, second } => Some((first.kind, second.kind)),
        _ => None,
    });
    let (a, b) = overlap.expect("an overlap");
    let files: alloc::vec::Vec<_> = [a, b]
        .iter()
        .map(|k| match k {
            ClaimKind::Folio(p, _) => p.file.unwrap().1,
            k => panic!("{k:?}"),
        })
        .collect();
    assert!(files.contains(&7) && files.contains(&2), "{files:?}");
    assert_eq!(r.orphans.first, [block(57, 0)]);
}

#[test]
fn finding_folio_on_a_tracker_page() {
    let (m, w) = handover(LuoCompat::V5);
    set_pfn(&m, gmem_array(&w), 0, w.root.pfn().as_u64());
    let r = report(&m, &w);
    assert!(
        has(
            &r,
            |f| matches!(f, Finding::TrackerPage { page, .. } if *page == w.root)
        ),
        "{:#?}",
        r.findings
    );
    assert!(has(&r, |f| matches!(f, Finding::NotPreserved { .. })));
}

#[test]
fn finding_index_beyond_size() {
    let (m, w) = handover(LuoCompat::V5);
    // memfd: 5 pages + 17 bytes: index 5 starts inside, 6 past the end.
    set_index(&m, memfd_array(&w), 2, 5);
    assert!(
        report(&m, &w)
            .findings
            .iter()
            .all(|f| !matches!(f, Finding::IndexBeyondSize { .. }))
    );
    set_index(&m, memfd_array(&w), 2, 6);
    let r = report(&m, &w);
    assert!(
        has(
            &r,
            |f| matches!(f, Finding::IndexBeyondSize { slot: 2, index: 6, size, .. } if *size == 5 * 4096 + 17)
        ),
        "{:#?}",
        r.findings
    );
    // guest_memfd: 4 pages, index 4 is past the end.
    let (m, w) = handover(LuoCompat::V5);
    set_index(&m, gmem_array(&w), 1, 4);
    let r = report(&m, &w);
    assert!(has(&r, |f| matches!(
        f,
        Finding::IndexBeyondSize {
            slot: 1,
            index: 4,
            size: 16384,
            ..
        }
    )));
}

#[test]
fn finding_index_misaligned_and_overlapping() {
    let (m, w) = handover(LuoCompat::V5);
    // The order-2 folio at index 4 -> 2: not a multiple of 4.
    set_index(&m, memfd_array(&w), 1, 2);
    let r = report(&m, &w);
    assert!(
        has(
            &r,
            |f| matches!(f, Finding::IndexMisaligned { slot: 1, index: 2, order, .. } if *order == Order::new(2))
        ),
        "{:#?}",
        r.findings
    );
    // Folio 2 at index 1 -> 0, where folio 0 is.
    let (m, w) = handover(LuoCompat::V5);
    set_index(&m, memfd_array(&w), 2, 0);
    let r = report(&m, &w);
    assert!(
        has(&r, |f| matches!(
            f,
            Finding::IndexOverlap {
                first: 0,
                second: 2,
                index: 0,
                ..
            }
        )),
        "{:#?}",
        r.findings
    );
}

#[test]
fn finding_vm_token_must_name_a_kvm_file_of_the_session() {
    let (m, w) = handover(LuoCompat::V5);
    poke(&m, w.gmem.ser, 24, &99u64.to_le_bytes());
    let r = report(&m, &w);
    assert!(has(&r, |f| matches!(
        f,
        Finding::VmTokenUnknown { vm_token: 99, .. }
    )));
    // Token 2 is the guest_memfd itself.
    poke(&m, w.gmem.ser, 24, &2u64.to_le_bytes());
    let r = report(&m, &w);
    assert!(
        has(
            &r,
            |f| matches!(f, Finding::VmTokenNotKvm { vm_token: 2, compatible, .. }
        if compatible.to_str() == Some("guest_memfd_luo_v1"))
        ),
        "{:#?}",
        r.findings
    );
}

#[test]
fn finding_duplicate_tokens_and_session_names() {
    let (m, w) = handover(LuoCompat::V5);
    // File 1 of vm0 (the guest_memfd) takes token 1, the VM's.
    poke(
        &m,
        w.luo.file_blocks[0][0],
        16 + 64 + 56,
        &1u64.to_le_bytes(),
    );
    let r = report(&m, &w);
    assert!(has(&r, |f| matches!(
        f,
        Finding::DuplicateToken {
            token: 1,
            first: 0,
            second: 1,
            ..
        }
    )));
    let (m, w) = handover(LuoCompat::V5);
    poke(&m, w.luo.session_blocks[0], 16 + 80, b"vm0\0");
    let r = report(&m, &w);
    assert!(has(
        &r,
        |f| matches!(f, Finding::DuplicateSession { first: 0, second: 1, name } if name.to_str() == Some("vm0"))
    ));
}

#[test]
fn finding_blob_page_not_preserved() {
    let (m, w) = handover(LuoCompat::V5);
    let (set, _) = tracker(&m, &w);
    let r = CrossCheck::new(&set)
        .blob("driver", page(46), Some(3 * 4096))
        .run();
    assert!(
        has(
            &r,
            |f| matches!(f, Finding::Uncovered { page: p, .. } if *p == page(46))
        ),
        "{:#?}",
        r.findings
    );
    let text = alloc::format!("{}", r.findings[0]);
    assert!(text.contains("subnode `driver` blob"), "{text}");
}
