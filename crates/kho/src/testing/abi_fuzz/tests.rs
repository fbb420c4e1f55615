//! The seeds of `fuzz/corpus/vmalloc/` and `fuzz/corpus/luo/`, built here
//! from the writers so each one's meaning and expected outcome are written
//! down, and random mutations of them, which must never panic.
//!
//! `KHO_WRITE_SEEDS=1 cargo test -p kho --lib abi_fuzz` rewrites the files.

extern crate std;

use alloc::vec::Vec;
use std::path::PathBuf;

use proptest::prelude::*;
use zerocopy::IntoBytes;

use super::*;
use crate::addr::PhysAddr;
use crate::luo::{LuoCompat, LuoError};
use crate::phys::PageWriter;
use crate::radix::RadixTree;
use crate::testing::luo_fixture::{handover, poke};
use crate::vmalloc::{KhoVmalloc, VmallocError, write_vmalloc_bytes};

fn index(p: PhysAddr) -> u8 {
    u8::try_from((p.as_u64() - ARENA_BASE) / 4096).unwrap()
}

fn vmalloc_seed(root: u8, desc: KhoVmalloc, m: &Machine) -> Vec<u8> {
    let mut v = alloc::vec![root];
    v.extend_from_slice(desc.as_bytes());
    v.extend_from_slice(&m.records());
    v
}

fn luo_seed(root: u8, blob: u8, size: u16, m: &Machine) -> Vec<u8> {
    let mut v = alloc::vec![root, blob];
    v.extend_from_slice(&size.to_le_bytes());
    v.extend_from_slice(&m.records());
    v
}

type VCheck = fn(&VmallocOutcome) -> bool;
type LCheck = fn(&LuoOutcome) -> bool;

fn vmalloc_seeds() -> Vec<(&'static str, Vec<u8>, VCheck)> {
    let m = Machine::new();
    let tree = RadixTree::new(&m.arena).unwrap();
    let w = PageWriter::new(&tree);
    // Mostly zero: the seed holds only non-zero words.
    let data: Vec<u8> = (0..3 * 4096).map(|i| u8::from(i % 4096 == 0)).collect();
    let out = write_vmalloc_bytes(&w, &data).unwrap();
    let root = index(tree.root());
    let valid = vmalloc_seed(root, out.desc, &m);
    // Unterminated: fill the chunk's free slots.
    let m2 = Machine::from_records(&valid[17..]);
    for s in 4..512 {
        m2.arena
            .write_word(out.chunks[0], s, out.blocks[0].phys().as_u64())
            .unwrap();
    }
    let unterminated = vmalloc_seed(0xff, KhoVmalloc::new(out.chunks[0], 511, 1, 0), &m2);
    let cycle = {
        let m3 = Machine::from_records(&unterminated[17..]);
        m3.arena
            .write_word(out.chunks[0], 0, out.chunks[0].as_u64())
            .unwrap();
        vmalloc_seed(0xff, KhoVmalloc::new(out.chunks[0], 511 * 4, 1, 0), &m3)
    };
    let short = vmalloc_seed(root, KhoVmalloc::new(out.chunks[0], 4, 1, 0), &m);
    alloc::vec![
        (
            "valid-3-pages",
            valid,
            (|o| o.tracked && o.blocks.as_ref().map(|b| b.len()) == Ok(3)) as VCheck
        ),
        ("unterminated", unterminated, |o| matches!(
            o.blocks,
            Err(VmallocError::Unterminated { .. })
        )),
        ("cycle", cycle, |o| matches!(
            o.blocks,
            Err(VmallocError::ChunkCycle { .. })
        )),
        ("count-short", short, |o| matches!(
            o.blocks,
            Err(VmallocError::CountShort {
                found: 3,
                total_pages: 4
            })
        )),
    ]
}

fn luo_seeds() -> Vec<(&'static str, Vec<u8>, LCheck)> {
    let (m, w) = handover(LuoCompat::V5);
    let root = index(w.root);
    let hdr = index(w.luo.header);
    let valid = luo_seed(root, hdr, 32, &m);
    let (mb, wb) = handover(LuoCompat::V5Block);
    let valid_block = luo_seed(index(wb.root), index(wb.luo.header), 40, &mb);
    let truncated = luo_seed(root, hdr, 24, &m);
    let (ms, ws) = handover(LuoCompat::V5);
    // The guest_memfd's folio 1 -> the memfd's first folio.
    let pfn = ws.memfd_folios[0].block.pfn().as_u64();
    poke(&ms, ws.gmem.array.blocks[0].phys(), 16, &pfn.to_le_bytes());
    let shared = luo_seed(index(ws.root), index(ws.luo.header), 32, &ms);
    let (mc, wc) = handover(LuoCompat::V5);
    let sb = wc.luo.session_blocks[0];
    poke(&mc, sb, 0, &sb.as_u64().to_le_bytes());
    let cycle = luo_seed(index(wc.root), index(wc.luo.header), 32, &mc);
    alloc::vec![
        (
            "valid-v5",
            valid,
            (|o| o.state.as_ref().is_ok_and(|s| s.sessions.len() == 2)
                && o.report.as_ref().is_some_and(|r| r.findings.is_empty())) as LCheck
        ),
        ("valid-v5-block", valid_block, |o| o
            .state
            .as_ref()
            .is_ok_and(|s| s.header.compat == LuoCompat::V5Block)),
        ("truncated-blob", truncated, |o| matches!(
            o.state,
            Err(LuoError::Truncated { size: 24, .. })
        )),
        ("two-files-share-a-folio", shared, |o| o
            .report
            .as_ref()
            .is_some_and(|r| r.findings.iter().any(|f| matches!(
                f,
                crate::crosscheck::Finding::Overlap { .. }
            )))),
        ("session-chain-cycle", cycle, |o| matches!(
            o.state,
            Err(LuoError::Block { .. })
        )),
    ]
}

fn corpus_dir(target: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target)
}

fn sync(target: &str, name: &str, bytes: &[u8]) {
    let dir = corpus_dir(target);
    let path = dir.join(name);
    if std::env::var_os("KHO_WRITE_SEEDS").is_some() {
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(&path, bytes).unwrap();
    } else {
        let on_disk = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(
            on_disk, bytes,
            "{name}: run with KHO_WRITE_SEEDS=1 to rewrite"
        );
    }
}

#[test]
fn vmalloc_seeds_match_the_corpus_and_their_expected_outcomes() {
    for (name, bytes, check) in vmalloc_seeds() {
        let o = run_vmalloc(&bytes).unwrap();
        assert!(check(&o), "{name}: {o:?}");
        sync("vmalloc", name, &bytes);
    }
}

#[test]
#[cfg_attr(
    miri,
    ignore = "heavy for Miri: 1 ms or more natively, thousands of times that interpreted"
)]
fn luo_seeds_match_the_corpus_and_their_expected_outcomes() {
    for (name, bytes, check) in luo_seeds() {
        let o = run_luo(&bytes).unwrap();
        assert!(check(&o), "{name}: {:?} {:?}", o.state, o.report);
        sync("luo", name, &bytes);
    }
}

#[test]
fn short_headers_are_ignored() {
    assert!(run_vmalloc(&[0; 16]).is_none());
    assert!(run_luo(&[0; 3]).is_none());
    vmalloc_one(&[]);
    luo_one(&[]);
}

fn record() -> impl Strategy<Value = [u8; 12]> {
    let value = prop_oneof![
        3 => (0u64..64).prop_map(|v| (1u8, v)),
        2 => any::<u64>().prop_map(|v| (0, v)),
        1 => (0u64..64).prop_map(|s| (0, 1u64 << s)),
        1 => (0u64..8).prop_map(|v| (0, v)),
    ];
    (0u8..64, 0u16..40, value).prop_map(|(page, word, (kind, value))| {
        let mut r = [0u8; 12];
        r[0] = page;
        r[1..3].copy_from_slice(&word.to_le_bytes());
        r[3] = kind;
        r[4..].copy_from_slice(&value.to_le_bytes());
        r
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(if cfg!(miri) { 4 } else { 96 }))]

    #[test]
    fn mutated_luo_seeds_never_panic(
        seed in 0usize..5,
        records in prop::collection::vec(record(), 1..24),
    ) {
        let mut bytes = luo_seeds().swap_remove(seed).1;
        for r in &records {
            bytes.extend_from_slice(r);
        }
        luo_one(&bytes);
    }

    #[test]
    fn mutated_vmalloc_seeds_never_panic(
        seed in 0usize..4,
        header in prop::collection::vec(any::<u8>(), 17),
        keep_header in any::<bool>(),
        records in prop::collection::vec(record(), 0..24),
    ) {
        let mut bytes = vmalloc_seeds().swap_remove(seed).1;
        if !keep_header {
            bytes[..17].copy_from_slice(&header);
        }
        for r in &records {
            bytes.extend_from_slice(r);
        }
        vmalloc_one(&bytes);
    }
}
