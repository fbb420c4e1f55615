//! `kho inspect` end to end: the old kernel's memory dumped the way `kho
//! run --dump-core` dumps it (the same function), then inspected from the
//! files.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;

use kho::{Block, Order, PAGE_SIZE, split_pages};
use kho_lab::image::{MemImage, Source, dump_old_kernel, fdt_path};
use kho_lab::{FdtSource, InspectOptions, inspect};
use kho_machine::{OldKernelConfig, OldKernelImage, Strategy, old_kernel_boot};

fn dumped(name: &str) -> (OldKernelImage, PathBuf) {
    let mut cfg = OldKernelConfig::new(64 << 20, Strategy::Bulk).unwrap();
    cfg.scenario.forget_pages = 2;
    let img = old_kernel_boot(&cfg).unwrap();
    let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}.core"));
    let d = dump_old_kernel(&img, &path).unwrap();
    assert_eq!(d.fdt_path, fdt_path(&path));
    assert_eq!(d.fdt_phys, img.fdt.start());
    (img, path)
}

#[test]
fn a_dumped_core_reports_exactly_the_preserved_blocks() {
    let (img, path) = dumped("exact");
    let image = MemImage::open_elf(Source::File(std::fs::File::open(&path).unwrap())).unwrap();
    let fdt = std::fs::read(fdt_path(&path)).unwrap();

    // What must be there: the manifest's folios but the 2 forgotten pages,
    // the manifest blob's pages, the FDT page.
    let n = img.manifest.entries.len();
    let mut want: BTreeSet<Block> = img.manifest.entries[..n - 2]
        .iter()
        .map(|e| e.block)
        .collect();
    let blob_pages = img.manifest_blob.size().div_ceil(PAGE_SIZE);
    want.extend(split_pages(img.manifest_blob.start().pfn(), blob_pages).unwrap());
    want.insert(Block::new(img.fdt.start(), Order::ZERO).unwrap());
    assert_eq!(want, img.preserved.iter().copied().collect());

    let mut scratch = img.scratch.as_slice().to_vec();
    scratch.sort();
    let forbidding = InspectOptions {
        forbidden: scratch,
        ..InspectOptions::default()
    };
    for (src, opts) in [
        (FdtSource::File(fdt.clone()), InspectOptions::default()),
        (FdtSource::Phys(img.fdt.start()), InspectOptions::default()),
        (FdtSource::File(fdt.clone()), forbidding),
    ] {
        let out = inspect(&image, &src, &opts);
        assert!(out.errors.is_empty(), "{:?}", out.errors);
        assert_eq!(out.format.as_deref(), Some("kho-v3"));
        let got: BTreeSet<Block> = out.block_list.iter().copied().collect();
        assert_eq!(got.len(), out.block_list.len(), "no block twice");
        assert_eq!(got, want);
        assert_eq!(out.blocks, u64::try_from(want.len()).unwrap());
        assert_eq!(
            out.preserved_bytes,
            want.iter().map(|b| b.size()).sum::<u64>()
        );
        assert_eq!(
            out.metadata_pages,
            u64::try_from(img.tree_pages.len()).unwrap()
        );
        let ranges = kho::merge_ranges(want.iter().map(|b| b.range().unwrap()).collect());
        assert_eq!(out.ranges, ranges);
        assert_eq!(out.subnodes.len(), 1);
        assert_eq!(out.subnodes[0].name, "kho-run");
        assert_eq!(out.subnodes[0].phys, img.manifest_blob.start().as_u64());
        assert_eq!(out.subnodes[0].size, Some(img.manifest_blob.size()));
    }

    // Walk order: as the walker reads the live memory.
    let ram = img.mem.layout().ram().to_vec();
    let map = kho::RamMap::new(&ram, &[]).unwrap();
    let live: Vec<Block> = kho::RadixReader::open(
        &img.mem,
        map,
        img.radix_root,
        kho::NodeSet::new(),
        kho::NodeBudget::for_ram(&map),
    )
    .unwrap()
    .walk()
    .collect::<Result<_, _>>()
    .unwrap();
    let out = inspect(&image, &FdtSource::File(fdt), &InspectOptions::default());
    assert_eq!(out.block_list, live);
}

include!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../kho/tests/support/dtc.rs"
));

#[test]
fn dtc_reads_the_dumped_fdt() {
    let (img, path) = dumped("dtc");
    let out = match Command::new("dtc")
        .args(["-I", "dtb", "-O", "dts"])
        .arg(fdt_path(&path))
        .output()
    {
        Ok(out) => out,
        Err(e) if skip_without_dtc("dtc_reads_the_dumped_fdt", &e) => return,
        Err(e) => panic!("running dtc: {e}"),
    };
    assert!(
        out.status.success(),
        "dtc failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dts = String::from_utf8(out.stdout).unwrap();
    assert!(dts.contains("compatible = \"kho-v3\";"), "{dts}");
    assert!(dts.contains("kho-run {"), "{dts}");
    // The value is the radix root's native-endian bytes, which dtc shows
    // as two big-endian cells.
    let root = img.radix_root.as_u64().to_le_bytes();
    let cell = |b: &[u8]| u32::from_be_bytes(b.try_into().unwrap());
    let hex = |v: u32| {
        if v == 0 {
            "0x00".to_owned()
        } else {
            format!("{v:#x}")
        }
    };
    let want = format!(
        "preserved-memory-map = <{} {}>;",
        hex(cell(&root[..4])),
        hex(cell(&root[4..]))
    );
    assert!(dts.contains(&want), "{want} in {dts}");
}
