//! Replays the `inspect` fuzz corpus (fuzz/corpus/inspect/*) through the
//! entry point the cargo-fuzz target calls: it must return without
//! panicking, whatever the bytes; the `valid-*` seeds must inspect with no
//! error, the other named seeds with at least one (inputs a fuzzing run
//! kept, named by their SHA-1, are only replayed).
//!
//! The seeds are made by `regenerate_inspect_seeds` (ignored):
//!
//!     cargo test -p kho-lab --test fuzz_corpus -- --ignored

use std::fs;
use std::path::PathBuf;

use kho::{BitmapSize, Block, KhoFdtBuilder, Order, PhysAddr};
use kho_lab::testing::{Machine, fuzz_input, fuzz_input_on, fuzz_one, fuzz_run, tiny_v3, v1_raw};

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/inspect")
}

#[test]
fn inspect_corpus() {
    let mut files: Vec<_> = fs::read_dir(dir())
        .expect("fuzz/corpus/inspect")
        .map(|e| e.expect("corpus entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    assert!(files.len() >= 8, "corpus too small: {files:?}");
    for path in files {
        let data = fs::read(&path).expect("read corpus file");
        eprintln!("inspect: {}", path.display());
        fuzz_one(&data);
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if kho::testing::fuzzer_named(&name) {
            continue;
        }
        let errors = match fuzz_run(&data).expect("a full header") {
            Ok(out) => out.errors.len(),
            Err(_) => 1,
        };
        if name.starts_with("valid-") {
            assert_eq!(errors, 0, "{name}");
        } else {
            assert!(errors > 0, "{name}");
        }
    }
}

#[test]
#[ignore = "writes fuzz/corpus/inspect"]
fn regenerate_inspect_seeds() {
    const RAW: u8 = 1;
    const FDT_PHYS: u8 = 0x10;
    let fmt = |k: u8| k << 1;
    let t = tiny_v3();
    let root = kho::KhoFdt::parse(&t.fdt).unwrap().root();
    let mut seeds: Vec<(&str, Vec<u8>)> = vec![
        ("valid-v3-core", fuzz_input(0, t.fdt_phys, &t.fdt, &t.image)),
        (
            "valid-v3-core-fdt-phys",
            fuzz_input(FDT_PHYS, t.fdt_phys, &[], &t.image),
        ),
        (
            "truncated-elf",
            fuzz_input(0, t.fdt_phys, &t.fdt, &t.image[..100]),
        ),
        ("empty-image", fuzz_input(0, t.fdt_phys, &t.fdt, &[])),
        (
            "fdt-garbage",
            fuzz_input(0, t.fdt_phys, b"\xd0\x0d\xfe\xed garbage", &t.image),
        ),
        (
            "fdt-truncated",
            fuzz_input(0, t.fdt_phys, &t.fdt[..t.fdt.len() / 2], &t.image),
        ),
    ];
    // p_offset of the one segment past the end of the file.
    let mut bad = t.image.clone();
    bad[64 + 8..64 + 16].copy_from_slice(&(1u64 << 40).to_le_bytes());
    seeds.push(("bad-phdr-offset", fuzz_input(0, t.fdt_phys, &t.fdt, &bad)));
    // Two segments over the same physical pages.
    let mut two = t.image.clone();
    two[56..58].copy_from_slice(&2u16.to_le_bytes());
    let ph: Vec<u8> = two[64..120].to_vec();
    two[120..176].copy_from_slice(&ph);
    seeds.push((
        "overlapping-segments",
        fuzz_input(0, t.fdt_phys, &t.fdt, &two),
    ));
    // Root entry 4 in use.
    let mut tree = t.image.clone();
    let at = usize::try_from(4096 + root.as_u64() - 0x10_0000 + 32).unwrap();
    tree[at..at + 8].copy_from_slice(&0x10_1000u64.to_le_bytes());
    seeds.push((
        "tree-root-entry-4",
        fuzz_input(0, t.fdt_phys, &t.fdt, &tree),
    ));
    // A root FDT whose subnode blob is not preserved.
    let mut b = KhoFdtBuilder::new(root);
    b.add_subnode("lost", PhysAddr::new(0x10_0000 + 13 * 4096), 100);
    let lost = b.build().unwrap();
    seeds.push((
        "blob-not-preserved",
        fuzz_input(0, t.fdt_phys, &lost, &t.image),
    ));
    // The machine part: RAM given as the image's one segment and no block
    // cap (inspect's default); then the tree's root page forbidden.
    const UNCAPPED: u8 = 3 << 5;
    let pfn = |p: PhysAddr| u32::try_from(p.as_u64() / 4096).unwrap();
    let seg = (pfn(PhysAddr::new(0x10_0000)), pfn(PhysAddr::new(0x11_0000)));
    seeds.push((
        "valid-v3-core-ram-uncapped",
        fuzz_input_on(
            UNCAPPED,
            &Machine::bytes(Some(seg), None),
            t.fdt_phys,
            &t.fdt,
            &t.image,
        ),
    ));
    seeds.push((
        "v3-core-root-forbidden",
        fuzz_input_on(
            UNCAPPED,
            &Machine::bytes(Some(seg), Some((pfn(root), 1))),
            t.fdt_phys,
            &t.fdt,
            &t.image,
        ),
    ));
    seeds.push((
        "v3-core-ram-too-small",
        fuzz_input_on(
            UNCAPPED,
            &Machine::bytes(Some((seg.0, seg.0 + 4)), None),
            t.fdt_phys,
            &t.fdt,
            &t.image,
        ),
    ));
    // kho-v1 raw images.
    let blocks = [
        Block::new(PhysAddr::new(0x10_8000), Order::new(0)).unwrap(),
        Block::new(PhysAddr::new(0x10_c000), Order::new(2)).unwrap(),
        Block::new(PhysAddr::new(0x11_0000), Order::new(3)).unwrap(),
    ];
    let base = PhysAddr::new(0x10_0000);
    let v = v1_raw(base, 24, &blocks, BitmapSize::Bytes512);
    seeds.push((
        "valid-v1-512-detected",
        fuzz_input(RAW, PhysAddr::ZERO, &v.fdt, &v.image),
    ));
    let v = v1_raw(base, 24, &blocks, BitmapSize::Page);
    seeds.push((
        "valid-v1-page-forced",
        fuzz_input(RAW | fmt(2), PhysAddr::ZERO, &v.fdt, &v.image),
    ));
    seeds.push((
        "v1-page-read-as-512-pointers",
        fuzz_input(RAW | fmt(1), PhysAddr::ZERO, &v.fdt, &v.image[..8192]),
    ));
    fs::create_dir_all(dir()).unwrap();
    for (name, data) in seeds {
        fs::write(dir().join(name), data).unwrap();
    }
}
