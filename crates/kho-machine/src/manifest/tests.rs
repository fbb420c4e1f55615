// The module's total-reader lints do not bind its tests.
#![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::as_conversions)]

use super::*;
use crate::testing::{MIB, block};

fn mem() -> PhysMem {
    crate::testing::mem(64 * MIB)
}

fn sample(m: &PhysMem) -> Manifest {
    let seed = 42;
    let blocks = [
        block(4 * MIB, 0),
        block(4 * MIB + 0x4000, 2),
        block(8 * MIB, 9),
    ];
    Manifest {
        seed,
        entries: blocks
            .iter()
            .map(|b| ManifestEntry {
                block: *b,
                checksum: fill_pattern(m, *b, seed).unwrap(),
            })
            .collect(),
    }
}

#[test]
fn checksum_and_pattern_are_fixed() {
    // Golden values: a change here changes every stored manifest.
    assert_eq!(checksum_words([]).as_u64(), checksum_words([]).as_u64());
    assert_ne!(checksum_words([1, 2]), checksum_words([2, 1]));
    assert_ne!(checksum_words([0]), checksum_words([0, 0]));
    assert_ne!(checksum_bytes(&[1]), checksum_bytes(&[1, 0]));
    let p = Pfn::new(0x1234).unwrap();
    assert_ne!(pattern_word(p, 1, 0), pattern_word(p, 1, 1));
    assert_ne!(pattern_word(p, 1, 0), pattern_word(p, 2, 0));
    let m = mem();
    let b = block(4 * MIB, 0);
    let c = fill_pattern(&m, b, 7).unwrap();
    assert_eq!(block_checksum(&m, b).unwrap(), c);
    assert_eq!(
        m.page_at(b.phys()).unwrap().load(3),
        Some(pattern_word(b.pfn(), 7, 3))
    );
}

#[test]
fn header_golden_bytes() {
    let blob = Manifest::default().to_bytes();
    let payload = &blob[32..];
    assert_eq!(payload, &[0, 0]); // postcard: seed 0, zero entries
    let mut expect = b"KHOMANIF".to_vec();
    expect.extend_from_slice(&1u32.to_le_bytes());
    expect.extend_from_slice(&0u32.to_le_bytes());
    expect.extend_from_slice(&2u64.to_le_bytes());
    expect.extend_from_slice(&checksum_bytes(&[0, 0]).as_u64().to_le_bytes());
    assert_eq!(&blob[..32], expect.as_slice());
}

#[test]
fn round_trip_through_memory() {
    let m = mem();
    let man = sample(&m);
    let at = PhysAddr::new(16 * MIB);
    let region = man.write(&m, at).unwrap();
    let page = PhysRange::from_start_size(at, PAGE_SIZE).unwrap();
    assert!(page.contains_range(region));
    assert_eq!(Manifest::read(&m, page).unwrap(), man);
    assert_eq!(man.preserved_bytes(), 4096 + 4 * 4096 + 512 * 4096);
    let v = man.verify(&m);
    assert_eq!((v.verified_bytes, v.lost_bytes), (man.preserved_bytes(), 0));
}

#[test]
fn each_error() {
    let m = mem();
    let good = sample(&m).to_bytes();
    let short = &good[..31];
    assert_eq!(
        Manifest::from_bytes(short),
        Err(ManifestError::Truncated { need: 32, have: 31 })
    );
    let mut b = good.clone();
    b[0] ^= 1;
    assert!(matches!(
        Manifest::from_bytes(&b),
        Err(ManifestError::BadMagic { .. })
    ));
    let mut b = good.clone();
    b[8] = 2;
    assert_eq!(
        Manifest::from_bytes(&b),
        Err(ManifestError::BadVersion {
            found: 2,
            expected: 1
        })
    );
    let cut = &good[..good.len() - 1];
    assert!(matches!(
        Manifest::from_bytes(cut),
        Err(ManifestError::Truncated { .. })
    ));
    let mut b = good.clone();
    *b.last_mut().unwrap() ^= 0x10;
    assert!(matches!(
        Manifest::from_bytes(&b),
        Err(ManifestError::BadChecksum { .. })
    ));

    // A payload with a valid checksum that postcard cannot decode.
    let blob = |payload: &[u8]| {
        let mut v = ManifestHeader {
            magic: U64::new(MANIFEST_MAGIC),
            version: U32::new(1),
            reserved: U32::new(0),
            len: U64::new(payload.len() as u64),
            checksum: U64::new(checksum_bytes(payload).as_u64()),
        }
        .as_bytes()
        .to_vec();
        v.extend_from_slice(payload);
        v
    };
    assert!(matches!(
        Manifest::from_bytes(&blob(&[0, 5])),
        Err(ManifestError::Decode { .. })
    ));
    // Misaligned block: pfn 1 of order 1.
    let bad = postcard::to_allocvec(&Wire {
        seed: 0,
        entries: vec![WireEntry {
            pfn: 1,
            order: 1,
            checksum: 0,
        }],
    })
    .unwrap();
    assert_eq!(
        Manifest::from_bytes(&blob(&bad)),
        Err(ManifestError::BadBlock {
            index: 0,
            pfn: 1,
            order: 1
        })
    );
    // A region outside RAM.
    let hole = PhysRange::from_start_size(PhysAddr::new(640 << 10), PAGE_SIZE).unwrap();
    assert!(matches!(
        Manifest::read(&m, hole),
        Err(ManifestError::Mem { .. })
    ));
}

#[test]
fn poison_loses_unpreserved_pages_only() {
    let m = mem();
    let mut man = sample(&m);
    let forgotten = block(12 * MIB, 0);
    man.entries.push(ManifestEntry {
        block: forgotten,
        checksum: fill_pattern(&m, forgotten, man.seed).unwrap(),
    });
    let keep: Vec<PhysRange> = man.entries[..3]
        .iter()
        .map(|e| e.block.range().unwrap())
        .collect();
    let pages = poison(&m, &keep).unwrap();
    assert_eq!(pages, 1);
    let page = m.page_at(forgotten.phys()).unwrap();
    assert_eq!(page.load(0), Some(POISON));
    assert_eq!(page.load(511), Some(POISON | 4088));
    let v = man.verify(&m);
    assert_eq!(v.lost, vec![forgotten]);
    assert_eq!(v.lost_bytes, PAGE_SIZE);
    assert_eq!(v.verified_bytes, man.preserved_bytes() - PAGE_SIZE);
}

#[test]
fn subtract_and_merge() {
    let r = |a: u64, b: u64| PhysRange::new(PhysAddr::new(a), PhysAddr::new(b)).unwrap();
    assert_eq!(
        kho::merge_ranges(vec![r(5, 9), r(0, 2), r(2, 4), r(8, 10)]),
        vec![r(0, 4), r(5, 10)]
    );
    assert_eq!(
        subtract(r(0, 10), &[r(2, 3), r(5, 12)]),
        vec![r(0, 2), r(3, 5)]
    );
    assert_eq!(subtract(r(4, 6), &[r(0, 10)]), vec![]);
}
