use super::*;
use crate::mem::VecArena;
use alloc::vec::Vec;

fn arena() -> (VecArena, [PhysRange; 1]) {
    let a = VecArena::new(PhysAddr::new(0x10_0000), 4);
    let ram = [PhysRange::from_start_size(PhysAddr::new(0x10_0000), 3 * 4096).unwrap()];
    (a, ram)
}

#[test]
fn bytes_round_trip_through_words_at_any_offset() {
    let (a, ram) = arena();
    let page = a.page(PhysAddr::new(0x10_1000)).unwrap();
    let bytes: Vec<u8> = (1..=21).collect();
    copy_in(page, 13, &bytes);
    let r = PhysReader::new(&a, RamMap::new(&ram, &[]).unwrap());
    let mut out = [0u8; 21];
    r.read_bytes(PhysAddr::new(0x10_1000 + 13), &mut out)
        .unwrap();
    assert_eq!(out.to_vec(), bytes);
    // Little-endian words: byte 13 is byte 5 of word 1.
    assert_eq!(page.load(1).unwrap() >> 40 & 0xff, 1);
    assert_eq!(
        r.read_u64(PhysAddr::new(0x10_1000 + 13)).unwrap(),
        u64::from_le_bytes([1, 2, 3, 4, 5, 6, 7, 8])
    );
}

#[test]
fn a_read_must_stay_in_one_page() {
    let (a, ram) = arena();
    let r = PhysReader::new(&a, RamMap::new(&ram, &[]).unwrap());
    let at = PhysAddr::new(0x10_0ffc);
    assert_eq!(
        r.read_u64(at),
        Err(ReadError::CrossesPage { phys: at, len: 8 })
    );
}

#[test]
fn a_read_must_stay_in_ram() {
    let (a, ram) = arena();
    let r = PhysReader::new(&a, RamMap::new(&ram, &[]).unwrap());
    // The arena's fourth page is mapped but not RAM.
    let at = PhysAddr::new(0x10_3010);
    assert_eq!(
        r.read_u64(at),
        Err(ReadError::OutsideRam {
            page: PhysAddr::new(0x10_3000),
            phys: at,
            len: 8
        })
    );
}

#[test]
fn a_read_of_an_unmapped_page_fails_without_faulting() {
    let a = VecArena::new(PhysAddr::new(0x10_0000), 1);
    let ram = [PhysRange::from_start_size(PhysAddr::new(0x10_0000), 2 * 4096).unwrap()];
    let r = PhysReader::new(&a, RamMap::new(&ram, &[]).unwrap());
    let at = PhysAddr::new(0x10_1000);
    assert_eq!(
        r.read_u64(at),
        Err(ReadError::NotMapped {
            page: at,
            source: MemError::NotMapped { phys: at }
        })
    );
}

#[test]
fn the_writer_preserves_what_it_allocates() {
    let a = VecArena::new(PhysAddr::new(0x10_0000), 8);
    let tree = crate::radix::RadixTree::new(&a).unwrap();
    let w = PageWriter::new(&tree);
    let p = w.write_preserved("test", b"hello").unwrap();
    assert!(
        tree.is_preserved(crate::addr::Block::new(p, crate::addr::Order::ZERO).unwrap())
            .unwrap()
    );
    assert_eq!(
        w.write_preserved("big", &[0u8; 4097]),
        Err(WriteError::TooLarge {
            what: "big",
            len: 4097
        })
    );
    assert!(matches!(
        w.write(p, 4090, &[0u8; 8]),
        Err(WriteError::TooLarge { .. })
    ));
}
