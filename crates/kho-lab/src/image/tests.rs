use zerocopy::IntoBytes;

use super::*;

fn ehdr(phnum: u16) -> Elf64Ehdr {
    let mut ident = [0u8; 16];
    ident[..4].copy_from_slice(b"\x7fELF");
    ident[4] = ELFCLASS64;
    ident[5] = ELFDATA2LSB;
    ident[6] = EV_CURRENT;
    Elf64Ehdr {
        e_ident: ident,
        e_type: U16::new(ET_CORE),
        e_machine: U16::new(EM_X86_64),
        e_version: U32::new(1),
        e_entry: U64::new(0),
        e_phoff: U64::new(64),
        e_shoff: U64::new(0),
        e_flags: U32::new(0),
        e_ehsize: U16::new(64),
        e_phentsize: U16::new(56),
        e_phnum: U16::new(phnum),
        e_shentsize: U16::new(0),
        e_shnum: U16::new(0),
        e_shstrndx: U16::new(0),
    }
}

/// (p_type, p_offset, p_paddr, p_filesz, p_memsz)
fn elf(phdrs: &[(u32, u64, u64, u64, u64)], data_len: usize) -> Vec<u8> {
    let mut out = ehdr(u16::try_from(phdrs.len()).unwrap())
        .as_bytes()
        .to_vec();
    for &(t, off, paddr, filesz, memsz) in phdrs {
        let ph = Elf64Phdr {
            p_type: U32::new(t),
            p_flags: U32::new(PF_RWX),
            p_offset: U64::new(off),
            p_vaddr: U64::new(0),
            p_paddr: U64::new(paddr),
            p_filesz: U64::new(filesz),
            p_memsz: U64::new(memsz),
            p_align: U64::new(4096),
        };
        out.extend_from_slice(ph.as_bytes());
    }
    out.resize(data_len, 0);
    // Mark each page of the data with its file offset.
    for page in (4096..data_len).step_by(4096) {
        out[page..page + 8].copy_from_slice(&(page as u64).to_le_bytes());
    }
    out
}

fn open(bytes: Vec<u8>) -> Result<MemImage, ImageError> {
    MemImage::open_elf(Source::Bytes(bytes))
}

fn word0(img: &MemImage, phys: u64) -> Result<u64, MemError> {
    img.page(PhysAddr::new(phys)).map(|p| p.load(0).unwrap())
}

#[test]
fn segments_read_lazily_with_a_zero_tail() {
    let bytes = elf(
        &[
            (PT_LOAD, 0x3000, 0x20_0000, 0x2000, 0x4000),
            (4, 0, 0, 0, 0), // PT_NOTE: ignored
            (PT_LOAD, 0x1000, 0x10_0000, 0x2000, 0x2000),
        ],
        0x5000,
    );
    let img = open(bytes).unwrap();
    assert_eq!(img.segments().len(), 2);
    assert_eq!(img.segments()[0].phys.start(), PhysAddr::new(0x10_0000));
    assert_eq!(word0(&img, 0x10_0000), Ok(0x1000));
    assert_eq!(word0(&img, 0x10_1000), Ok(0x2000));
    assert_eq!(word0(&img, 0x20_0000), Ok(0x3000));
    assert_eq!(word0(&img, 0x20_1000), Ok(0x4000));
    assert_eq!(word0(&img, 0x20_2000), Ok(0), "past p_filesz: zero");
    let hole = PhysAddr::new(0x10_2000);
    assert_eq!(
        word0(&img, 0x10_2000),
        Err(MemError::NotMapped { phys: hole })
    );
    let odd = PhysAddr::new(0x10_0008);
    assert_eq!(img.page(odd).err(), Some(MemError::Unaligned { phys: odd }));
    // The same page twice is the same loaded page.
    let a = img.page(PhysAddr::new(0x10_0000)).unwrap() as *const AtomicPage;
    let b = img.page(PhysAddr::new(0x10_0000)).unwrap() as *const AtomicPage;
    assert_eq!(a, b);
    assert_eq!(img.read(PhysAddr::new(0x10_1ff8), 16).unwrap().len(), 8);
}

#[test]
fn abutting_segments_are_one_ram_range() {
    let bytes = elf(
        &[
            (PT_LOAD, 0x1000, 0x10_0000, 0x1000, 0x1000),
            (PT_LOAD, 0x2000, 0x10_1000, 0x1000, 0x1000),
        ],
        0x3000,
    );
    let img = open(bytes).unwrap();
    assert_eq!(img.ram().len(), 1);
    assert_eq!(img.ram()[0].size(), 0x2000);
}

fn err(phdrs: &[(u32, u64, u64, u64, u64)], len: usize) -> ImageError {
    open(elf(phdrs, len)).unwrap_err()
}

#[test]
fn one_test_per_error() {
    assert!(matches!(open(Vec::new()), Err(ImageError::Empty)));
    let e = open(b"\x7fELF-not-really".to_vec()).unwrap_err();
    assert!(matches!(e, ImageError::Elf { offset: 0, .. }), "{e}");
    let mut be = elf(&[(PT_LOAD, 0x1000, 0, 0x1000, 0x1000)], 0x2000);
    be[5] = 2;
    let e = open(be).unwrap_err();
    assert!(matches!(e, ImageError::Elf { offset: 0, .. }), "{e}");
    let mut bad_phentsize = elf(&[(PT_LOAD, 0x1000, 0, 0x1000, 0x1000)], 0x2000);
    bad_phentsize[54] = 55;
    let e = open(bad_phentsize).unwrap_err();
    assert!(matches!(e, ImageError::Elf { offset: 64, .. }), "{e}");
    assert!(matches!(
        err(&[(4, 0, 0, 0, 0)], 0x1000),
        ImageError::NoLoadSegment { phoff: 64 }
    ));
    assert!(matches!(
        err(&[(PT_LOAD, 0x1000, 0x10_0800, 0x1000, 0x1000)], 0x2000),
        ImageError::SegmentUnaligned { index: 0, .. }
    ));
    assert!(matches!(
        err(&[(PT_LOAD, 0x1000, 0x10_0000, 0x2000, 0x1000)], 0x3000),
        ImageError::FileLargerThanMemory { .. }
    ));
    assert!(matches!(
        err(&[(PT_LOAD, 0x1000, 0x10_0000, 0x2000, 0x2000)], 0x2000),
        ImageError::PastEndOfFile { len: 0x2000, .. }
    ));
    assert!(matches!(
        err(&[(PT_LOAD, u64::MAX, 0x10_0000, 0x2000, 0x2000)], 0x2000),
        ImageError::PastEndOfFile { .. }
    ));
    assert!(matches!(
        err(
            &[(PT_LOAD, 0x1000, 0xffff_ffff_ffff_f000, 0x1000, 0x2000)],
            0x2000
        ),
        ImageError::AddressOverflow { .. }
    ));
    let e = err(
        &[
            (PT_LOAD, 0x1000, 0x10_0000, 0x1000, 0x2000),
            (PT_LOAD, 0x2000, 0x10_1000, 0x1000, 0x1000),
        ],
        0x3000,
    );
    assert!(matches!(e, ImageError::Overlap { .. }));
    assert_eq!(e.location(), Location::Phys(PhysAddr::new(0x10_1000)));
    let e = err(
        &[
            (PT_LOAD, 0x1000, 0x10_0000, 0x2000, 0x2000),
            (PT_LOAD, 0x2000, 0x20_0000, 0x1000, 0x1000),
        ],
        0x3000,
    );
    assert!(
        matches!(e, ImageError::FileOverlap { offset: 0x2000, .. }),
        "{e}"
    );
    let e = MemImage::open_raw(Source::Bytes(vec![1; 10]), PhysAddr::new(0x800)).unwrap_err();
    assert!(matches!(e, ImageError::BadBase { .. }));
    let e = MemImage::open_raw(
        Source::Bytes(vec![1; 0x2000]),
        PhysAddr::new(u64::MAX - 0xfff),
    )
    .unwrap_err();
    assert!(matches!(e, ImageError::BadBase { .. }));
    assert!(matches!(
        MemImage::open_raw(Source::Bytes(Vec::new()), PhysAddr::ZERO),
        Err(ImageError::Empty)
    ));
}

#[test]
fn raw_images_pad_their_last_page() {
    let mut bytes = vec![0u8; 0x1008];
    bytes[0x1000] = 7;
    let img = MemImage::open_raw(Source::Bytes(bytes), PhysAddr::new(0x4000)).unwrap();
    assert_eq!(img.ram()[0].size(), 0x2000);
    assert_eq!(word0(&img, 0x5000), Ok(7));
}

#[test]
fn a_written_core_reads_back_page_for_page() {
    let arena = kho::VecArena::new(PhysAddr::new(0x10_0000), 8);
    for i in 0..8u64 {
        arena
            .write_word(PhysAddr::new(0x10_0000 + i * 4096), 3, i + 100)
            .unwrap();
    }
    let segs = [
        PhysRange::new(PhysAddr::new(0x10_0000), PhysAddr::new(0x10_2000)).unwrap(),
        PhysRange::new(PhysAddr::new(0x10_5000), PhysAddr::new(0x10_8000)).unwrap(),
    ];
    let mut out = Vec::new();
    write_elf(&arena, &segs, &mut out).unwrap();
    assert_eq!(out.len(), 4096 + 5 * 4096);
    let img = open(out).unwrap();
    assert_eq!(img.ram(), segs);
    for p in [0x10_0000u64, 0x10_1000, 0x10_5000, 0x10_7000] {
        let i = (p - 0x10_0000) / 4096;
        assert_eq!(img.page(PhysAddr::new(p)).unwrap().load(3), Some(i + 100));
    }
    assert!(img.page(PhysAddr::new(0x10_2000)).is_err());
}

#[test]
fn fdt_path_appends_dot_fdt() {
    assert_eq!(
        fdt_path(Path::new("/tmp/x.core")),
        PathBuf::from("/tmp/x.core.fdt")
    );
}

#[test]
fn too_many_extents_bridge_their_smallest_gaps_inside_ram() {
    let r = |a: u64, b: u64| PhysRange::new(PhysAddr::new(a), PhysAddr::new(b)).unwrap();
    let ram = [r(0, 0x10_0000), r(0x20_0000, 0x30_0000)];
    let segs = vec![
        r(0x1000, 0x2000),
        r(0x4000, 0x5000),       // gap 0x2000
        r(0x5800, 0x6000),       // gap 0x800: bridged first
        r(0x20_0000, 0x20_1000), // across RAM ranges: never bridged
        r(0x20_2000, 0x20_3000), // gap 0x1000: bridged second
    ];
    assert_eq!(bridge_gaps(segs.clone(), &ram, 5), segs);
    assert_eq!(
        bridge_gaps(segs.clone(), &ram, 3),
        vec![
            r(0x1000, 0x2000),
            r(0x4000, 0x6000),
            r(0x20_0000, 0x20_3000)
        ]
    );
    assert_eq!(
        bridge_gaps(segs, &ram, 1),
        vec![r(0x1000, 0x6000), r(0x20_0000, 0x20_3000)]
    );
}
