use super::*;
use crate::testing::mem;

fn small() -> PhysMem {
    mem(64 * MIB)
}

/// The layout of [`small`] over an anonymous private mapping instead of a
/// memfd: what Miri can run (it has neither `memfd_create` nor shared file
/// mappings), so the unsafe casts of `words` and `page_at` run under its
/// checks, natively too. The fd is `/dev/null`'s, which these tests never
/// use.
fn anon_small() -> PhysMem {
    let layout = MemoryLayout::pc(64 * MIB).unwrap();
    let len = usize::try_from(layout.end().as_u64()).unwrap();
    let map = MmapRaw::from(MmapOptions::new().len(len).map_anon().unwrap());
    let fd = OwnedFd::from(std::fs::File::open("/dev/null").unwrap());
    PhysMem { fd, map, layout }
}

#[test]
fn pc_layout_has_the_holes() {
    let l = MemoryLayout::pc(16 * GIB).unwrap();
    let expect: Vec<(u64, u64)> = vec![(0, 640 * KIB), (MIB, 3 * GIB), (4 * GIB, 17 * GIB)];
    let got: Vec<(u64, u64)> = l
        .ram()
        .iter()
        .map(|r| (r.start().as_u64(), r.end().as_u64()))
        .collect();
    assert_eq!(got, expect);
    assert_eq!(l.ram_bytes(), 16 * GIB - 384 * KIB);
    assert!(matches!(
        MemoryLayout::pc(3),
        Err(ArenaError::BadSize { size: 3 })
    ));
    assert!(matches!(
        MemoryLayout::pc(2 * MAX_MACHINE_SIZE),
        Err(ArenaError::BadSize { .. })
    ));
}

#[test]
fn holes_and_bounds_are_refused() {
    let mem = anon_small();
    let hole = PhysAddr::new(700 * KIB);
    assert_eq!(
        mem.page_at(hole).err(),
        Some(MemError::NotMapped { phys: hole })
    );
    let past = PhysAddr::new(64 * MIB);
    assert_eq!(
        mem.page_at(past).err(),
        Some(MemError::NotMapped { phys: past })
    );
    let odd = PhysAddr::new(MIB + 4);
    assert_eq!(
        mem.words(odd, 1).err(),
        Some(MemError::Unaligned { phys: odd })
    );
    // A word run that crosses from RAM into the hole.
    let edge = PhysAddr::new(640 * KIB - 8);
    assert!(mem.words(edge, 1).is_ok());
    assert_eq!(
        mem.words(edge, 2).err(),
        Some(MemError::NotMapped { phys: edge })
    );
}

/// Two threads set bits of the same words through `page_at` while a third
/// reads them through `words`: every access goes through atomics (Miri's
/// data race detector checks it), and all stores land.
#[test]
fn threads_share_words_through_the_mapping() {
    let mem = anon_small();
    let p = PhysAddr::new(2 * MIB);
    std::thread::scope(|s| {
        for t in 0..2u32 {
            let mem = &mem;
            s.spawn(move || {
                let page = mem.page_at(p).unwrap();
                for w in &page.words()[..64] {
                    w.fetch_or(1 << t, Ordering::Relaxed);
                }
            });
        }
        s.spawn(|| {
            for w in mem.words(p, 64).unwrap() {
                assert_eq!(w.load(Ordering::Relaxed) & !3, 0);
            }
        });
    });
    assert!(
        mem.words(p, 64)
            .unwrap()
            .iter()
            .all(|w| w.load(Ordering::Relaxed) == 3)
    );
    let r = PhysRange::from_start_size(p, PAGE_SIZE).unwrap();
    mem.fill(r, 0x5a5a).unwrap();
    assert_eq!(mem.page_at(p).unwrap().load(511), Some(0x5a5a));
    assert!(
        mem.page_at(p.checked_add(PAGE_SIZE).unwrap())
            .unwrap()
            .is_zero()
    );
}

#[test]
#[cfg_attr(
    miri,
    ignore = "memfd_create and a shared mapping of it: Miri has neither"
)]
fn a_second_mapping_of_the_fd_sees_the_same_bytes() {
    let mem = small();
    let p = PhysAddr::new(2 * MIB);
    mem.page_at(p).unwrap().words()[3].store(0xfeed, Ordering::Relaxed);
    let dup = mem.fd().try_clone_to_owned().unwrap();
    let other = PhysMem::attach(dup, mem.layout().clone()).unwrap();
    assert_eq!(other.page_at(p).unwrap().load(3), Some(0xfeed));
    let short = MemoryLayout::pc(128 * MIB).unwrap();
    let dup = mem.fd().try_clone_to_owned().unwrap();
    assert!(matches!(
        PhysMem::attach(dup, short),
        Err(ArenaError::ShortFile { .. })
    ));
}

#[test]
#[cfg_attr(miri, ignore = "memfd_create, fallocate and SEEK_DATA: Miri has none")]
fn memory_is_sparse_and_discard_zeroes() {
    let mem = PhysMem::create(MemoryLayout::pc(MAX_MACHINE_SIZE).unwrap()).unwrap();
    assert!(mem.populated().unwrap().is_empty());
    let p = PhysAddr::new(512 * GIB);
    let r = PhysRange::from_start_size(p, 2 * PAGE_SIZE).unwrap();
    mem.fill(r, 0x5a5a).unwrap();
    assert_eq!(mem.populated().unwrap(), vec![r]);
    mem.discard(r).unwrap();
    assert!(mem.populated().unwrap().is_empty());
    // (Reading a hole of a memfd through a shared mapping allocates it.)
    assert!(mem.page_at(p).unwrap().is_zero());
}
