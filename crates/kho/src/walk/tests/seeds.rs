//! The fuzz corpus seeds of `fuzz/corpus/walk/`, built here so each one's
//! meaning and expected outcome are written down; and a consistency
//! property: on any input, the walk and the coalescer agree.
//!
//! `KHO_WRITE_SEEDS=1 cargo test -p kho --lib seeds` rewrites the files.

use alloc::string::String;
use alloc::vec::Vec;
use std::path::PathBuf;

use proptest::prelude::*;

use crate::key::KeyError;
use crate::testing::walk_input::{ARENA_BASE, Outcome, run};
use crate::testing::{block, merged, sorted_by_key};
use crate::walk::{OrderCounts, WalkError};

/// RAM `[0x2000, 2^40)`.
const RAM_1T: u8 = 15;
/// RAM `[0x2000, 2^63)`.
const RAM_HUGE: u8 = 38;

struct Seed {
    header: [u8; 4],
    records: Vec<[u8; 12]>,
}

impl Seed {
    fn new(root: u8, ram: u8, forbidden: u8, budget: u8) -> Self {
        Self {
            header: [root, ram, forbidden, budget],
            records: Vec::new(),
        }
    }

    fn rec(mut self, page: u8, word: u16, kind: u8, value: u64) -> Self {
        let mut r = [0u8; 12];
        r[0] = page;
        r[1..3].copy_from_slice(&word.to_le_bytes());
        r[3] = kind;
        r[4..].copy_from_slice(&value.to_le_bytes());
        self.records.push(r);
        self
    }

    /// Entry `word` of `page` points to arena page `to`.
    fn ptr(self, page: u8, word: u16, to: u8) -> Self {
        self.rec(page, word, 1, u64::from(to))
    }

    fn raw(self, page: u8, word: u16, value: u64) -> Self {
        self.rec(page, word, 0, value)
    }

    fn bytes(&self) -> Vec<u8> {
        let mut v = self.header.to_vec();
        for r in &self.records {
            v.extend_from_slice(r);
        }
        v
    }

    /// Order 0 at 0x1234_5000: root 2 -> 1 -> 2 -> 3 -> 4, entry 2 -> leaf
    /// 5, word 141 bit 5.
    fn order0(self) -> Self {
        self.ptr(0, 2, 1)
            .ptr(1, 0, 2)
            .ptr(2, 0, 3)
            .ptr(3, 0, 4)
            .ptr(4, 2, 5)
            .raw(5, 141, 1 << 5)
    }

    /// Order 9 at 0x4000_0000: root 0 -> 6, entry 2 -> 7 -> 8 -> 9 -> leaf
    /// 10, word 8 bit 0.
    fn order9(self) -> Self {
        self.ptr(0, 0, 6)
            .ptr(6, 2, 7)
            .ptr(7, 0, 8)
            .ptr(8, 0, 9)
            .ptr(9, 0, 10)
            .raw(10, 8, 1)
    }

    /// The spine root -> 1 -> 2 -> 3 -> 4 -> leaf 5, all through entry 0.
    fn spine(self) -> Self {
        self.ptr(0, 0, 1)
            .ptr(1, 0, 2)
            .ptr(2, 0, 3)
            .ptr(3, 0, 4)
            .ptr(4, 0, 5)
    }
}

type Check = fn(&Outcome) -> bool;

fn page(n: u64) -> u64 {
    ARENA_BASE + n * 0x1000
}

fn seeds() -> Vec<(&'static str, Seed, Check)> {
    alloc::vec![
        ("valid-order0", Seed::new(0, RAM_1T, 0, 0).order0(), |o| {
            o.walk == Ok(alloc::vec![block(0x1234_5000, 0)])
        }),
        (
            "valid-mixed",
            Seed::new(0, RAM_1T, 0, 0)
                .order0()
                .order9()
                .ptr(4, 8, 11)
                .raw(11, 8, 0b11),
            |o| {
                o.walk
                    == Ok(alloc::vec![
                        block(0x4000_0000, 9),
                        block(0x1234_5000, 0),
                        block(0x4020_0000, 0),
                        block(0x4020_1000, 0),
                    ])
                    && o.coalesce.as_ref().map(|c| c.0.len()) == Ok(2)
            },
        ),
        (
            "valid-dense-leaf",
            (0..128).fold(
                Seed::new(0, RAM_1T, 0, 0)
                    .ptr(0, 2, 1)
                    .ptr(1, 0, 2)
                    .ptr(2, 0, 3)
                    .ptr(3, 0, 4)
                    .ptr(4, 1, 5),
                |s, w| s.raw(5, w, !0),
            ),
            |o| o
                .coalesce
                .as_ref()
                .map(|c| (c.0.len(), c.1.counts().total()))
                == Ok((1, 8192)),
        ),
        (
            "valid-spine-leaf",
            Seed::new(0, RAM_HUGE, 0, 0).spine().raw(5, 256, 1 << 1),
            |o| o.walk == Ok(alloc::vec![block(1 << 50, 38)]),
        ),
        (
            "cycle",
            Seed::new(0, RAM_1T, 0, 0).order0().ptr(4, 3, 0),
            |o| { matches!(o.walk, Err(WalkError::NodeReachedTwice { .. })) }
        ),
        (
            "shared",
            Seed::new(0, RAM_1T, 0, 0).order0().ptr(0, 3, 1),
            |o| { matches!(o.walk, Err(WalkError::NodeReachedTwice { .. })) }
        ),
        (
            "key-zero",
            Seed::new(0, RAM_1T, 0, 0).spine().raw(5, 0, 1),
            |o| {
                matches!(
                    o.walk,
                    Err(WalkError::InvalidKey {
                        error: KeyError::Zero,
                        ..
                    })
                )
            }
        ),
        (
            "key-one",
            Seed::new(0, RAM_1T, 0, 0).spine().raw(5, 0, 2),
            |o| {
                matches!(
                    o.walk,
                    Err(WalkError::InvalidKey {
                        error: KeyError::OrderTooLarge { .. },
                        ..
                    })
                )
            }
        ),
        (
            "root-entry-4",
            Seed::new(0, RAM_1T, 0, 0).order0().ptr(0, 4, 3),
            |o| { matches!(o.walk, Err(WalkError::RootEntryBeyond3 { .. })) }
        ),
        (
            "overlap",
            Seed::new(0, RAM_1T, 0, 0)
                .order9()
                .ptr(0, 2, 1)
                .ptr(1, 0, 2)
                .ptr(2, 0, 3)
                .ptr(3, 0, 4)
                .ptr(4, 8, 5)
                .raw(5, 0, 0b10),
            |o| {
                let e = Err(WalkError::Overlap {
                    covering: block(0x4000_0000, 9),
                    covered: block(0x4000_1000, 0),
                });
                o.walk == e && o.coalesce.as_ref().err() == e.as_ref().err()
            },
        ),
        (
            "child-unaligned",
            Seed::new(0, RAM_1T, 0, 0).order0().raw(4, 2, page(5) + 16),
            |o| matches!(o.walk, Err(WalkError::ChildUnaligned { .. })),
        ),
        (
            "child-outside-ram",
            Seed::new(0, RAM_1T, 0, 0).order0().raw(4, 2, 1 << 41),
            |o| matches!(o.walk, Err(WalkError::ChildOutsideRam { .. })),
        ),
        (
            "child-forbidden",
            Seed::new(0, RAM_1T, (5 << 4) | 1, 0).order0(),
            |o| matches!(o.walk, Err(WalkError::ChildForbidden { .. })),
        ),
        ("budget", Seed::new(0, RAM_1T, 0, 3).order0(), |o| {
            matches!(o.walk, Err(WalkError::BudgetExceeded { .. }))
        }),
        (
            "root-unaligned",
            Seed::new(0x80, RAM_1T, 0, 0).order0(),
            |o| { matches!(o.walk, Err(WalkError::RootUnaligned { .. })) }
        ),
        (
            "root-outside-ram",
            Seed::new(0x40, RAM_1T, 0, 0).order0(),
            |o| { matches!(o.walk, Err(WalkError::RootOutsideRam { .. })) }
        ),
        (
            "unmapped",
            Seed::new(0, RAM_1T, 0, 0).order0().raw(4, 2, 0x200_0000),
            |o| matches!(o.walk, Err(WalkError::PageMap(_))),
        ),
        ("block-outside-ram", Seed::new(0, 0, 0, 0).order0(), |o| {
            matches!(o.walk, Err(WalkError::BlockOutsideRam { .. }))
        }),
        (
            "block-in-ram-hole",
            Seed::new(0, RAM_1T | 0x80, 0, 0)
                .ptr(0, 2, 1)
                .ptr(1, 0, 2)
                .ptr(2, 0, 3)
                .ptr(3, 0, 4)
                .ptr(4, 0, 5)
                .raw(5, 32, 1),
            |o| o.walk
                == Err(WalkError::BlockOutsideRam {
                    block: block(0x80_0000, 0)
                }),
        ),
    ]
}

fn corpus_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/walk")
}

/// The walk and the coalescer agree: both fail, or both succeed with the
/// walk sorted by key and the ranges equal to the walk's blocks merged.
fn consistent(o: &Outcome) -> Result<(), String> {
    match (&o.walk, &o.coalesce) {
        (Err(_), Err(_)) => Ok(()),
        (Ok(blocks), Ok((ranges, summary))) => {
            if &sorted_by_key(blocks) != blocks {
                return Err(alloc::format!("walk not in key order: {blocks:?}"));
            }
            if &merged(blocks) != ranges {
                return Err(alloc::format!("ranges {ranges:?} != merged {blocks:?}"));
            }
            let mut counts = OrderCounts::ZERO;
            for b in blocks {
                counts.add(b.order(), 1);
            }
            if summary.counts() != &counts {
                return Err(alloc::format!("counts {summary:?}"));
            }
            Ok(())
        }
        (w, c) => Err(alloc::format!("walk {w:?} but coalesce {c:?}")),
    }
}

#[test]
#[cfg_attr(
    miri,
    ignore = "heavy for Miri: 1 ms or more natively, thousands of times that interpreted"
)]
fn seeds_match_the_corpus_and_their_expected_outcomes() {
    let write = std::env::var_os("KHO_WRITE_SEEDS").is_some();
    for (name, seed, check) in seeds() {
        let bytes = seed.bytes();
        let outcome = run(&bytes).unwrap();
        assert!(check(&outcome), "{name}: {outcome:?}");
        consistent(&outcome).unwrap_or_else(|e| panic!("{name}: {e}"));
        let path = corpus_dir().join(name);
        if write {
            std::fs::write(&path, &bytes).unwrap();
        } else {
            let on_disk =
                std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert_eq!(
                on_disk, bytes,
                "{name}: run with KHO_WRITE_SEEDS=1 to rewrite"
            );
        }
    }
}

/// Structured random inputs: pointers to arena pages on the words a tree
/// uses, and raw values (bit patterns, near-valid pointers).
fn record() -> impl Strategy<Value = [u8; 12]> {
    let word = prop_oneof![
        4 => prop::sample::select(alloc::vec![0u16, 1, 2, 3, 4, 8, 32, 141, 256, 511]),
        1 => any::<u16>(),
    ];
    let value = prop_oneof![
        3 => (0u64..16).prop_map(|v| (1, v)),
        2 => any::<u64>().prop_map(|v| (0, v)),
        1 => (0u64..64).prop_map(|s| (0, 1u64 << s)),
        1 => Just((0, u64::MAX)),
        1 => (0u64..20).prop_map(|p| (0, ARENA_BASE + p * 0x1000 + (p & 1) * 8)),
    ];
    (0u8..16, word, value).prop_map(|(page, word, (kind, value))| {
        let mut r = [0u8; 12];
        r[0] = page;
        r[1..3].copy_from_slice(&word.to_le_bytes());
        r[3] = kind;
        r[4..].copy_from_slice(&value.to_le_bytes());
        r
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(if cfg!(miri) { 4 } else { 512 }))]

    #[test]
    fn walk_and_coalesce_agree_on_any_input(
        header in prop::array::uniform4(any::<u8>()),
        records in prop::collection::vec(record(), 0..40),
    ) {
        let mut bytes = header.to_vec();
        for r in &records {
            bytes.extend_from_slice(r);
        }
        let outcome = run(&bytes).unwrap();
        prop_assert!(consistent(&outcome).is_ok(), "{:?}", consistent(&outcome));
    }

    #[test]
    fn mutated_seeds_never_panic_and_agree(
        which in 0usize..19,
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
    ) {
        let all = seeds();
        let mut bytes = all[which % all.len()].1.bytes();
        for (i, x) in flips {
            let i = i.index(bytes.len());
            bytes[i] ^= x;
        }
        if let Some(outcome) = run(&bytes) {
            prop_assert!(consistent(&outcome).is_ok(), "{:?}", consistent(&outcome));
        }
    }
}
