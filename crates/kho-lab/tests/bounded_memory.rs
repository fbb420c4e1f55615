//! Memory bounded by the input, not by what it claims (issue 14): the two
//! blow-ups `kho inspect` had, inspected end to end under a counting
//! global allocator, with the peak of allocated bytes asserted under
//! 256 MiB.
//!
//! - A kho-v3 radix tree of 2048 all-ones leaves: an 8 MiB core whose
//!   segment declares 257 GiB of RAM (`p_memsz`), 2^26 valid order-0
//!   blocks. Storing every block took 2.1 GB.
//! - A kho-v1 list whose chunks' 255 entries all name one all-ones page
//!   bitmap: an 84 KiB core that amplified ~37,000x and aborted with
//!   "memory allocation of 1073741824 bytes failed". Now rejected at the
//!   second entry, the error naming both entries and the bitmap.
//!
//! One test, so nothing else runs in this binary while it measures. With
//! `KHO_BOUNDED_DUMP=DIR` the images are also written to `DIR` (`radix.core`,
//! `radix.core.fdt`, `v1-shared.core`, `v1-shared.core.fdt`) for measuring
//! `kho inspect` itself (docs/inspect.md).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use kho::{
    Block, KhoFdtBuilder, KhoVersion, KhoserMemBitmapPtr, KhoserMemChunk, Level, Order, PAGE_SIZE,
    PageAlloc, PageMap, PhysAddr, RadixKey, V1Error, VecArena,
};
use kho_lab::image::{MemImage, Source, write_elf_with_memsz};
use kho_lab::{FdtSource, InspectOptions, MapFormat, inspect};

/// The system allocator, counting the bytes live and their peak.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(bytes: usize) {
    let now = LIVE.fetch_add(bytes, Ordering::Relaxed) + bytes;
    PEAK.fetch_max(now, Ordering::Relaxed);
}

// SAFETY: every call is forwarded to `System` with the caller's arguments;
// the counters are plain atomics and never affect the memory returned.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract for `alloc` is `System`'s.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as for `alloc`.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from this allocator, hence from `System`.
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `ptr` came from `System` with `layout`.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
            grew(new_size);
        }
        p
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

const LIMIT: usize = 256 << 20;
const BASE: u64 = 0x10_0000;
/// First block: 1 GiB.
const FIRST_PFN: u64 = 1 << 18;

/// Writes `bytes` into the page at `at`.
fn put(arena: &VecArena, at: PhysAddr, bytes: &[u8]) {
    for (i, chunk) in bytes.chunks(8).enumerate() {
        let mut b = [0u8; 8];
        b.iter_mut().zip(chunk).for_each(|(d, s)| *d = *s);
        arena.write_word(at, i, u64::from_le_bytes(b)).unwrap();
    }
}

/// An ELF core of `arena`'s pages whose one segment declares RAM up to
/// `ram_end`.
fn core(arena: &VecArena, ram_end: u64) -> Vec<u8> {
    let r = arena.range();
    let mut out = Vec::new();
    write_elf_with_memsz(arena, &[r], &[ram_end - r.start().as_u64()], &mut out).unwrap();
    out
}

/// A kho-v3 tree of `leaves` all-ones leaves of order 0 from 1 GiB, built
/// by hand: returns the core, the FDT (also in the image), its address and
/// the tree's node count.
fn radix_all_ones(leaves: u64) -> (Vec<u8>, Vec<u8>, PhysAddr, u64) {
    let arena = VecArena::new(PhysAddr::new(BASE), usize::try_from(leaves).unwrap() + 64);
    let root = arena.alloc_zeroed_page().unwrap();
    let mut nodes = 1u64;
    // The leaf of the order-0 block at `pfn`, nodes made as needed.
    let mut leaf_of = |pfn: u64| {
        let key = RadixKey::encode(Block::new(PhysAddr::new(pfn << 12), Order::ZERO).unwrap());
        let mut node = root;
        for level in Level::inner_top_down() {
            let slot = key.index(level).as_usize();
            let word = arena.page(node).unwrap().words()[slot].load(Ordering::Relaxed);
            node = if word == 0 {
                let child = arena.alloc_zeroed_page().unwrap();
                arena.write_word(node, slot, child.as_u64()).unwrap();
                nodes += 1;
                child
            } else {
                PhysAddr::new(word)
            };
        }
        (node, key.leaf_bit())
    };
    for leaf in 0..leaves {
        let (node, _) = leaf_of(FIRST_PFN + leaf * 32768);
        for w in 0..512 {
            arena.write_word(node, w, !0).unwrap();
        }
    }
    // The root FDT's page, preserved as the old kernel does.
    let fdt = KhoFdtBuilder::new(root).build().unwrap();
    let fdt_phys = arena.alloc_zeroed_page().unwrap();
    put(&arena, fdt_phys, &fdt);
    let (node, bit) = leaf_of(fdt_phys.as_u64() >> 12);
    let w = arena.page(node).unwrap().words()[bit.word()].load(Ordering::Relaxed);
    arena.write_word(node, bit.word(), w | bit.mask()).unwrap();
    let ram_end = (FIRST_PFN + leaves * 32768) << 12;
    (core(&arena, ram_end), fdt, fdt_phys, nodes)
}

/// A kho-v1 list of `chunks` chunks whose 255 entries all name one
/// all-ones page bitmap, `phys_start` 128 MiB apart from 1 GiB: returns the
/// core, the FDT, the first chunk and the bitmap.
fn v1_shared_bitmap(chunks: u64) -> (Vec<u8>, Vec<u8>, PhysAddr, PhysAddr) {
    let arena = VecArena::new(PhysAddr::new(BASE), usize::try_from(chunks).unwrap() + 2);
    let at = |i: u64| PhysAddr::new(BASE + i * PAGE_SIZE);
    let bitmap = at(chunks);
    for i in 0..=chunks {
        arena.claim(at(i)).unwrap();
    }
    for w in 0..512 {
        arena.write_word(bitmap, w, !0).unwrap();
    }
    let span = 128u64 << 20;
    for c in 0..chunks {
        let mut chunk = KhoserMemChunk::new(Order::ZERO);
        for e in 0..255 {
            let start = (1 << 30) + (c * 255 + e) * span;
            assert!(chunk.push(KhoserMemBitmapPtr::new(PhysAddr::new(start), bitmap)));
        }
        if c + 1 < chunks {
            chunk.set_next(at(c + 1));
        }
        for (w, v) in chunk.to_words().into_iter().enumerate() {
            arena.write_word(at(c), w, v).unwrap();
        }
    }
    let fdt = KhoFdtBuilder::new(at(0))
        .version(KhoVersion::V1)
        .build()
        .unwrap();
    let ram_end = (1 << 30) + chunks * 255 * span;
    (core(&arena, ram_end), fdt, at(0), bitmap)
}

fn dump(name: &str, image: &[u8], fdt: &[u8]) {
    if let Some(dir) = std::env::var_os("KHO_BOUNDED_DUMP") {
        let path = std::path::Path::new(&dir).join(name);
        std::fs::write(&path, image).unwrap();
        std::fs::write(path.with_extension("core.fdt"), fdt).unwrap();
    }
}

/// Runs `f`, returning its result and the peak of bytes allocated while it
/// ran (everything live before counts too).
fn peak<T>(f: impl FnOnce() -> T) -> (T, usize) {
    PEAK.store(LIVE.load(Ordering::Relaxed), Ordering::Relaxed);
    let out = f();
    (out, PEAK.load(Ordering::Relaxed))
}

#[test]
fn inspect_memory_is_bounded_by_the_input() {
    // A larger radix core for measuring only: KHO_BOUNDED_LEAVES=N writes
    // `radix-N.core` (N leaves of all ones) to KHO_BOUNDED_DUMP.
    if let Some(n) = std::env::var("KHO_BOUNDED_LEAVES")
        .ok()
        .and_then(|n| n.parse::<u64>().ok())
    {
        let (image, fdt, _, _) = radix_all_ones(n);
        dump(&format!("radix-{n}.core"), &image, &fdt);
    }
    // The radix blow-up: 2048 all-ones leaves, 2^26 blocks.
    let leaves = 2048;
    let (image, fdt, fdt_phys, nodes) = radix_all_ones(leaves);
    assert!(image.len() < 9 << 20, "an 8 MiB core: {}", image.len());
    dump("radix.core", &image, &fdt);
    for src in [FdtSource::File(fdt.clone()), FdtSource::Phys(fdt_phys)] {
        let (out, bytes) = peak(|| {
            let image = MemImage::open_elf(Source::Bytes(image.clone())).unwrap();
            inspect(&image, &src, &InspectOptions::default())
        });
        assert!(out.errors.is_empty(), "{:?}", out.errors);
        assert_eq!(out.format.as_deref(), Some("kho-v3"));
        // 2^26 blocks of the leaves and the FDT page.
        assert_eq!(out.blocks, leaves * 32768 + 1);
        assert_eq!(out.blocks, (1 << 26) + 1);
        assert_eq!(out.preserved_bytes, ((1u64 << 26) + 1) * PAGE_SIZE);
        assert_eq!(out.per_order.len(), 1);
        assert_eq!(
            (out.per_order[0].order, out.per_order[0].blocks),
            (0, (1 << 26) + 1)
        );
        assert_eq!(out.ranges_count, 2);
        assert_eq!(out.metadata_pages, nodes);
        // Root, levels 4..2 once, 5 level-1 nodes, the leaves, and the
        // FDT page's leaf (under the first level-1 node).
        assert_eq!(nodes, 1 + 3 + 5 + leaves + 1);
        assert_eq!(out.fdt_phys, Some(fdt_phys));
        // Nothing claims the leaves' blocks: orphans (counted, not listed).
        let orphans = out.orphans.as_ref().unwrap();
        assert_eq!(orphans.blocks, 1 << 26);
        assert_eq!(orphans.first.len(), 8);
        assert_eq!(orphans.first[0], format!("{:#x}", FIRST_PFN << 12));
        eprintln!("radix: peak {bytes} bytes allocated");
        assert!(bytes < LIMIT, "radix: peak {bytes} bytes allocated");
    }

    // The kho-v1 blow-up: 255 entries per chunk naming one all-ones page.
    let (image, fdt, chunk, bitmap) = v1_shared_bitmap(18);
    assert!(image.len() < 90 << 10, "a small core: {}", image.len());
    dump("v1-shared.core", &image, &fdt);
    let shared = V1Error::BitmapShared {
        bitmap,
        first_chunk: chunk,
        first_entry: 0,
        chunk,
        entry: 1,
    }
    .to_string();
    for format in [None, Some(MapFormat::V1Page), Some(MapFormat::V1Bytes512)] {
        let opts = InspectOptions {
            format,
            ..InspectOptions::default()
        };
        let (out, bytes) = peak(|| {
            let image = MemImage::open_elf(Source::Bytes(image.clone())).unwrap();
            inspect(&image, &FdtSource::File(fdt.clone()), &opts)
        });
        let named = out
            .errors
            .iter()
            .find(|e| e.message.ends_with(&shared))
            .unwrap_or_else(|| panic!("{format:?}: {:?}", out.errors));
        assert_eq!(named.address, chunk.as_u64());
        assert!(named.message.contains(&format!("bitmap {bitmap}")));
        assert!(named.message.contains(&format!("chunk {chunk} entry 0")));
        assert!(named.message.contains(&format!("chunk {chunk} entry 1")));
        if format.is_some() {
            assert_eq!(out.errors.len(), 1, "{:?}", out.errors);
            // The first entry's blocks, read before the second names its
            // bitmap again.
            let bits = if format == Some(MapFormat::V1Page) {
                32768
            } else {
                4096
            };
            assert_eq!(out.blocks, bits);
        }
        eprintln!("v1 {format:?}: peak {bytes} bytes allocated");
        assert!(bytes < LIMIT, "v1 {format:?}: peak {bytes} bytes allocated");
    }
}
