// The module's total-reader lints do not bind its tests.
#![allow(clippy::unwrap_used)]

use super::*;
use crate::testing::{MIB, range_at as r};

fn mem() -> PhysMem {
    crate::testing::mem(64 * MIB)
}

fn words(mem: &PhysMem, at: u64, w: &[u64]) {
    let bytes: Vec<u8> = w.iter().flat_map(|x| x.to_le_bytes()).collect();
    write_bytes(mem, PhysAddr::new(at), &bytes).unwrap();
}

/// A hand-built node at 1 MiB: setup_data + kho_data + 3 scratch entries.
fn golden(mem: &PhysMem) {
    words(
        mem,
        MIB,
        &[
            0,               // next
            10 | (32 << 32), // type = 10, len = 32
            0x30_0000,       // fdt_addr
            0x1000,          // fdt_size
            0x10_0030,       // scratch_addr
            48,              // scratch_size
            0x40_0000,       // lowmem.addr
            0x20_0000,       // lowmem.size
            0x80_0000,       // global.addr
            0x40_0000,       // global.size
            0x200_0000,      // node0.addr
            0x20_0000,       // node0.size
        ],
    );
}

#[test]
fn layouts_match_linux() {
    assert_eq!(SETUP_KEXEC_KHO, 10);
    let h = SetupDataHeader {
        next: U64::new(0x1122_3344_5566_7788),
        kind: U32::new(10),
        len: U32::new(32),
    };
    assert_eq!(
        h.as_bytes(),
        &[
            0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11, 10, 0, 0, 0, 32, 0, 0, 0
        ]
    );
    let k = KhoData::new(r(0x1000, 0x1000), r(0x2000, 32));
    let expect: Vec<u8> = [0x1000u64, 0x1000, 0x2000, 32]
        .iter()
        .flat_map(|w| w.to_le_bytes())
        .collect();
    assert_eq!(k.as_bytes(), expect.as_slice());
}

#[test]
fn writer_produces_the_golden_bytes() {
    let a = mem();
    golden(&a);
    let b = mem();
    let scratch = [
        r(0x40_0000, 2 * MIB),
        r(0x80_0000, 4 * MIB),
        r(0x200_0000, 2 * MIB),
    ];
    let img = write_handover(
        &b,
        PhysAddr::new(MIB),
        PhysAddr::ZERO,
        r(0x30_0000, 0x1000),
        &scratch,
    )
    .unwrap();
    assert_eq!(img.setup_data, PhysAddr::new(MIB));
    assert_eq!(img.range, r(MIB, 16 + 32 + 48));
    let len = 96;
    assert_eq!(
        read_bytes(&a, PhysAddr::new(MIB), len).unwrap(),
        read_bytes(&b, PhysAddr::new(MIB), len).unwrap()
    );
}

#[test]
fn reader_reads_the_golden_bytes() {
    let m = mem();
    golden(&m);
    let h = read_setup_data(&m, PhysAddr::new(MIB)).unwrap().unwrap();
    assert_eq!(h.node, PhysAddr::new(MIB));
    assert_eq!(h.fdt, r(0x30_0000, 0x1000));
    assert_eq!(h.scratch_array, r(0x10_0030, 48));
    assert_eq!(
        h.scratch,
        vec![
            r(0x40_0000, 2 * MIB),
            r(0x80_0000, 4 * MIB),
            r(0x200_0000, 2 * MIB)
        ]
    );
    assert_eq!(read_setup_data(&m, PhysAddr::ZERO).unwrap(), None);
}

#[test]
fn foreign_nodes_are_skipped_and_a_list_without_kho_is_none() {
    let m = mem();
    golden(&m);
    // An RNG seed node at 2 MiB pointing at the KHO node.
    words(&m, 2 * MIB, &[MIB, 9 | (8 << 32), 0xdead]);
    let h = read_setup_data(&m, PhysAddr::new(2 * MIB))
        .unwrap()
        .unwrap();
    assert_eq!(h.node, PhysAddr::new(MIB));
    words(&m, 2 * MIB, &[0, 9 | (8 << 32), 0xdead]);
    assert_eq!(read_setup_data(&m, PhysAddr::new(2 * MIB)).unwrap(), None);
}

fn err(m: &PhysMem, head: u64) -> KexecError {
    read_setup_data(m, PhysAddr::new(head)).unwrap_err()
}

#[test]
fn each_reader_error() {
    let m = mem();
    // Header in the hole.
    assert!(matches!(
        err(&m, 700 << 10),
        KexecError::NotRam {
            what: "setup_data header",
            ..
        }
    ));
    // Unaligned header.
    assert!(matches!(err(&m, MIB + 4), KexecError::Unaligned { .. }));
    // A loop.
    words(&m, 2 * MIB, &[2 * MIB, 9 | (8 << 32)]);
    assert!(matches!(
        err(&m, 2 * MIB),
        KexecError::ChainTooLong { max: 64, .. }
    ));
    // Foreign payload running past RAM.
    words(&m, 2 * MIB, &[0, 9 | (0xffff_fff0 << 32)]);
    assert!(matches!(
        err(&m, 2 * MIB),
        KexecError::NotRam {
            what: "setup_data payload",
            ..
        }
    ));
    // KHO node of the wrong length.
    golden(&m);
    words(&m, MIB + 8, &[10 | (24 << 32)]);
    assert!(matches!(
        err(&m, MIB),
        KexecError::KhoLen {
            len: 24,
            expected: 32,
            ..
        }
    ));
    // Two KHO nodes.
    golden(&m);
    words(
        &m,
        2 * MIB,
        &[MIB, 10 | (32 << 32), 0x30_0000, 0x1000, 0x10_0030, 48],
    );
    assert!(matches!(err(&m, 2 * MIB), KexecError::DuplicateKho { .. }));
    // fdt_size zero, too large; FDT outside RAM.
    golden(&m);
    words(&m, MIB + 24, &[0]);
    assert!(matches!(err(&m, MIB), KexecError::FdtSize { size: 0, .. }));
    words(&m, MIB + 24, &[MAX_FDT_SIZE + 1]);
    assert!(matches!(err(&m, MIB), KexecError::FdtSize { .. }));
    words(&m, MIB + 16, &[64 * MIB, 0x1000]);
    assert!(matches!(
        err(&m, MIB),
        KexecError::NotRam {
            what: "handover FDT",
            ..
        }
    ));
    words(&m, MIB + 16, &[u64::MAX - 0xfff, 0x1000]);
    assert!(matches!(
        err(&m, MIB),
        KexecError::NotRam {
            what: "handover FDT",
            ..
        }
    ));
    // scratch_size not whole entries, zero, too many; array outside RAM.
    golden(&m);
    words(&m, MIB + 40, &[47]);
    assert!(matches!(
        err(&m, MIB),
        KexecError::ScratchSize { size: 47, .. }
    ));
    words(&m, MIB + 40, &[0]);
    assert!(matches!(
        err(&m, MIB),
        KexecError::ScratchSize { size: 0, .. }
    ));
    words(&m, MIB + 40, &[16 * (MAX_SCRATCH_AREAS + 1)]);
    assert!(matches!(err(&m, MIB), KexecError::ScratchSize { .. }));
    words(&m, MIB + 32, &[0xa_0000, 48]);
    assert!(matches!(
        err(&m, MIB),
        KexecError::NotRam {
            what: "kho_scratch array",
            ..
        }
    ));
    // Entries: empty, unaligned, outside RAM, overlapping.
    golden(&m);
    words(&m, MIB + 56, &[0]);
    assert!(matches!(
        err(&m, MIB),
        KexecError::ScratchEmpty { index: 0, .. }
    ));
    golden(&m);
    words(&m, MIB + 64, &[0x80_0800]);
    assert!(matches!(
        err(&m, MIB),
        KexecError::ScratchUnaligned { index: 1, .. }
    ));
    golden(&m);
    words(&m, MIB + 80, &[0x300_0000, 0x200_0000]);
    assert!(matches!(
        err(&m, MIB),
        KexecError::ScratchNotRam { index: 2, .. }
    ));
    golden(&m);
    words(&m, MIB + 80, &[0x90_0000]);
    assert!(matches!(
        err(&m, MIB),
        KexecError::ScratchOverlap {
            first: 1,
            second: 2,
            ..
        }
    ));
    // FDT inside scratch.
    golden(&m);
    words(&m, MIB + 16, &[0x40_1000]);
    assert!(matches!(
        err(&m, MIB),
        KexecError::FdtInScratch { index: 0, .. }
    ));
}
