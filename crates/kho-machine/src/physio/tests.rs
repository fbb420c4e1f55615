use super::*;
use crate::MemoryLayout;

#[test]
fn round_trip_and_partial_word() {
    let mem = PhysMem::create(MemoryLayout::pc(16 << 20).unwrap()).unwrap();
    let p = PhysAddr::new(2 << 20);
    write_bytes(&mem, p, &[0xff; 16]).unwrap();
    write_bytes(&mem, p, &[1, 2, 3]).unwrap();
    assert_eq!(
        read_bytes(&mem, p, 10).unwrap(),
        vec![1, 2, 3, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]
    );
    let odd = PhysAddr::new((2 << 20) + 4);
    assert_eq!(
        read_bytes(&mem, odd, 4).err(),
        Some(MemError::Unaligned { phys: odd })
    );
    let hole = PhysAddr::new(700 << 10);
    assert_eq!(
        write_bytes(&mem, hole, &[1]).err(),
        Some(MemError::NotMapped { phys: hole })
    );
}
