//! Tests of the key: the worked examples of the design, every order and
//! alignment, walk order, paths, decode errors.

use super::*;

fn block(phys: u64, order: u8) -> Block {
    Block::new(PhysAddr::new(phys), Order::new(order)).unwrap()
}

#[test]
fn worked_examples_of_the_design() {
    assert_eq!(
        RadixKey::encode(block(0x1234_5000, 0)).as_u64(),
        (1 << 52) | 0x12345
    );
    assert_eq!(
        RadixKey::encode(block(0x4000_0000, 9)).as_u64(),
        (1 << 43) | 0x200
    );
    assert_eq!(
        RadixKey::from_raw((1 << 52) | 0x12345).decode(),
        Ok(block(0x1234_5000, 0))
    );
    assert_eq!(
        RadixKey::from_raw((1 << 43) | 0x200).decode(),
        Ok(block(0x4000_0000, 9))
    );
}

#[test]
fn exhaustive_round_trip_every_order_and_alignment() {
    for order in Order::all() {
        // Every address bit position the order allows, plus neighbours.
        for bit in order.shift()..64 {
            for phys in [1u64 << bit, (1u64 << bit) | order.bytes(), u64::MAX << bit] {
                let b = Block::new(PhysAddr::new(phys), order).unwrap();
                let key = RadixKey::encode(b);
                assert_eq!(63 - key.as_u64().leading_zeros(), 52 - order.as_u32());
                assert_eq!(key.decode(), Ok(b), "order {order} phys {phys:#x}");
            }
        }
        let zero = Block::new(PhysAddr::ZERO, order).unwrap();
        assert_eq!(RadixKey::encode(zero), RadixKey::first_of(order));
        assert_eq!(RadixKey::encode(zero).decode(), Ok(zero));
    }
}

#[test]
fn keys_sort_in_linux_walk_order() {
    let a = RadixKey::encode(block(0x4000_0000, 18));
    let b = RadixKey::encode(block(0, 9));
    let c = RadixKey::encode(block(0x20_0000, 9));
    let d = RadixKey::encode(block(0x1000, 0));
    assert!(a < b && b < c && c < d);
}

#[test]
fn path_round_trip() {
    let key = RadixKey::encode(block(0xdead_b000, 0));
    let mut indices = [TableIndex::new_truncate(0); 5];
    for (slot, level) in indices.iter_mut().zip(Level::inner_top_down()) {
        *slot = key.index(level);
    }
    assert_eq!(RadixKey::from_path(indices, key.leaf_bit()), key);
    assert!(key.index(Level::ROOT).as_u16() < ROOT_ENTRIES_IN_USE);
}

#[test]
fn decode_errors() {
    assert_eq!(RadixKey::from_raw(0).decode(), Err(KeyError::Zero));
    assert_eq!(
        RadixKey::from_raw(1 << 53).decode(),
        Err(KeyError::MarkerTooHigh {
            key: 1 << 53,
            bit: 53
        })
    );
    assert_eq!(
        RadixKey::from_raw(1).decode(),
        Err(KeyError::OrderTooLarge { key: 1, order: 52 })
    );
}

#[test]
fn level_shifts_are_the_designs() {
    // DESIGN.md: level L in 1..=5 indexes key bits [15 + 9(L-1) + 8 : 15 + 9(L-1)].
    let shifts = [0, 1, 2, 3, 4, 5].map(|l| Level::new(l).unwrap().shift());
    assert_eq!(shifts, [0, 15, 24, 33, 42, 51]);
    assert_eq!(Level::new(6), None);
    assert_eq!(Level::ROOT.parent(), None);
    assert_eq!(Level::LEAF.child(), None);
    assert_eq!(
        Level::LEAF.parent().and_then(Level::child),
        Some(Level::LEAF)
    );
}
