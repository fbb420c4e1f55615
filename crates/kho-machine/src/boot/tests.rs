use std::time::Instant;

use super::*;
use crate::arena::MemoryLayout;
use crate::memblock::MemblockFlags;
use crate::testing::{GIB as G, MIB as M};

#[test]
fn phases_run_in_order_and_kho_hooks_fit_between() {
    let mem = PhysMem::create(MemoryLayout::pc(256 * M).unwrap()).unwrap();
    let mut m = Machine::new(&mem, BootConfig::default());
    assert_eq!(
        m.memmap_init().err(),
        Some(BootError::Phase {
            phase: "memmap_init",
            needs: "alloc_memmap"
        })
    );
    m.memblock_init().unwrap();
    // kho_populate: scratch, scratch-only allocation.
    let scratch = PhysAddr::new(64 * M);
    m.memblock
        .memblock_mark_kho_scratch(scratch, 16 * M)
        .unwrap();
    m.memblock.memblock_set_kho_scratch_only();
    m.alloc_memmap().unwrap();
    let memmap = m.memmap().unwrap().allocations()[0];
    // Two sections: 4 MiB of struct pages at the top of the scratch.
    assert_eq!(memmap.start(), PhysAddr::new(76 * M));
    // memmap_init (every struct page of memory: it reads no reservation),
    // then kho_memory_init: preserved memory reserved, noinit.
    let st = m.memmap_init().unwrap();
    assert_eq!((st.noinit, st.reserved), (0, 0));
    let preserved = PhysAddr::new(200 * M);
    m.memblock.memblock_reserve(preserved, 4 * M).unwrap();
    m.memblock
        .memblock_reserved_mark_noinit(preserved, 4 * M)
        .unwrap();
    let freed = m.memblock_free_all().unwrap();
    assert!(!m.memblock.kho_scratch_only());
    let b = m.buddy().unwrap();
    assert_eq!(b.nr_free_pages(), freed);
    // 255 MiB of RAM above 1 MiB minus kernel, memmap, preserved.
    assert_eq!(freed, (255 - 16 - 4 - 4) * M / 4096);
    assert!(
        m.memblock
            .reserved
            .regions()
            .iter()
            .any(|r| r.flags == MemblockFlags::RSRV_NOINIT)
    );
}

/// `cargo test --release -p kho-machine -- --ignored --nocapture
/// boot_16g`: prints the time of memmap_init + memblock_free_all on a
/// 16 GiB machine (a measurement, not a test of speed).
#[test]
#[ignore = "measurement: run with --release --ignored --nocapture"]
fn boot_16g_timing() {
    let mem = PhysMem::create(MemoryLayout::pc(16 * G).unwrap()).unwrap();
    for round in [
        "cold (first touch of the memmap)",
        "warm (memmap pages resident)",
    ] {
        let mut m = Machine::new(&mem, BootConfig::default());
        m.memblock_init().unwrap();
        m.alloc_memmap().unwrap();
        let t0 = Instant::now();
        let st = m.memmap_init().unwrap();
        let t1 = Instant::now();
        let freed = m.memblock_free_all().unwrap();
        let t2 = Instant::now();
        let pages = st.free + st.reserved + st.unavailable;
        let (init, free) = (t1 - t0, t2 - t1);
        println!(
            "16 GiB, {round}: memmap_init {:?} ({:.1} ns/page, {pages} struct pages), \
             memblock_free_all {:?} ({freed} pages freed), total {:?} ({:.1} ns/page)",
            init,
            init.as_nanos() as f64 / pages as f64,
            free,
            init + free,
            (init + free).as_nanos() as f64 / pages as f64,
        );
    }
}
