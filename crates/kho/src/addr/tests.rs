//! Tests of the address newtypes.

use super::*;

#[cfg(feature = "alloc")]
#[test]
fn merge_ranges_joins_touching_and_overlapping() {
    let r = |a: u64, b: u64| PhysRange::new(PhysAddr::new(a), PhysAddr::new(b)).unwrap();
    let got = merge_ranges(alloc::vec![
        r(8, 12),
        r(0, 4),
        r(4, 6),
        r(5, 7),
        r(9, 10),
        r(3, 3)
    ]);
    assert_eq!(got, alloc::vec![r(0, 7), r(8, 12)]);
}

#[test]
fn order_bounds() {
    assert_eq!(Order::try_new(51), Ok(Order::MAX));
    assert_eq!(
        Order::try_new(52),
        Err(AddrError::OrderTooLarge { order: 52, max: 51 })
    );
    assert_eq!(Order::MAX.bytes(), 1 << 63);
    assert_eq!(Order::all().count(), 52);
}

#[test]
fn block_alignment() {
    let order = Order::new(9);
    assert!(Block::new(PhysAddr::new(0x4000_0000), order).is_ok());
    assert_eq!(
        Block::new(PhysAddr::new(0x1000), order),
        Err(AddrError::Misaligned {
            phys: PhysAddr::new(0x1000),
            order
        })
    );
    let last = Block::new(PhysAddr::new(1 << 63), Order::MAX).unwrap();
    assert_eq!(last.range(), None);
}

#[test]
fn range_construction() {
    let a = PhysAddr::new(0x2000);
    let b = PhysAddr::new(0x1000);
    assert_eq!(
        PhysRange::new(a, b),
        Err(AddrError::Inverted { start: a, end: b })
    );
    assert_eq!(
        PhysRange::from_start_size(PhysAddr::new(u64::MAX), 2),
        Err(AddrError::Overflow {
            start: PhysAddr::new(u64::MAX),
            size: 2
        })
    );
    let r = PhysRange::new(b, a).unwrap();
    assert!(r.contains(b) && !r.contains(a));
    assert!(r.overlaps(PhysRange::new(PhysAddr::new(0x1fff), a).unwrap()));
    assert!(!r.overlaps(PhysRange::new(a, PhysAddr::new(0x3000)).unwrap()));
}

#[test]
fn pfn_bounds() {
    assert_eq!(Pfn::new(u64::MAX), None);
    assert_eq!(Pfn::MAX.phys(), PhysAddr::new(!0xfff));
    assert_eq!(Pfn::MAX.checked_add(1), None);
}
