//! Bounded work (issue 14, scope 2): hostile maps whose work is bounded
//! by the metadata they hold, each stopped by the budget its error names.
//! A leaf of all ones on a huge span, the fourth case, is inspect's block
//! cap: `kho-lab`'s `tests/bounded_work.rs`.

use kho::{
    BitmapSize, NodeBudget, PhysAddr, PhysRange, RadixReader, RamMap, V1Error, V1Reader, VecArena,
    VisitedFull, VisitedSet, WalkError,
};

const BASE: u64 = 0x10_0000;

fn p(i: u64) -> u64 {
    BASE + i * 0x1000
}

/// A visited set that never remembers: the node budget alone bounds the
/// walk, as it does for a caller without memory.
struct Forgetful;

impl VisitedSet for Forgetful {
    fn insert(&mut self, _: PhysAddr) -> Result<bool, VisitedFull> {
        Ok(true)
    }
}

#[test]
fn dag_of_one_shared_child_stops_at_the_node_budget() {
    // Every entry of every inner node names the same child: 4 * 512^4 =
    // 2^38 paths to one leaf, from 6 pages. The image declares 1 TiB of
    // RAM (16,541 nodes by the key space) but holds 6 pages: the budget is
    // 7 nodes, and the walk stops at the eighth node it would enter.
    let a = VecArena::new(PhysAddr::new(BASE), 8);
    for n in 0..6 {
        a.claim(PhysAddr::new(p(n))).unwrap();
    }
    for n in 0..5u64 {
        let entries = if n == 0 { 4 } else { 512 };
        for w in 0..entries {
            a.write_word(PhysAddr::new(p(n)), w, p(n + 1)).unwrap();
        }
    }
    let ram = [PhysRange::new(PhysAddr::ZERO, PhysAddr::new(1 << 40)).unwrap()];
    let map = RamMap::new(&ram, &[]).unwrap();
    assert_eq!(NodeBudget::for_ram(&map).nodes(), 16_541);
    let budget = NodeBudget::for_image(&map, 6);
    assert_eq!(budget.nodes(), 7);
    let reader = RadixReader::open(&a, map, PhysAddr::new(p(0)), Forgetful, budget).unwrap();
    let mut walk = reader.walk();
    let err = walk.by_ref().find_map(Result::err).unwrap();
    assert_eq!(err, WalkError::BudgetExceeded { budget });
    assert!(err.to_string().contains('7'), "{err}");
    assert_eq!(walk.nodes(), 8);
}

/// Writes a raw chunk header: `next`, `order`, `num_elms`.
fn header(a: &VecArena, at: u64, next: u64, order: u32, num_elms: u32) {
    a.write_word(PhysAddr::new(at), 0, next).unwrap();
    a.write_word(
        PhysAddr::new(at),
        1,
        u64::from(order) | u64::from(num_elms) << 32,
    )
    .unwrap();
}

fn small_ram() -> [PhysRange; 1] {
    [PhysRange::new(PhysAddr::ZERO, PhysAddr::new(1 << 30)).unwrap()]
}

#[test]
fn looping_chunk_list_stops_at_the_cycle_and_a_long_one_at_the_chunk_budget() {
    let a = VecArena::new(PhysAddr::new(BASE), 8);
    for i in 0..8 {
        a.claim(PhysAddr::new(p(i))).unwrap();
    }
    let ram = small_ram();
    let map = RamMap::new(&ram, &[]).unwrap();
    // A loop of three: the first chunk entered again.
    for i in 0..3 {
        header(&a, p(i), p((i + 1) % 3), 0, 0);
    }
    let reader = V1Reader::new(&a, map, BitmapSize::Page);
    let mut it = reader.blocks(PhysAddr::new(p(0)));
    assert_eq!(
        it.next(),
        Some(Err(V1Error::ChunkCycle {
            chunk: PhysAddr::new(p(0))
        }))
    );
    assert_eq!(it.work().chunks, 3);
    // Six chunks in a row, from an image holding 3 pages: at most 4
    // chunks (a fourth on a zero page would end the list), the fifth is
    // past the budget the error names.
    for i in 0..6 {
        header(&a, p(i), if i == 5 { 0 } else { p(i + 1) }, 0, 0);
    }
    let reader = V1Reader::new(&a, map, BitmapSize::Page).with_present_pages(3);
    assert_eq!(reader.chunk_budget(), 4);
    let err = reader.check(PhysAddr::new(p(0)), |_| ()).unwrap_err();
    assert_eq!(
        err,
        V1Error::ChunkBudget {
            chunk: PhysAddr::new(p(4)),
            limit: 4
        }
    );
    assert_eq!(
        err.to_string(),
        format!("chunk {:#x} is past the budget of 4 chunks", p(4))
    );
}

#[test]
fn num_elms_of_all_ones_reads_no_entry() {
    let a = VecArena::new(PhysAddr::new(BASE), 2);
    a.claim(PhysAddr::new(p(0))).unwrap();
    header(&a, p(0), 0, 0, 0xffff_ffff);
    let ram = small_ram();
    let map = RamMap::new(&ram, &[]).unwrap();
    let mut it = V1Reader::new(&a, map, BitmapSize::Page).blocks(PhysAddr::new(p(0)));
    let err = it.next().unwrap().unwrap_err();
    assert_eq!(
        err,
        V1Error::TooManyEntries {
            chunk: PhysAddr::new(p(0)),
            num_elms: 0xffff_ffff,
            max: 255
        }
    );
    assert_eq!(
        err.to_string(),
        format!(
            "chunk {:#x} claims 4294967295 entries, at most 255 fit",
            p(0)
        )
    );
    assert_eq!((it.work().chunks, it.work().entries), (1, 0));
}
