use kho::{KhoFdtBuilder, Order, PhysAddr};

use super::*;
use crate::testing::{Fixture, tiny_v3, v1_raw};

fn elf(f: &Fixture) -> MemImage {
    MemImage::open_elf(Source::Bytes(f.image.clone())).unwrap()
}

/// [`inspect`], with the blocks and ranges it streams collected.
fn listed(image: &MemImage, src: &FdtSource, opts: &InspectOptions) -> (Inspection, Collect) {
    let mut list = Collect::default();
    let out = inspect_to(image, src, opts, &mut list);
    (out, list)
}

fn sorted(v: &[Block]) -> Vec<Block> {
    let mut v = v.to_vec();
    v.sort();
    v
}

#[test]
fn tiny_v3_core_decodes_from_the_fdt_file_and_from_phys() {
    let f = tiny_v3();
    let image = elf(&f);
    for src in [FdtSource::File(f.fdt.clone()), FdtSource::Phys(f.fdt_phys)] {
        let (out, list) = listed(&image, &src, &InspectOptions::default());
        assert!(out.errors.is_empty(), "{:?}", out.errors);
        assert_eq!(out.format.as_deref(), Some("kho-v3"));
        assert_eq!(sorted(&list.blocks), f.blocks);
        assert_eq!(out.blocks, 3);
        assert_eq!(out.preserved_bytes, (1 + 2 + 1) * PAGE_SIZE);
        // Walk order: higher orders first.
        assert_eq!(list.blocks[0].order(), Order::new(1));
        assert_eq!(out.per_order.len(), 2);
        // The FDT page, page 12, pages 14-15.
        assert_eq!(out.ranges_count, 3);
        assert!(out.metadata_pages >= 6, "root, spine to a leaf");
        assert_eq!(out.subnodes[0].name, "demo");
        assert_eq!(out.subnodes[0].size, Some(5000));
    }
}

#[test]
fn format_override_is_noted() {
    let f = tiny_v3();
    let opts = InspectOptions {
        format: Some(MapFormat::V2),
        ..InspectOptions::default()
    };
    let out = inspect(&elf(&f), &FdtSource::File(f.fdt.clone()), &opts);
    assert!(out.errors.is_empty());
    assert_eq!(out.format.as_deref(), Some("kho-v2"));
    let opts = InspectOptions {
        format: Some(MapFormat::V1Page),
        ..InspectOptions::default()
    };
    let out = inspect(&elf(&f), &FdtSource::File(f.fdt.clone()), &opts);
    assert_eq!(out.notes.len(), 1);
    assert!(!out.errors.is_empty(), "a radix root read as a chunk list");
}

#[test]
fn a_corrupt_tree_names_the_root() {
    let f = tiny_v3();
    let root = KhoFdt::parse(&f.fdt).unwrap().root();
    let mut bytes = f.image.clone();
    // Root entry 5: file offset = data start (4096) + root - base + 5 * 8.
    let at = usize::try_from(4096 + root.as_u64() - 0x10_0000 + 40).unwrap();
    bytes[at..at + 8].copy_from_slice(&0x10_1000u64.to_le_bytes());
    let image = MemImage::open_elf(Source::Bytes(bytes)).unwrap();
    let out = inspect(
        &image,
        &FdtSource::File(f.fdt.clone()),
        &InspectOptions::default(),
    );
    assert_eq!(out.errors.len(), 1);
    assert_eq!(out.errors[0].address, root.as_u64());
    assert_eq!(out.errors[0].space, Space::Phys);
}

#[test]
fn an_unpreserved_blob_and_a_forbidden_block_are_reported() {
    let f = tiny_v3();
    let root = KhoFdt::parse(&f.fdt).unwrap().root();
    let mut b = KhoFdtBuilder::new(root);
    b.add_subnode("lost", PhysAddr::new(0x10_0000 + 13 * 4096), 4096);
    b.add_subnode("half", PhysAddr::new(0x10_0000 + 12 * 4096), 8192);
    let fdt = b.build().unwrap();
    let out = inspect(&elf(&f), &FdtSource::File(fdt), &InspectOptions::default());
    // "lost" is not preserved; "half"'s second page is not; both claim
    // page 13.
    let addrs: Vec<u64> = out.errors.iter().map(|e| e.address).collect();
    assert_eq!(addrs, [0x10_0000 + 13 * 4096; 3], "{:?}", out.errors);
    let text: Vec<String> = out.errors.iter().map(|e| e.message.clone()).collect();
    assert!(text[0].contains("subnode `lost` blob") && text[0].contains("not preserved"));
    assert!(text[1].contains("subnode `half` blob"), "{text:?}");
    assert!(text[2].contains("claim the same memory"), "{text:?}");

    let opts = InspectOptions {
        forbidden: vec![
            PhysRange::from_start_size(PhysAddr::new(0x10_0000 + 14 * 4096), 4096).unwrap(),
        ],
        ..InspectOptions::default()
    };
    let out = inspect(&elf(&f), &FdtSource::File(f.fdt.clone()), &opts);
    assert_eq!(
        out.errors[0].address,
        0x10_0000 + 14 * 4096,
        "{:?}",
        out.errors
    );
}

#[test]
fn broken_fdts_name_their_address() {
    let f = tiny_v3();
    let image = elf(&f);
    let out = inspect(
        &image,
        &FdtSource::File(b"garbage".to_vec()),
        &InspectOptions::default(),
    );
    assert_eq!(out.errors.len(), 1);
    assert_eq!(
        (out.errors[0].space, out.errors[0].address),
        (Space::FdtFile, 0)
    );
    assert!(out.format.is_none());
    let nowhere = PhysAddr::new(0x4000_0000);
    let out = inspect(
        &image,
        &FdtSource::Phys(nowhere),
        &InspectOptions::default(),
    );
    assert_eq!(out.errors[0].address, nowhere.as_u64());
    // A page of the image that is no FDT.
    let page = PhysAddr::new(0x10_0000 + 12 * 4096);
    let out = inspect(&image, &FdtSource::Phys(page), &InspectOptions::default());
    assert_eq!(out.errors[0].address, page.as_u64());
}

#[test]
fn the_block_cap_stops_the_walk() {
    let f = tiny_v3();
    let opts = InspectOptions {
        max_blocks: Some(2),
        ..InspectOptions::default()
    };
    let out = inspect(&elf(&f), &FdtSource::File(f.fdt.clone()), &opts);
    assert_eq!(out.blocks, 2);
    assert_eq!(out.errors.len(), 1);
}

/// Blocks of four orders from 16 MiB on (bits past 4096 of a page bitmap
/// of order 0: the two readings of a page-bitmap list differ).
fn v1_blocks() -> Vec<Block> {
    let mib = 1u64 << 20;
    let mut v = Vec::new();
    for i in 0..40u64 {
        v.push(Block::new(PhysAddr::new(16 * mib + i * 3 * 4096), Order::ZERO).unwrap());
    }
    v.push(Block::new(PhysAddr::new(17 * mib), Order::new(4)).unwrap());
    v.push(Block::new(PhysAddr::new(18 * mib), Order::new(9)).unwrap());
    v.push(Block::new(PhysAddr::new(20 * mib + 8192), Order::new(1)).unwrap());
    v
}

fn v1(size: BitmapSize) -> (MemImage, Fixture) {
    let f = v1_raw(PhysAddr::new(16 << 20), 2048, &v1_blocks(), size);
    let image =
        MemImage::open_raw(Source::Bytes(f.image.clone()), PhysAddr::new(16 << 20)).unwrap();
    (image, f)
}

#[test]
fn kho_v1_images_of_both_bitmap_sizes_decode_to_the_same_blocks() {
    let mut got = Vec::new();
    for (size, format) in [
        (BitmapSize::Bytes512, MapFormat::V1Bytes512),
        (BitmapSize::Page, MapFormat::V1Page),
    ] {
        let (image, f) = v1(size);
        let opts = InspectOptions {
            format: Some(format),
            ..InspectOptions::default()
        };
        let (out, list) = listed(&image, &FdtSource::File(f.fdt.clone()), &opts);
        assert!(out.errors.is_empty(), "{format}: {:?}", out.errors);
        assert_eq!(out.format.as_deref(), Some(format.as_str()));
        assert_eq!(sorted(&list.blocks), f.blocks);
        assert!(out.metadata_pages >= 2, "a chunk and a bitmap page");
        got.push(list.blocks);
    }
    assert_eq!(got[0], got[1], "same list order too");
}

#[test]
fn kho_v1_bitmap_size_detection() {
    // 512-byte bitmaps packed in a page: the page reading fails.
    let (image, f) = v1(BitmapSize::Bytes512);
    let (out, list) = listed(
        &image,
        &FdtSource::File(f.fdt.clone()),
        &InspectOptions::default(),
    );
    assert!(out.errors.is_empty(), "{:?}", out.errors);
    assert_eq!(out.format.as_deref(), Some("kho-v1-512"));
    assert_eq!(sorted(&list.blocks), f.blocks);
    assert_eq!(out.notes.len(), 1);
    assert!(
        out.notes[0].contains("512-byte bitmaps") && out.notes[0].contains("not page aligned"),
        "{}",
        out.notes[0]
    );

    // Page bitmaps, as 6.17.y and later write them: the 512-byte reading
    // validates too, with fewer blocks; the bits past 4095 decide, with
    // no --format.
    let (image, f) = v1(BitmapSize::Page);
    let (out, list) = listed(
        &image,
        &FdtSource::File(f.fdt.clone()),
        &InspectOptions::default(),
    );
    assert!(out.errors.is_empty(), "{:?}", out.errors);
    assert_eq!(out.format.as_deref(), Some("kho-v1"));
    assert_eq!(sorted(&list.blocks), f.blocks);
    assert_eq!(out.notes.len(), 1);
    assert!(out.notes[0].contains("past bit 4095"), "{}", out.notes[0]);

    // Blocks below 16 MiB only: both readings agree.
    let low = [Block::new(PhysAddr::new(0x20_0000), Order::ZERO).unwrap()];
    let f = v1_raw(PhysAddr::new(0), 1024, &low, BitmapSize::Page);
    let image = MemImage::open_raw(Source::Bytes(f.image.clone()), PhysAddr::new(0)).unwrap();
    let (out, list) = listed(
        &image,
        &FdtSource::File(f.fdt.clone()),
        &InspectOptions::default(),
    );
    assert!(out.errors.is_empty(), "{:?}", out.errors);
    assert_eq!(out.format.as_deref(), Some("kho-v1"));
    assert_eq!(out.notes.len(), 1);
    assert!(
        out.notes[0].contains("undecided") && out.notes[0].contains("--format kho-v1-512"),
        "{}",
        out.notes[0]
    );
    assert_eq!(list.blocks, low);

    // Neither validates: a head outside RAM.
    let fdt = KhoFdtBuilder::new(PhysAddr::new(0x4000_0000))
        .version(kho::KhoVersion::V1)
        .build()
        .unwrap();
    let out = inspect(&image, &FdtSource::File(fdt), &InspectOptions::default());
    assert!(out.format.is_none());
    assert_eq!(out.errors.len(), 3);
    assert!(out.errors.iter().all(|e| e.address == 0x4000_0000));
    assert!(
        out.errors[0].message.contains("--format"),
        "{}",
        out.errors[0]
    );
}

#[test]
fn json_has_the_documented_keys() {
    let f = tiny_v3();
    let out = inspect(
        &elf(&f),
        &FdtSource::File(f.fdt.clone()),
        &InspectOptions::default(),
    );
    let v: serde_json::Value = serde_json::to_value(&out).unwrap();
    for key in [
        "format",
        "blocks",
        "preserved_bytes",
        "per_order",
        "ranges_count",
        "metadata_pages",
        "subnodes",
        "errors",
    ] {
        assert!(v.get(key).is_some(), "{key} in {v}");
    }
    assert_eq!(v["subnodes"][0]["phys"], "0x10e000");
}

#[test]
fn format_names_round_trip() {
    for f in MapFormat::ALL {
        assert_eq!(f.as_str().parse::<MapFormat>().unwrap(), f);
    }
    assert!("kho-v4".parse::<MapFormat>().is_err());
}
