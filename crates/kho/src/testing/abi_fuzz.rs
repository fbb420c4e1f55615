//! Fuzz entry points of the kho-v4 / LUO readers ([`vmalloc_one`],
//! [`luo_one`]), and the small machine they, their corpus seeds and the
//! tests run on ([`Machine`]).
//!
//! Both inputs describe a 64-page arena at 16 MiB (all of it RAM) by word
//! stores, then which structure to read:
//!
//! | target    | header bytes | meaning                                                         |
//! |-----------|--------------|-----------------------------------------------------------------|
//! | `vmalloc` | 0            | radix root: arena page `b % 64`; `0xff`: no tracker              |
//! |           | 1 ..= 16     | the `struct kho_vmalloc` descriptor, raw                         |
//! | `luo`     | 0            | radix root: arena page `b % 64`; `0xff`: no tracker              |
//! |           | 1            | the LUO header: arena page `b % 64`; bit 7 misaligns it by 8     |
//! |           | 2 ..= 3      | `blob-size`, u16 LE (0: none, as in kho-v2)                      |
//!
//! then 12-byte records: page (`% 64`), word (u16 LE, `% 512`), kind, value
//! (u64 LE). Kind 1 stores the address of arena page `value % 64` (a valid
//! pointer); any other kind stores `value` as it is. With a root, the tree
//! is walked first; a tree that fails the walk gives no tracker. Then the
//! reader runs to its end and, for `luo`, the cross-layer check.
//!
//! `KHO_WRITE_SEEDS=1 cargo test -p kho --lib abi_fuzz` rewrites the seeds
//! of `fuzz/corpus/{vmalloc,luo}/` from the writers.

#![allow(clippy::result_large_err)]

/// Runs one `vmalloc` input; must never panic.
pub fn vmalloc_one(data: &[u8]) {
    #[cfg(feature = "alloc")]
    {
        let _ = machine::run_vmalloc(data);
    }
    #[cfg(not(feature = "alloc"))]
    let _ = data;
}

/// Runs one `luo` input; must never panic.
pub fn luo_one(data: &[u8]) {
    #[cfg(feature = "alloc")]
    {
        let _ = machine::run_luo(data);
    }
    #[cfg(not(feature = "alloc"))]
    let _ = data;
}

#[cfg(feature = "alloc")]
pub use machine::{
    ARENA_BASE, ARENA_PAGES, LuoOutcome, Machine, VmallocOutcome, run_luo, run_vmalloc,
};

#[cfg(feature = "alloc")]
mod machine {
    use alloc::format;
    use alloc::string::String;
    use alloc::vec::Vec;

    use zerocopy::FromBytes;

    use crate::addr::{Block, PhysAddr, PhysRange};
    use crate::crosscheck::{CrossCheck, CrossReport};
    use crate::luo::LuoError;
    use crate::luo::state::LuoState;
    use crate::mem::{PageMap, RamMap, VecArena};
    use crate::phys::PhysReader;
    use crate::tracker::{PreservedLookup, PreservedSet, TrackerPages};
    use crate::vmalloc::{KhoVmalloc, VmallocBlocks, VmallocError};
    use crate::walk::NodeBudget;

    /// First arena page.
    pub const ARENA_BASE: u64 = 0x100_0000;
    /// Arena pages.
    pub const ARENA_PAGES: usize = 64;

    /// A 64-page arena at 16 MiB that is all the machine's RAM.
    #[derive(Debug)]
    pub struct Machine {
        /// The memory.
        pub arena: VecArena,
        ram: [PhysRange; 1],
    }

    impl Default for Machine {
        fn default() -> Self {
            Self::new()
        }
    }

    impl Machine {
        /// A zeroed machine.
        pub fn new() -> Self {
            let arena = VecArena::new(PhysAddr::new(ARENA_BASE), ARENA_PAGES);
            let ram = [arena.range()];
            Self { arena, ram }
        }

        /// Address of arena page `i % 64`.
        pub fn page(i: u64) -> PhysAddr {
            PhysAddr::new(ARENA_BASE.wrapping_add((i % 64).wrapping_mul(4096)))
        }

        /// The RAM map.
        pub fn ram(&self) -> RamMap<'_> {
            RamMap::new(&self.ram, &[]).unwrap_or_else(|_| unreachable!("one aligned range"))
        }

        /// A reader of the arena.
        pub fn reader(&self) -> PhysReader<'_, '_, VecArena> {
            PhysReader::new(&self.arena, self.ram())
        }

        /// Walks the tree at `root` into a tracker.
        pub fn tracker(&self, root: PhysAddr) -> Option<(PreservedSet, TrackerPages)> {
            PreservedSet::read_tree(&self.arena, self.ram(), root, NodeBudget::new(64)).ok()
        }

        /// The non-zero words, as fuzz records (kind 0).
        pub fn records(&self) -> Vec<u8> {
            let mut out = Vec::new();
            for p in 0..ARENA_PAGES {
                let Ok(page) = self.arena.page(Self::page(p as u64)) else {
                    continue;
                };
                for w in 0..512u16 {
                    let v = page.load(usize::from(w)).unwrap_or(0);
                    if v != 0 {
                        out.push(u8::try_from(p).unwrap_or(0));
                        out.extend_from_slice(&w.to_le_bytes());
                        out.push(0);
                        out.extend_from_slice(&v.to_le_bytes());
                    }
                }
            }
            out
        }

        /// A machine from fuzz records.
        pub fn from_records(records: &[u8]) -> Self {
            let m = Self::new();
            for rec in records.chunks_exact(12) {
                let [page, w0, w1, kind, v @ ..] = rec else {
                    continue;
                };
                let Ok(v) = <[u8; 8]>::try_from(v) else {
                    continue;
                };
                let v = u64::from_le_bytes(v);
                let value = if *kind == 1 {
                    Self::page(v).as_u64()
                } else {
                    v
                };
                let word = usize::from(u16::from_le_bytes([*w0, *w1]) % 512);
                let _ = m
                    .arena
                    .write_word(Self::page(u64::from(*page)), word, value);
            }
            m
        }
    }

    fn tracker_of(m: &Machine, root: u8) -> Option<(PreservedSet, TrackerPages)> {
        (root != 0xff)
            .then(|| m.tracker(Machine::page(u64::from(root))))
            .flatten()
    }

    /// What the vmalloc reader made of an input.
    #[derive(Debug)]
    pub struct VmallocOutcome {
        /// Whether a tracker was walked.
        pub tracked: bool,
        /// The area's blocks, or the first error.
        pub blocks: Result<Vec<Block>, VmallocError>,
    }

    /// Runs a `vmalloc` input; `None` if the header is short.
    pub fn run_vmalloc(data: &[u8]) -> Option<VmallocOutcome> {
        let (header, records) = data.split_at_checked(17)?;
        let (root, desc) = header.split_first()?;
        let desc = KhoVmalloc::read_from_bytes(desc).ok()?;
        let m = Machine::from_records(records);
        let t = tracker_of(&m, *root);
        let tracker = t.as_ref().map(|(s, _)| s as &dyn PreservedLookup);
        let blocks = VmallocBlocks::new(m.reader(), tracker, desc).and_then(|it| {
            it.map(|b| b.map(|b| b.block))
                .collect::<Result<Vec<_>, _>>()
        });
        let _ = blocks.as_ref().map_err(|e| format!("{e} {e:?}"));
        Some(VmallocOutcome {
            tracked: t.is_some(),
            blocks,
        })
    }

    /// What the LUO reader and the cross-layer check made of an input.
    #[derive(Debug)]
    pub struct LuoOutcome {
        /// The state, or the first error.
        pub state: Result<LuoState, LuoError>,
        /// The cross-layer report, when there is a tracker and a state.
        pub report: Option<CrossReport>,
        /// Every error and finding, formatted (exercises `Display`).
        pub text: Vec<String>,
    }

    /// Runs a `luo` input; `None` if the header is short.
    pub fn run_luo(data: &[u8]) -> Option<LuoOutcome> {
        let (header, records) = data.split_at_checked(4)?;
        let [root, blob, s0, s1] = [
            header.first()?,
            header.get(1)?,
            header.get(2)?,
            header.get(3)?,
        ];
        let m = Machine::from_records(records);
        let t = tracker_of(&m, *root);
        let tracker = t.as_ref().map(|(s, _)| s as &dyn PreservedLookup);
        let mut at = Machine::page(u64::from(*blob & 0x7f));
        if blob & 0x80 != 0 {
            at = at.checked_add(8)?;
        }
        let size = u16::from_le_bytes([*s0, *s1]);
        let size = (size != 0).then_some(u64::from(size));
        let state = LuoState::read(m.reader(), tracker, at, size);
        let mut text = Vec::new();
        if let Err(e) = &state {
            text.push(format!("{e} {e:?}"));
        }
        let report = match (&t, &state) {
            (Some((set, pages)), Ok(s)) => {
                let r = CrossCheck::new(set).tracker_pages(pages).luo(s).run();
                for f in &r.findings {
                    text.push(format!("{f}"));
                }
                Some(r)
            }
            _ => None,
        };
        Some(LuoOutcome {
            state,
            report,
            text,
        })
    }
}

#[cfg(all(test, feature = "std"))]
#[allow(
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::unwrap_used,
    clippy::panic,
    clippy::as_conversions
)]
mod tests;
