//! Tests of the heap-backed arena.

use super::*;

#[test]
fn allocates_every_page_once_then_fails() {
    let arena = VecArena::new(PhysAddr::new(0x10_0000), 70);
    let mut got: Vec<_> = (0..70)
        .map(|_| arena.alloc_zeroed_page().unwrap())
        .collect();
    assert_eq!(arena.alloc_zeroed_page(), Err(MemError::OutOfMemory));
    got.sort();
    got.dedup();
    assert_eq!(got.len(), 70);
    assert!(got.iter().all(|p| arena.range().contains(*p)));
    arena.page(got[3]).unwrap().words()[7].store(5, Ordering::Relaxed);
    arena.free_page(got[3]);
    let again = arena.alloc_zeroed_page().unwrap();
    assert_eq!(again, got[3]);
    assert!(arena.page(again).unwrap().is_zero());
}

#[test]
fn limit_and_mapping() {
    let arena = VecArena::new(PhysAddr::new(0x10_0000), 8);
    arena.set_limit(1);
    assert!(arena.alloc_zeroed_page().is_ok());
    assert_eq!(arena.alloc_zeroed_page(), Err(MemError::OutOfMemory));
    let past = PhysAddr::new(0x10_0000 + 8 * 4096);
    assert_eq!(
        arena.page(past).err(),
        Some(MemError::NotMapped { phys: past })
    );
    let odd = PhysAddr::new(0x10_0008);
    assert_eq!(
        arena.page(odd).err(),
        Some(MemError::Unaligned { phys: odd })
    );
}
