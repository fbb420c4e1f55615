//! Physical memory: a memfd mapped shared, laid out by a RAM map with holes.
//!
//! Physical address `p` is byte `p` of the memfd. The file spans from 0 to
//! the end of the highest RAM range; holes (the legacy VGA window, the PCI
//! hole below 4 GiB) are simply not RAM and every accessor refuses them. The
//! file is sparse: a page that was never written costs nothing, so a 1 TiB
//! machine is cheap until it is used.
//!
//! The memfd is the only thing the old kernel's process hands to the new
//! one, so both map the same bytes: what one process stores, the other loads.
//!
//! Memory is seen as words of [`AtomicU64`]. Everything the machine keeps in
//! "physical memory" (radix tree pages, struct pages, folio contents) is
//! reached through shared references to atomics, so two views of the same
//! bytes (two threads, or two processes) can never make a data race in the
//! Rust sense, and no `&mut` into the mapping ever exists.
//!
//! This is the one module of the workspace with `unsafe` code: turning the
//! mapping's pointer into slices of atomics. Each block carries its proof.
#![deny(unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};

use kho::{AtomicPage, MemError, PAGE_SIZE, PageMap, PhysAddr, PhysRange};
use memmap2::{MmapOptions, MmapRaw};
use rustix::fs::{FallocateFlags, MemfdFlags, SeekFrom};

/// Bytes in a word.
const WORD: u64 = 8;

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;
/// The largest machine we simulate.
pub(crate) const MAX_MACHINE_SIZE: u64 = 1 << 40;

/// Errors creating or attaching physical memory.
#[derive(Debug, thiserror::Error)]
pub enum ArenaError {
    /// The RAM map is empty, unsorted, overlapping or unaligned.
    #[error("invalid RAM map: {0}")]
    Layout(#[from] kho::RamMapError),
    /// No RAM at all.
    #[error("the RAM map holds no RAM")]
    NoRam,
    /// A machine size outside what we simulate.
    #[error("machine size {size:#x} is outside 16 MiB..=1 TiB or not a multiple of 2 MiB")]
    BadSize {
        /// The size asked for.
        size: u64,
    },
    /// The memfd is smaller than the RAM map says.
    #[error("memfd holds {file:#x} bytes but the RAM map ends at {needed:#x}")]
    ShortFile {
        /// The file's size.
        file: u64,
        /// The end of the highest RAM range.
        needed: u64,
    },
    /// A system call failed.
    #[error("{what}: {source}")]
    Io {
        /// What we were doing.
        what: &'static str,
        /// The error.
        source: std::io::Error,
    },
}

fn io(what: &'static str) -> impl FnOnce(std::io::Error) -> ArenaError {
    move |source| ArenaError::Io { what, source }
}

fn errno(what: &'static str) -> impl FnOnce(rustix::io::Errno) -> ArenaError {
    move |e| ArenaError::Io {
        what,
        source: e.into(),
    }
}

/// The RAM ranges of a machine, sorted, disjoint and page aligned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryLayout {
    ram: Vec<PhysRange>,
}

impl MemoryLayout {
    /// A PC-like layout of `size` bytes of RAM: 0-640 KiB, then 1 MiB up to
    /// 3 GiB, then from 4 GiB on (above the PCI hole) for the rest. A machine
    /// of 3 GiB or less has no high range. The default 16 GiB machine has RAM
    /// at 0-640 KiB, 1 MiB-3 GiB and 4 GiB-17 GiB.
    pub fn pc(size: u64) -> Result<Self, ArenaError> {
        if !(16 * MIB..=MAX_MACHINE_SIZE).contains(&size) || !size.is_multiple_of(2 * MIB) {
            return Err(ArenaError::BadSize { size });
        }
        let r = |a: u64, b: u64| PhysRange::new(PhysAddr::new(a), PhysAddr::new(b)).expect("a < b");
        let mut ram = vec![r(0, 640 * KIB)];
        if size <= 3 * GIB {
            ram.push(r(MIB, size));
        } else {
            ram.push(r(MIB, 3 * GIB));
            ram.push(r(4 * GIB, size + GIB));
        }
        Ok(Self { ram })
    }

    /// A layout from explicit ranges.
    pub fn from_ranges(ram: Vec<PhysRange>) -> Result<Self, ArenaError> {
        kho::RamMap::new(&ram, &[])?;
        if ram.iter().all(|r| r.is_empty()) {
            return Err(ArenaError::NoRam);
        }
        Ok(Self { ram })
    }

    /// The RAM ranges.
    pub fn ram(&self) -> &[PhysRange] {
        &self.ram
    }

    /// Whether `range` (non-empty) lies wholly inside one RAM range.
    pub fn is_ram(&self, range: PhysRange) -> bool {
        let i = self.ram.partition_point(|r| r.end() <= range.start());
        self.ram
            .get(i)
            .is_some_and(|r| r.contains_range(range) && !range.is_empty())
    }

    /// Total bytes of RAM.
    pub fn ram_bytes(&self) -> u64 {
        self.ram.iter().map(|r| r.size()).sum()
    }

    /// One past the highest RAM byte: the memfd's size.
    pub fn end(&self) -> PhysAddr {
        self.ram.last().map(|r| r.end()).unwrap_or(PhysAddr::ZERO)
    }
}

/// The machine's physical memory: a shared mapping of a memfd.
#[derive(Debug)]
pub struct PhysMem {
    fd: OwnedFd,
    map: MmapRaw,
    layout: MemoryLayout,
}

impl PhysMem {
    /// Creates fresh, zeroed (sparse) memory for `layout`.
    pub fn create(layout: MemoryLayout) -> Result<Self, ArenaError> {
        let fd = rustix::fs::memfd_create("kho-ram", MemfdFlags::CLOEXEC)
            .map_err(errno("memfd_create"))?;
        rustix::fs::ftruncate(&fd, layout.end().as_u64()).map_err(errno("ftruncate memfd"))?;
        Self::attach(fd, layout)
    }

    /// Attaches to memory another process created (the new kernel's side of
    /// kexec): the memfd must be at least as large as the layout says.
    pub fn attach(fd: OwnedFd, layout: MemoryLayout) -> Result<Self, ArenaError> {
        let file = rustix::fs::fstat(&fd)
            .map_err(errno("fstat memfd"))?
            .st_size;
        let file = u64::try_from(file).unwrap_or(0);
        let needed = layout.end().as_u64();
        if file < needed || needed == 0 {
            return Err(ArenaError::ShortFile { file, needed });
        }
        let len = usize::try_from(needed).map_err(|_| ArenaError::BadSize { size: needed })?;
        let map = MmapOptions::new()
            .len(len)
            .map_raw(fd.as_raw_fd())
            .map_err(io("mmap memfd"))?;
        Ok(Self { fd, map, layout })
    }

    /// The memfd, to hand to the next kernel.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// The RAM layout.
    pub fn layout(&self) -> &MemoryLayout {
        &self.layout
    }

    /// `count` words starting at `phys` (8-byte aligned), all inside one RAM
    /// range.
    pub fn words(&self, phys: PhysAddr, count: usize) -> Result<&[AtomicU64], MemError> {
        if !phys.is_aligned(WORD) {
            return Err(MemError::Unaligned { phys });
        }
        let bytes = u64::try_from(count).ok().and_then(|c| c.checked_mul(WORD));
        let range = bytes.and_then(|b| PhysRange::from_start_size(phys, b).ok());
        let range = range.ok_or(MemError::NotMapped { phys })?;
        self.check_ram(range)?;
        let start = usize::try_from(phys.as_u64()).map_err(|_| MemError::NotMapped { phys })?;
        // The range lies inside a RAM range, and RAM ranges lie inside the
        // mapping (attach checked layout.end() == map length).
        debug_assert!(start + count * 8 <= self.map.len());
        let ptr = self.map.as_ptr().wrapping_add(start).cast::<AtomicU64>();
        // SAFETY: `start` is 8-byte aligned and the mapping is page aligned,
        // so the pointer is aligned for AtomicU64. `[start, start + 8 * count)`
        // lies inside the mapping (checked against the RAM map just above,
        // whose highest end is the mapping's length, see `attach`). The
        // mapping lives as long as `self`, which bounds the returned
        // lifetime. Any bit pattern is a valid AtomicU64, and every access to
        // the mapping in this program goes through atomics, so shared
        // references to it never race with a non-atomic access.
        let slice = unsafe { std::slice::from_raw_parts(ptr, count) };
        Ok(slice)
    }

    /// The page at `phys` (page aligned, in RAM).
    pub fn page_at(&self, phys: PhysAddr) -> Result<&AtomicPage, MemError> {
        if !phys.is_page_aligned() {
            return Err(MemError::Unaligned { phys });
        }
        let words = self.words(phys, kho::PAGE_WORDS)?;
        let ptr = words.as_ptr().cast::<AtomicPage>();
        // SAFETY: `words` is 512 AtomicU64 (4096 bytes) starting at a page
        // aligned address, which is exactly the layout of AtomicPage
        // (repr(C, align(4096)), [AtomicU64; 512], size checked at compile
        // time in the core); the borrow is tied to `self` like `words`.
        Ok(unsafe { &*ptr })
    }

    /// Whether `range` lies inside one RAM range.
    pub fn check_ram(&self, range: PhysRange) -> Result<(), MemError> {
        if self.layout.is_ram(range) {
            Ok(())
        } else {
            Err(MemError::NotMapped {
                phys: range.start(),
            })
        }
    }

    /// Fills `range` (8-byte aligned, in RAM) with `pattern`.
    pub fn fill(&self, range: PhysRange, pattern: u64) -> Result<(), MemError> {
        let count = usize::try_from(range.size() / WORD).map_err(|_| MemError::NotMapped {
            phys: range.start(),
        })?;
        for w in self.words(range.start(), count)? {
            w.store(pattern, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Gives the pages of `range` (page aligned) back to the host: they read
    /// as zero afterwards and cost nothing until written again.
    pub fn discard(&self, range: PhysRange) -> Result<(), ArenaError> {
        rustix::fs::fallocate(
            &self.fd,
            FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE,
            range.start().as_u64(),
            range.size(),
        )
        .map_err(errno("fallocate punch hole"))
    }

    /// The ranges of the file that hold data (pages ever written and not
    /// discarded), page aligned, ascending. Found with SEEK_DATA/SEEK_HOLE,
    /// so the cost is in the number of extents, not in the memory size.
    pub fn populated(&self) -> Result<Vec<PhysRange>, ArenaError> {
        let end = self.layout.end().as_u64();
        let mut out = Vec::new();
        let mut pos = 0u64;
        while pos < end {
            let data = match rustix::fs::seek(&self.fd, SeekFrom::Data(pos)) {
                Ok(d) => d,
                Err(rustix::io::Errno::NXIO) => break,
                Err(e) => return Err(errno("lseek SEEK_DATA")(e)),
            };
            if data >= end {
                break;
            }
            let hole = rustix::fs::seek(&self.fd, SeekFrom::Hole(data))
                .map_err(errno("lseek SEEK_HOLE"))?;
            let hole = hole.min(end);
            let r = PhysRange::new(
                PhysAddr::new(data).align_down(PAGE_SIZE),
                PhysAddr::new(hole)
                    .checked_align_up(PAGE_SIZE)
                    .unwrap_or(PhysAddr::new(end)),
            )
            .expect("SEEK_HOLE is past SEEK_DATA");
            out.push(r);
            pos = hole;
        }
        Ok(out)
    }
}

/// Hints the CPU to fetch the cache line of `word` for writing soon: a
/// loop that stores into scattered memory (the head struct pages of
/// preserved blocks) issues it some iterations ahead, so the misses overlap
/// instead of queueing behind each other.
#[inline(always)]
pub(crate) fn prefetch(word: &AtomicU64) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `_mm_prefetch` needs SSE, which every x86-64 CPU has (it is in
    // the target's baseline features); a prefetch is only a hint and never
    // faults, and the address comes from a live reference anyway.
    unsafe {
        core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(
            std::ptr::from_ref(word).cast::<i8>(),
        );
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = word;
}

impl PageMap for PhysMem {
    fn page(&self, phys: PhysAddr) -> Result<&AtomicPage, MemError> {
        self.page_at(phys)
    }
}

#[cfg(test)]
mod tests;
