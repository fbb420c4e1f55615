//! `kho inspect` end to end: the old kernel's memory dumped the way `kho
//! run --dump-core` dumps it (the same function), then inspected from the
//! files.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;

use kho::{Block, KhoVersion, Order, PAGE_SIZE, split_pages};
use kho_lab::image::MemImage as Image;
use kho_lab::image::{MemImage, Source, dump_old_kernel, fdt_path};
use kho_lab::{Collect, FdtSource, InspectOptions, Inspection, inspect, inspect_to};

/// [`inspect`], with the blocks and ranges it streams collected.
fn listed(image: &Image, src: &FdtSource, opts: &InspectOptions) -> (Inspection, Collect) {
    let mut list = Collect::default();
    let out = inspect_to(image, src, opts, &mut list);
    (out, list)
}
use kho_machine::{OldKernelConfig, OldKernelImage, Strategy, old_kernel_boot};

fn dumped(name: &str, abi: KhoVersion) -> (OldKernelImage, PathBuf) {
    let mut cfg = OldKernelConfig::new(64 << 20, Strategy::Bulk).unwrap();
    cfg.abi = abi;
    if abi == KhoVersion::V3 {
        cfg.scenario.forget_pages = 2;
    }
    let img = old_kernel_boot(&cfg).unwrap();
    let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}.core"));
    let d = dump_old_kernel(&img, &path).unwrap();
    assert_eq!(d.fdt_path, fdt_path(&path));
    assert_eq!(d.fdt_phys, img.fdt.start());
    (img, path)
}

#[test]
fn a_dumped_core_reports_exactly_the_preserved_blocks() {
    let (img, path) = dumped("exact", KhoVersion::V3);
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
        let (out, list) = listed(&image, &src, &opts);
        // The only errors: the manifest lists the 2 forgotten pages, which
        // are not preserved.
        let named: Vec<u64> = out.errors.iter().map(|e| e.address).collect();
        let forgotten: Vec<u64> = img.manifest.entries[n - 2..]
            .iter()
            .map(|e| e.block.phys().as_u64())
            .collect();
        assert_eq!(named, forgotten, "{:?}", out.errors);
        assert!(
            out.errors
                .iter()
                .all(|e| e.message.contains("subnode `kho-run` / block")
                    && e.message.contains("not preserved")),
            "{:?}",
            out.errors
        );
        assert_eq!(out.orphans.as_ref().unwrap().blocks, 0);
        assert_eq!(out.format.as_deref(), Some("kho-v3"));
        let got: BTreeSet<Block> = list.blocks.iter().copied().collect();
        assert_eq!(got.len(), list.blocks.len(), "no block twice");
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
        assert_eq!(list.ranges, ranges);
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
    let (_, list) = listed(&image, &FdtSource::File(fdt), &InspectOptions::default());
    assert_eq!(list.blocks, live);
}

include!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../kho/tests/support/dtc.rs"
));

#[test]
fn dtc_reads_the_dumped_fdt() {
    let (img, path) = dumped("dtc", KhoVersion::V3);
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

/// Acceptance: the kho-v4 core of the default scenario inspects to exactly
/// the sessions, files and folios the old kernel wrote, nothing orphaned
/// and no error, from the FDT file and from its address.
#[test]
fn a_kho_v4_core_inspects_to_exactly_the_luo_files_written() {
    let (img, path) = dumped("luo", KhoVersion::V4);
    assert_eq!(img.luo_files.len(), 3, "memfd, kvm, guest_memfd");
    let image = MemImage::open_elf(Source::File(std::fs::File::open(&path).unwrap())).unwrap();
    let fdt = std::fs::read(fdt_path(&path)).unwrap();
    for src in [FdtSource::File(fdt), FdtSource::Phys(img.fdt.start())] {
        let out = inspect(&image, &src, &InspectOptions::default());
        assert!(out.errors.is_empty(), "{:?}", out.errors);
        assert_eq!(out.fdt.as_ref().unwrap().compatible, "kho-v4");
        assert_eq!(out.fdt_phys, Some(img.fdt.start()));
        assert_eq!(
            out.orphans.as_ref().unwrap(),
            &kho_lab::inspect::OrphanInfo::default()
        );
        let luo = out.luo.as_ref().unwrap();
        assert_eq!(luo.compatible, "luo-v5");
        assert_eq!(luo.liveupdate_number, 1);
        assert_eq!(luo.header, img.luo.unwrap().start().as_u64());
        let files: Vec<_> = luo
            .sessions
            .iter()
            .flat_map(|s| s.files.iter().map(move |f| (s.name.as_str(), f)))
            .collect();
        assert_eq!(files.len(), img.luo_files.len());
        for ((session, got), want) in files.iter().zip(&img.luo_files) {
            assert_eq!(*session, want.session);
            assert_eq!(got.token, want.token);
            assert_eq!(got.compatible, want.compatible);
            assert_eq!(got.size, want.size);
            assert_eq!(
                got.record.as_deref(),
                Some(format!("{:#x}", want.record.as_u64()).as_str())
            );
            assert_eq!(got.holes, 0);
            let rows: Vec<(Block, u64, u16)> = got
                .folio_list
                .iter()
                .map(|r| (r.block.unwrap(), r.index, r.flags))
                .collect();
            let written: Vec<(Block, u64, u16)> = want
                .folios
                .iter()
                .map(|f| (f.block, f.index, f.flags))
                .collect();
            assert_eq!(rows, written, "{session} token {}", want.token);
            assert_eq!(got.folios, u64::try_from(written.len()).unwrap());
            assert_eq!(
                got.bytes,
                want.folios.iter().map(|f| f.block.size()).sum::<u64>()
            );
        }
    }
}

/// Errors above the tracker name the address and the LUO path: a memfd
/// folio entry pointed at an unpreserved page, then a session name without
/// its NUL.
#[test]
fn luo_errors_name_the_address_and_the_path() {
    let mut cfg = OldKernelConfig::new(64 << 20, Strategy::Bulk).unwrap();
    cfg.abi = KhoVersion::V4;
    let img = old_kernel_boot(&cfg).unwrap();
    let word = |p: kho::PhysAddr, i: usize| {
        img.mem.words(p, i + 1).unwrap()[i].load(std::sync::atomic::Ordering::Relaxed)
    };
    let store = |p: kho::PhysAddr, i: usize, v: u64| {
        img.mem.words(p, i + 1).unwrap()[i].store(v, std::sync::atomic::Ordering::Relaxed);
    };
    let memfd = &img.luo_files[0];
    // memfd_luo_ser.folios.first at byte 32; the chunk's phys[0] at byte 8:
    // the array's first page; entry 2's first word at byte 32.
    let chunk = kho::PhysAddr::new(word(memfd.record, 4));
    let array = kho::PhysAddr::new(word(chunk, 1));
    let entry = word(array, 4);
    // The scratch area's first page: RAM, never preserved.
    let bogus = img.scratch.as_slice()[1].start();
    store(array, 4, (entry & !((1 << 52) - 1)) | bogus.pfn().as_u64());
    let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("luo-bad.core");
    dump_old_kernel(&img, &path).unwrap();
    let image = MemImage::open_elf(Source::File(std::fs::File::open(&path).unwrap())).unwrap();
    let src = FdtSource::Phys(img.fdt.start());
    let out = inspect(&image, &src, &InspectOptions::default());
    let e = out
        .errors
        .iter()
        .find(|e| e.address == bogus.as_u64())
        .unwrap_or_else(|| panic!("{:?}", out.errors));
    assert!(
        e.message
            .contains("session 0 `kho-run-memfd` / file 0 (token 0x1) / folio 2")
            && e.message.contains("not preserved"),
        "{e}"
    );
    // The folio it replaced is no LUO file's now, but the simulator's
    // manifest still lists it: not an orphan.
    assert_eq!(out.orphans.as_ref().unwrap().blocks, 0);

    // A session name filled to its end: the reader stops there, naming the
    // entry and the session.
    store(array, 4, entry);
    let luo = img.luo.unwrap().start();
    // luo_ser.sessions_pa at byte 16 (`luo-v5`: an 8-byte compatible).
    let sessions = kho::PhysAddr::new(word(luo, 2));
    // The first entry after the 16-byte block header: 64 name bytes.
    for i in 2..10 {
        store(sessions, i, u64::from_le_bytes(*b"xxxxxxxx"));
    }
    dump_old_kernel(&img, &path).unwrap();
    let image = MemImage::open_elf(Source::File(std::fs::File::open(&path).unwrap())).unwrap();
    let out = inspect(&image, &src, &InspectOptions::default());
    assert!(out.luo.is_none());
    let e = out
        .errors
        .iter()
        .find(|e| e.message.contains("session name is not NUL-terminated"))
        .unwrap_or_else(|| panic!("{:?}", out.errors));
    assert_eq!(e.address, sessions.as_u64() + 16);
}
