//! A loom model of the lock-free radix tree writer (`RadixTree`): every
//! interleaving (within loom's preemption bound) of concurrent preserves
//! and unpreserves on shared nodes, with the real writer code, whose atomics
//! are loom's under `--cfg loom` (crates/kho/src/mem.rs).
//!
//!     RUST_BACKTRACE=0 RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom \
//!         cargo test --release -p kho --test loom
//!
//! (`LOOM_MAX_PREEMPTIONS` overrides the bound set below; with backtraces
//! on, a failing model overflows loom's coroutine stack and hangs.)
//! Without `--cfg loom` this file is empty.
//!
//! The models, each checked against what a sequential run gives:
//! - two preservers of neighbouring pages in an empty tree: they race to
//!   install every node of the path (root entry, levels 4..1, the leaf),
//!   then `fetch_or` the same leaf word; every block is present, the tree
//!   holds exactly one page per level and the losers freed theirs;
//! - two preservers of the same block: exactly one wins, the other gets
//!   `AlreadyPreserved`;
//! - three threads, two preservers on a missing leaf and an unpreserver on
//!   its sibling leaf under the same level-1 node: the result (which blocks
//!   are present, how many pages) equals the sequential run's.
#![cfg(loom)]

use std::sync::atomic::{AtomicUsize as StdUsize, Ordering as StdOrdering};

use kho::{
    AtomicPage, Block, MemError, Order, PageAlloc, PageMap, PhysAddr, RadixError, RadixTree,
};
use loom::sync::Arc;
use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::thread;

const BASE: u64 = 0x100_0000;
const PAGES: usize = 12;

/// Pages for the model: a bump allocator over a fixed pool (loom atomics,
/// made inside each execution), so the page a loser frees is never handed
/// out again and every page is accounted for.
struct Pool {
    pages: Vec<AtomicPage>,
    next: AtomicUsize,
    freed: StdUsize,
}

impl Pool {
    fn new() -> Self {
        Self {
            pages: (0..PAGES).map(|_| AtomicPage::new()).collect(),
            next: AtomicUsize::new(0),
            freed: StdUsize::new(0),
        }
    }

    fn allocated(&self) -> usize {
        self.next.load(Ordering::Relaxed)
    }

    fn freed(&self) -> usize {
        self.freed.load(StdOrdering::Relaxed)
    }
}

impl PageAlloc for Pool {
    fn alloc_zeroed_page(&self) -> Result<PhysAddr, MemError> {
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        if i >= PAGES {
            return Err(MemError::OutOfMemory);
        }
        Ok(PhysAddr::new(BASE + i as u64 * 4096))
    }

    fn free_page(&self, phys: PhysAddr) {
        assert!(self.page(phys).is_ok(), "freeing {phys}, not a pool page");
        self.freed.fetch_add(1, StdOrdering::Relaxed);
    }
}

impl PageMap for Pool {
    fn page(&self, phys: PhysAddr) -> Result<&AtomicPage, MemError> {
        let i = phys
            .as_u64()
            .checked_sub(BASE)
            .map(|o| (o / 4096) as usize)
            .filter(|&i| i < PAGES && phys.as_u64() % 4096 == 0)
            .ok_or(MemError::NotMapped { phys })?;
        Ok(&self.pages[i])
    }
}

fn block(phys: u64) -> Block {
    Block::new(PhysAddr::new(phys), Order::ZERO).unwrap()
}

/// Runs `f` under every interleaving within the preemption bound (3
/// unless `LOOM_MAX_PREEMPTIONS` says otherwise); prints how many.
fn model(name: &str, f: impl Fn() + Sync + Send + 'static) {
    let mut b = loom::model::Builder::new();
    if b.preemption_bound.is_none() {
        b.preemption_bound = Some(3);
    }
    let runs = std::sync::Arc::new(StdUsize::new(0));
    let count = runs.clone();
    b.check(move || {
        count.fetch_add(1, StdOrdering::Relaxed);
        f();
    });
    eprintln!("{name}: {} interleavings", runs.load(StdOrdering::Relaxed));
}

/// What a tree holds, for comparing with a sequential run.
fn state(tree: &RadixTree<Pool>, blocks: &[Block]) -> (Vec<bool>, u64, u64) {
    let present = blocks
        .iter()
        .map(|&b| tree.is_preserved(b).unwrap())
        .collect();
    let s = tree.stats();
    (present, s.inner_nodes, s.leaves)
}

#[test]
fn two_preservers_race_to_install_every_node() {
    // Pages 0x4000_0000 and 0x4000_1000: one path, one leaf, one word.
    let (a, b) = (block(0x4000_0000), block(0x4000_1000));
    model("install race", move || {
        let tree = Arc::new(RadixTree::new(Pool::new()).unwrap());
        let t = tree.clone();
        let h = thread::spawn(move || t.preserve(a));
        let rb = tree.preserve(b);
        let ra = h.join().unwrap();
        assert_eq!((ra, rb), (Ok(()), Ok(())));
        assert!(tree.is_preserved(a).unwrap() && tree.is_preserved(b).unwrap());
        // Root + levels 4..1, and one leaf: each install raced once.
        let s = tree.stats();
        assert_eq!((s.inner_nodes, s.leaves), (5, 1));
        let pool = tree.mem();
        assert_eq!(pool.allocated() - pool.freed(), 6, "a loser kept its page");
    });
}

#[test]
fn two_preservers_of_one_block_one_wins() {
    let x = block(0x4000_0000);
    let other = block(0x4000_5000);
    model("same block", move || {
        let tree = Arc::new(RadixTree::new(Pool::new()).unwrap());
        // The path exists: the race is on the leaf bit alone.
        tree.preserve(other).unwrap();
        let t = tree.clone();
        let h = thread::spawn(move || t.preserve(x));
        let r1 = tree.preserve(x);
        let r2 = h.join().unwrap();
        let wins = [r1, r2].iter().filter(|r| r.is_ok()).count();
        assert_eq!(wins, 1, "{r1:?} {r2:?}");
        assert!(
            [r1, r2].contains(&Err(RadixError::AlreadyPreserved { block: x })),
            "{r1:?} {r2:?}"
        );
        assert!(tree.is_preserved(x).unwrap() && tree.is_preserved(other).unwrap());
    });
}

#[test]
fn two_preservers_and_an_unpreserver_equal_the_sequential_run() {
    // p0 in leaf 0 of a level-1 node; b1 and b2 in its missing sibling
    // leaf (2^15 pages = 128 MiB further).
    let p0 = block(0x4000_0000);
    let b1 = block(0x4800_0000);
    let b2 = block(0x4800_1000);
    let blocks = [p0, b1, b2];
    // The sequential run, in a model of its own (loom's atomics exist only
    // inside one), handed out through a std mutex.
    let seq = std::sync::Arc::new(std::sync::Mutex::new(None));
    let out = seq.clone();
    loom::model(move || {
        let tree = RadixTree::new(Pool::new()).unwrap();
        tree.preserve(p0).unwrap();
        tree.preserve(b1).unwrap();
        tree.preserve(b2).unwrap();
        tree.unpreserve(p0).unwrap();
        *out.lock().unwrap() = Some(state(&tree, &blocks));
    });
    let sequential = seq.lock().unwrap().clone().unwrap();
    assert_eq!(sequential, (vec![false, true, true], 5, 2));
    model("three threads", move || {
        let tree = Arc::new(RadixTree::new(Pool::new()).unwrap());
        tree.preserve(p0).unwrap();
        let (t1, t2) = (tree.clone(), tree.clone());
        let h1 = thread::spawn(move || t1.preserve(b1));
        let h2 = thread::spawn(move || t2.preserve(b2));
        let r0 = tree.unpreserve(p0);
        assert_eq!(
            (r0, h1.join().unwrap(), h2.join().unwrap()),
            (Ok(()), Ok(()), Ok(()))
        );
        assert_eq!(state(&tree, &blocks), sequential);
        let pool = tree.mem();
        assert_eq!(pool.allocated() - pool.freed(), 7, "a loser kept its page");
    });
}
