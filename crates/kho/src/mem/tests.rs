//! Tests of the RAM map.

use super::*;

fn r(a: u64, b: u64) -> PhysRange {
    PhysRange::new(PhysAddr::new(a), PhysAddr::new(b)).unwrap()
}

#[test]
fn ram_map_lookups() {
    let ram = [r(0, 0xa_0000), r(0x10_0000, 0x4000_0000)];
    let forbidden = [r(0x20_0000, 0x40_0000)];
    let map = RamMap::new(&ram, &forbidden).unwrap();
    assert!(map.is_ram(r(0x10_0000, 0x10_1000)));
    assert!(!map.is_ram(r(0x9_f000, 0x10_1000)));
    assert!(!map.is_ram(r(0xa_0000, 0xa_1000)));
    assert_eq!(
        map.forbidden_overlap(r(0x3f_f000, 0x40_1000)),
        Some(forbidden[0])
    );
    assert_eq!(map.forbidden_overlap(r(0x40_0000, 0x40_1000)), None);
    assert_eq!(map.ram_bytes(), 0xa_0000 + 0x3ff0_0000);
}

#[test]
fn ram_map_errors() {
    let bad = [r(0, 0x1001)];
    assert_eq!(
        RamMap::new(&bad, &[]).err(),
        Some(RamMapError::Unaligned { range: bad[0] })
    );
    let unsorted = [r(0x2000, 0x3000), r(0x1000, 0x2000)];
    assert_eq!(
        RamMap::new(&unsorted, &[]).err(),
        Some(RamMapError::Unsorted {
            previous: unsorted[0],
            range: unsorted[1]
        })
    );
}
