//! Tests of the root FDT: golden bytes built by hand, round trips, dtc, and
//! one test per error variant.

extern crate std;

use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;

use dtoolkit::error::FdtErrorKind;
use vm_fdt::FdtWriter;

use super::*;
use crate::testing::fuzz_fdt as fuzz_one;

const ROOT: PhysAddr = PhysAddr::new(0x1_2345_6000);
const BLOB: PhysAddr = PhysAddr::new(0x8765_4000);

/// A hand-rolled DTB assembler: every byte of the expected output is placed
/// here, independently of vm-fdt and dtoolkit.
struct Dtb {
    structure: Vec<u8>,
    strings: Vec<u8>,
}

impl Dtb {
    fn new() -> Self {
        Self {
            structure: Vec::new(),
            strings: Vec::new(),
        }
    }
    fn be32(&mut self, v: u32) {
        self.structure.extend_from_slice(&v.to_be_bytes());
    }
    fn pad(&mut self) {
        while !self.structure.len().is_multiple_of(4) {
            self.structure.push(0);
        }
    }
    fn begin(&mut self, name: &str) -> &mut Self {
        self.be32(1); // FDT_BEGIN_NODE
        self.structure.extend_from_slice(name.as_bytes());
        self.structure.push(0);
        self.pad();
        self
    }
    fn end(&mut self) -> &mut Self {
        self.be32(2); // FDT_END_NODE
        self
    }
    fn prop(&mut self, name: &str, value: &[u8]) -> &mut Self {
        // Strings are interned in first-use order, as vm-fdt does.
        let mut key = Vec::from(name.as_bytes());
        key.push(0);
        let nameoff = match self
            .strings
            .windows(key.len())
            .position(|w| w == key.as_slice())
        {
            Some(off) if off == 0 || self.strings[off - 1] == 0 => off,
            _ => {
                let off = self.strings.len();
                self.strings.extend_from_slice(&key);
                off
            }
        };
        self.be32(3); // FDT_PROP
        self.be32(u32::try_from(value.len()).unwrap());
        self.be32(u32::try_from(nameoff).unwrap());
        self.structure.extend_from_slice(value);
        self.pad();
        self
    }
    fn finish(&mut self) -> Vec<u8> {
        self.be32(9); // FDT_END
        let off_mem_rsvmap = 40u32;
        let off_dt_struct = off_mem_rsvmap + 16;
        let size_dt_struct = u32::try_from(self.structure.len()).unwrap();
        let off_dt_strings = off_dt_struct + size_dt_struct;
        let size_dt_strings = u32::try_from(self.strings.len()).unwrap();
        let totalsize = off_dt_strings + size_dt_strings;
        let mut out = Vec::new();
        for v in [
            0xd00d_feed,
            totalsize,
            off_dt_struct,
            off_dt_strings,
            off_mem_rsvmap,
            17, // version
            16, // last_comp_version
            0,  // boot_cpuid_phys
            size_dt_strings,
            size_dt_struct,
        ] {
            out.extend_from_slice(&u32::to_be_bytes(v));
        }
        out.extend_from_slice(&[0u8; 16]); // empty memory reservation map
        out.extend_from_slice(&self.structure);
        out.extend_from_slice(&self.strings);
        out
    }
}

fn ne(v: u64) -> [u8; 8] {
    v.to_ne_bytes()
}

fn hand_v3() -> Vec<u8> {
    Dtb::new()
        .begin("")
        .prop("compatible", b"kho-v3\0")
        .prop("preserved-memory-map", &ne(ROOT.as_u64()))
        .begin("luo")
        .prop("preserved-data", &ne(BLOB.as_u64()))
        .prop("blob-size", &ne(0x2345))
        .end()
        .end()
        .finish()
}

/// A root with the given properties and one subnode `user` with the given
/// properties, written by vm-fdt (which does not know KHO's rules).
fn raw(root_props: &[(&str, &[u8])], sub_props: &[(&str, &[u8])]) -> Vec<u8> {
    let mut w = FdtWriter::new().unwrap();
    let root = w.begin_node("").unwrap();
    for (name, value) in root_props {
        w.property(name, value).unwrap();
    }
    let sub = w.begin_node("user").unwrap();
    for (name, value) in sub_props {
        w.property(name, value).unwrap();
    }
    w.end_node(sub).unwrap();
    w.end_node(root).unwrap();
    w.finish().unwrap()
}

const V3_ROOT: &[(&str, &[u8])] = &[
    ("compatible", b"kho-v3\0"),
    ("preserved-memory-map", &[0, 0x10, 0, 0, 0, 0, 0, 0]),
];

#[test]
fn golden_bytes_match_the_hand_built_dtb() {
    let expected = hand_v3();
    // Offsets fixed by the layout: header 40, rsvmap 16, struct 108,
    // strings "compatible\0preserved-memory-map\0preserved-data\0blob-size\0".
    assert_eq!(&expected[0..4], &[0xd0, 0x0d, 0xfe, 0xed]);
    assert_eq!(expected.len(), 40 + 16 + 108 + 57);
    assert_eq!(&expected[4..8], &221u32.to_be_bytes());
    // The preserved-memory-map value: FDT_PROP header at 56+8+20, value 12
    // bytes later, native-endian (little-endian: low byte first).
    let value_at = 56 + 8 + 20 + 12;
    assert_eq!(
        &expected[value_at..value_at + 8],
        &[0x00, 0x60, 0x45, 0x23, 0x01, 0x00, 0x00, 0x00]
    );

    let mut b = KhoFdtBuilder::new(ROOT);
    b.add_subnode("luo", BLOB, 0x2345);
    let written = b.build().unwrap();
    assert_eq!(written, expected, "writer differs from the hand-built DTB");

    let fdt = KhoFdt::parse(&expected).unwrap();
    assert_eq!(fdt.version(), KhoVersion::V3);
    assert_eq!(fdt.root(), ROOT);
    assert_eq!(fdt.total_size(), 221);
    let subs: Vec<_> = fdt.subnodes().collect();
    assert_eq!(subs.len(), 1);
    assert_eq!(subs[0].name(), "luo");
    assert_eq!(subs[0].data(), BLOB);
    assert_eq!(subs[0].size(), Some(0x2345));
}

#[test]
fn linux_6_16_kho_v1_layout_reads() {
    // As kho_finalize() and kho_add_subtree() of 6.16 write it.
    let dtb = Dtb::new()
        .begin("")
        .prop("compatible", b"kho-v1\0")
        .prop("preserved-memory-map", &ne(0x4000_0000))
        .begin("memblock")
        .prop("fdt", &ne(0x5000_0000))
        .end()
        .end()
        .finish();
    let fdt = KhoFdt::parse(&dtb).unwrap();
    assert_eq!(fdt.version(), KhoVersion::V1);
    assert_eq!(fdt.root(), PhysAddr::new(0x4000_0000));
    let s = fdt.subnode("memblock").unwrap();
    assert_eq!((s.data(), s.size()), (PhysAddr::new(0x5000_0000), None));
    // The builder writes the same bytes.
    let mut b = KhoFdtBuilder::new(PhysAddr::new(0x4000_0000)).version(KhoVersion::V1);
    b.add_subnode("memblock", PhysAddr::new(0x5000_0000), 0);
    assert_eq!(b.build().unwrap(), dtb);
}

#[test]
fn round_trip_every_version_with_many_subnodes() {
    for version in [KhoVersion::V1, KhoVersion::V2, KhoVersion::V3] {
        let mut b = KhoFdtBuilder::new(ROOT).version(version);
        let names: Vec<String> = (0..20).map(|i| alloc::format!("user-{i}")).collect();
        for (i, name) in names.iter().enumerate() {
            let i = u64::try_from(i).unwrap();
            b.add_subnode(name, PhysAddr::new(0x1000 * (i + 1)), 100 + i);
        }
        let bytes = b.build().unwrap();
        let fdt = KhoFdt::parse(&bytes).unwrap();
        assert_eq!(fdt.version(), version);
        assert_eq!(fdt.root(), ROOT);
        let got: Vec<_> = fdt.subnodes().collect();
        assert_eq!(got.len(), 20);
        for (i, s) in got.iter().enumerate() {
            let i = u64::try_from(i).unwrap();
            assert_eq!(s.data(), PhysAddr::new(0x1000 * (i + 1)));
            let size = version.has_blob_size().then_some(100 + i);
            assert_eq!(s.size(), size);
        }
        assert_eq!(fdt.subnode("user-7").unwrap().data(), PhysAddr::new(0x8000));
        assert_eq!(fdt.subnode("nobody"), None);
    }
}

#[test]
fn a_whole_page_is_read_up_to_totalsize() {
    let mut page = hand_v3();
    page.resize(4096, 0xa5);
    let fdt = KhoFdt::parse(&page).unwrap();
    assert_eq!(fdt.total_size(), 221);
    assert_eq!(fdt.root(), ROOT);
}

include!(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/dtc.rs"));

#[test]
#[cfg_attr(miri, ignore = "spawns dtc, which Miri cannot")]
fn dtc_decompiles_the_written_fdt() {
    use std::io::Write;
    use std::process::{Command, Stdio};

    let mut b = KhoFdtBuilder::new(ROOT);
    b.add_subnode("luo", BLOB, 0x2345);
    let bytes = b.build().unwrap();

    let child = Command::new("dtc")
        .args(["-I", "dtb", "-O", "dts", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) if skip_without_dtc("dtc_decompiles_the_written_fdt", &e) => return,
        Err(e) => panic!("cannot run dtc: {e}"),
    };
    child.stdin.take().unwrap().write_all(&bytes).unwrap();
    let out = child.wait_with_output().unwrap();
    let dts = String::from_utf8(out.stdout).unwrap();
    assert!(
        out.status.success(),
        "dtc failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // dtc shows an 8-byte value as two big-endian cells of the raw bytes:
    // the native-endian u64 appears with its low word first.
    let cells = |v: PhysAddr| {
        let b = v.as_u64().to_ne_bytes();
        let hi = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
        let lo = u32::from_be_bytes([b[4], b[5], b[6], b[7]]);
        alloc::format!("<0x{hi:02x} 0x{lo:02x}>")
    };
    assert!(dts.contains("compatible = \"kho-v3\";"), "{dts}");
    let map = alloc::format!("preserved-memory-map = {};", cells(ROOT));
    assert!(dts.contains(&map), "expected `{map}` in:\n{dts}");
    assert_eq!(cells(ROOT), "<0x604523 0x1000000>");
    let data = alloc::format!("preserved-data = {};", cells(BLOB));
    assert!(dts.contains(&data), "expected `{data}` in:\n{dts}");
    assert!(dts.contains("luo {"), "{dts}");
}

// ---- one test per FdtError variant ----

#[test]
fn error_malformed_bad_magic() {
    let mut bytes = hand_v3();
    bytes[0] = 0xde;
    let Err(FdtError::Malformed(e)) = KhoFdt::parse(&bytes) else {
        panic!("bad magic accepted")
    };
    assert_eq!(e.kind, FdtErrorKind::InvalidMagic);
    let Err(FdtError::Malformed(e)) = KhoFdt::parse(&[]) else {
        panic!("empty input accepted")
    };
    assert_eq!(e.kind, FdtErrorKind::InvalidLength);
}

#[test]
fn error_truncated() {
    let bytes = hand_v3();
    assert_eq!(
        KhoFdt::parse(&bytes[..200]).unwrap_err(),
        FdtError::Truncated {
            totalsize: 221,
            len: 200
        }
    );
}

#[test]
fn error_too_large() {
    let mut bytes = hand_v3();
    bytes[4..8].copy_from_slice(&4097u32.to_be_bytes());
    bytes.resize(8192, 0);
    assert_eq!(
        KhoFdt::parse(&bytes).unwrap_err(),
        FdtError::TooLarge {
            totalsize: 4097,
            max: 4096
        }
    );
}

#[test]
fn error_missing_compatible() {
    let bytes = raw(&[("preserved-memory-map", &ne(1))], &[]);
    assert_eq!(
        KhoFdt::parse(&bytes).unwrap_err(),
        FdtError::MissingCompatible
    );
}

#[test]
fn error_compatible_not_string() {
    for bad in [&b"kho-v3"[..], b"kho-v3\0kho-v2\0", b"\xff\xfe\0", b""] {
        let bytes = raw(
            &[("compatible", bad), ("preserved-memory-map", &ne(1))],
            &[],
        );
        assert_eq!(
            KhoFdt::parse(&bytes).unwrap_err(),
            FdtError::CompatibleNotString { len: bad.len() },
            "{bad:?}"
        );
    }
}

#[test]
fn error_unknown_compatible() {
    let bytes = raw(
        &[
            ("compatible", b"kho-v9\0"),
            ("preserved-memory-map", &ne(1)),
        ],
        &[],
    );
    let err = KhoFdt::parse(&bytes).unwrap_err();
    assert_eq!(
        err,
        FdtError::UnknownCompatible {
            found: FdtName::new("kho-v9")
        }
    );
    assert!(alloc::format!("{err}").contains("\"kho-v9\""));
}

#[test]
fn error_missing_memory_map() {
    let bytes = raw(&[("compatible", b"kho-v3\0")], &[]);
    assert_eq!(
        KhoFdt::parse(&bytes).unwrap_err(),
        FdtError::MissingMemoryMap
    );
}

#[test]
fn error_memory_map_length() {
    // A big-endian DT cell pair written by a careless writer is still 8
    // bytes; a single 4-byte cell is caught.
    let bytes = raw(
        &[
            ("compatible", b"kho-v2\0"),
            ("preserved-memory-map", &[0, 0, 0x10, 0]),
        ],
        &[],
    );
    assert_eq!(
        KhoFdt::parse(&bytes).unwrap_err(),
        FdtError::MemoryMapLength { len: 4 }
    );
}

#[test]
fn error_missing_data() {
    let bytes = raw(V3_ROOT, &[("blob-size", &ne(8))]);
    assert_eq!(
        KhoFdt::parse(&bytes).unwrap_err(),
        FdtError::MissingData {
            node: FdtName::new("user"),
            property: "preserved-data"
        }
    );
    // In kho-v1 the property is `fdt`: `preserved-data` does not count.
    let bytes = raw(
        &[
            ("compatible", b"kho-v1\0"),
            ("preserved-memory-map", &ne(0)),
        ],
        &[("preserved-data", &ne(0x1000))],
    );
    assert_eq!(
        KhoFdt::parse(&bytes).unwrap_err(),
        FdtError::MissingData {
            node: FdtName::new("user"),
            property: "fdt"
        }
    );
}

#[test]
fn error_data_length() {
    let bytes = raw(
        V3_ROOT,
        &[("preserved-data", &[1, 2, 3]), ("blob-size", &ne(8))],
    );
    assert_eq!(
        KhoFdt::parse(&bytes).unwrap_err(),
        FdtError::DataLength {
            node: FdtName::new("user"),
            property: "preserved-data",
            len: 3
        }
    );
}

#[test]
fn error_missing_blob_size() {
    let bytes = raw(V3_ROOT, &[("preserved-data", &ne(0x1000))]);
    assert_eq!(
        KhoFdt::parse(&bytes).unwrap_err(),
        FdtError::MissingBlobSize {
            node: FdtName::new("user")
        }
    );
    // kho-v2 has no blob-size: the same subnode is fine there.
    let bytes = raw(
        &[
            ("compatible", b"kho-v2\0"),
            ("preserved-memory-map", &ne(1)),
        ],
        &[("preserved-data", &ne(0x1000))],
    );
    assert_eq!(
        KhoFdt::parse(&bytes)
            .unwrap()
            .subnode("user")
            .unwrap()
            .size(),
        None
    );
}

#[test]
fn error_blob_size_length() {
    let sixteen = [0u8; 16];
    let bytes = raw(
        V3_ROOT,
        &[("preserved-data", &ne(0x1000)), ("blob-size", &sixteen)],
    );
    assert_eq!(
        KhoFdt::parse(&bytes).unwrap_err(),
        FdtError::BlobSizeLength {
            node: FdtName::new("user"),
            len: 16
        }
    );
}

#[test]
fn error_duplicate_subnode() {
    let mut w = FdtWriter::new().unwrap();
    let root = w.begin_node("").unwrap();
    w.property("compatible", b"kho-v2\0").unwrap();
    w.property("preserved-memory-map", &ne(1)).unwrap();
    for _ in 0..2 {
        let n = w.begin_node("twin").unwrap();
        w.property("preserved-data", &ne(0x1000)).unwrap();
        w.end_node(n).unwrap();
    }
    w.end_node(root).unwrap();
    let bytes = w.finish().unwrap();
    assert_eq!(
        KhoFdt::parse(&bytes).unwrap_err(),
        FdtError::DuplicateSubnode {
            node: FdtName::new("twin")
        }
    );
}

// ---- the builder's errors ----

#[test]
fn build_error_too_large() {
    let mut b = KhoFdtBuilder::new(ROOT);
    for i in 0..100 {
        b.add_subnode(&alloc::format!("a-rather-long-user-name-{i}"), BLOB, 1);
    }
    let Err(FdtBuildError::TooLarge { size, max: 4096 }) = b.build() else {
        panic!("oversized FDT built")
    };
    assert!(size > 4096);
}

#[test]
fn build_error_invalid_name() {
    for bad in ["", "9lives", "has space", "nul\0byte"] {
        let mut b = KhoFdtBuilder::new(ROOT);
        b.add_subnode(bad, BLOB, 1);
        assert_eq!(
            b.build().unwrap_err(),
            FdtBuildError::InvalidName {
                name: FdtName::new(bad)
            },
            "{bad:?}"
        );
    }
}

#[test]
fn build_error_duplicate_name() {
    let mut b = KhoFdtBuilder::new(ROOT);
    b.add_subnode("luo", BLOB, 1).add_subnode("luo", BLOB, 2);
    assert_eq!(
        b.build().unwrap_err(),
        FdtBuildError::DuplicateName {
            name: FdtName::new("luo")
        }
    );
}

#[test]
fn fdt_name_truncates_on_a_char_boundary() {
    let long: String = core::iter::repeat_n('é', 40).collect(); // 80 bytes
    let n = FdtName::new(&long);
    assert!(n.is_truncated());
    assert_eq!(n.as_str().len(), 64);
    assert!(alloc::format!("{n}").ends_with("..."));
    assert_eq!(FdtName::new("luo").as_str(), "luo");
}

#[test]
#[cfg_attr(
    miri,
    ignore = "heavy for Miri: 1 ms or more natively, thousands of times that interpreted"
)]
fn mutated_fdts_never_panic() {
    // Every single-byte corruption and every truncation of a valid FDT.
    let base = {
        let mut b = KhoFdtBuilder::new(ROOT);
        b.add_subnode("luo", BLOB, 7)
            .add_subnode("memblock", BLOB, 8);
        b.build().unwrap()
    };
    for len in 0..=base.len() {
        fuzz_one(&base[..len]);
    }
    for i in 0..base.len() {
        for v in [0x00, 0x01, 0x03, 0x7f, 0x80, 0xff] {
            let mut m = base.clone();
            m[i] = v;
            fuzz_one(&m);
        }
    }
    fuzz_one(&vec![0u8; 4096]);
}

/// Regenerates the fuzz seeds: `cargo test -p kho write_fdt_seeds -- --ignored`.
#[test]
#[ignore = "writes fuzz/corpus/fdt"]
fn write_fdt_seeds() {
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/fdt");
    let mut seeds: Vec<(&str, Vec<u8>)> = Vec::new();
    let mut v3 = KhoFdtBuilder::new(ROOT);
    v3.add_subnode("luo", BLOB, 0x2345)
        .add_subnode("memblock", PhysAddr::new(0x9000), 0x100);
    let v3 = v3.build().unwrap();
    let mut v2 = KhoFdtBuilder::new(ROOT).version(KhoVersion::V2);
    v2.add_subnode("luo", BLOB, 0);
    let v2 = v2.build().unwrap();
    let mut v1 = KhoFdtBuilder::new(ROOT).version(KhoVersion::V1);
    v1.add_subnode("memblock", BLOB, 0);
    let v1 = v1.build().unwrap();
    let mut page = v3.clone();
    page.resize(4096, 0);
    let mut bad_magic = v3.clone();
    bad_magic[0] = 0;
    seeds.push(("v3-two-subnodes", v3.clone()));
    seeds.push(("v2-one-subnode", v2));
    seeds.push(("v1-6.16", v1));
    seeds.push(("v3-whole-page", page));
    seeds.push(("v3-truncated", v3[..v3.len() / 2].to_vec()));
    seeds.push(("bad-magic", bad_magic));
    seeds.push((
        "v3-missing-blob-size",
        raw(V3_ROOT, &[("preserved-data", &ne(1))]),
    ));
    seeds.push((
        "unknown-compatible",
        raw(
            &[
                ("compatible", b"kho-v9\0"),
                ("preserved-memory-map", &ne(1)),
            ],
            &[],
        ),
    ));
    seeds.push(("v3-hand-built", hand_v3()));
    for (name, bytes) in seeds {
        std::fs::write(dir.join(name), bytes).unwrap();
    }
}

// ---- kho-v4 (issue 16) ------------------------------------------------------

fn hand_v4(compatible: &[u8]) -> Vec<u8> {
    Dtb::new()
        .begin("")
        .prop("compatible", compatible)
        .prop("preserved-memory-map", &ne(ROOT.as_u64()))
        .begin("LUO")
        .prop("preserved-data", &ne(BLOB.as_u64()))
        .prop("blob-size", &ne(32))
        .end()
        .end()
        .finish()
}

#[test]
fn kho_v4_alone_and_compound_golden_bytes() {
    for (compat, bytes) in [
        (KhoCompat::plain(KhoVersion::V4), &b"kho-v4\0"[..]),
        (KhoCompat::V4_RADIX, b"kho-v4;radix-v1\0"),
        (KhoCompat::V4_RADIX_VMALLOC, b"kho-v4;radix-v1;vmalloc-v1\0"),
    ] {
        let expected = hand_v4(bytes);
        let mut b = KhoFdtBuilder::new(ROOT).compat(compat);
        b.add_subnode("LUO", BLOB, 32);
        assert_eq!(b.build().unwrap(), expected, "{compat}");
        let fdt = KhoFdt::parse(&expected).unwrap();
        assert_eq!(fdt.version(), KhoVersion::V4);
        assert_eq!(fdt.compat(), compat);
        assert_eq!(
            alloc::format!("{}", fdt.compat()).as_bytes(),
            &bytes[..bytes.len() - 1]
        );
        let luo = fdt.subnode("LUO").unwrap();
        assert_eq!((luo.data(), luo.size()), (BLOB, Some(32)));
    }
    let c = KhoCompat::V4_RADIX_VMALLOC;
    assert_eq!(
        c.sub_components().collect::<Vec<_>>(),
        [KhoSubCompat::Radix, KhoSubCompat::Vmalloc]
    );
    assert!(
        KhoCompat::V4_RADIX.has(KhoSubCompat::Radix)
            && !KhoCompat::V4_RADIX.has(KhoSubCompat::Vmalloc)
    );
}

#[test]
fn the_writer_emits_every_version() {
    for version in [
        KhoVersion::V1,
        KhoVersion::V2,
        KhoVersion::V3,
        KhoVersion::V4,
    ] {
        let mut b = KhoFdtBuilder::new(ROOT).version(version);
        b.add_subnode("user", BLOB, 77);
        let fdt_bytes = b.build().unwrap();
        let fdt = KhoFdt::parse(&fdt_bytes).unwrap();
        assert_eq!(fdt.compat(), KhoCompat::plain(version));
        let size = version.has_blob_size().then_some(77);
        assert_eq!(fdt.subnode("user").unwrap().size(), size);
    }
}

fn parse_compat(c: &[u8]) -> Result<KhoCompat, FdtError> {
    KhoFdt::parse(&raw(
        &[("compatible", c), ("preserved-memory-map", &ne(1))],
        &[("preserved-data", &ne(2)), ("blob-size", &ne(3))],
    ))
    .map(|f| f.compat())
}

#[test]
fn error_unknown_sub_component_is_named() {
    let err = parse_compat(b"kho-v4;radix-v1;zswap-v1\0").unwrap_err();
    assert_eq!(
        err,
        FdtError::UnknownSubComponent {
            token: FdtName::new("zswap-v1")
        }
    );
    assert!(alloc::format!("{err}").contains("zswap-v1"));
    assert_eq!(
        parse_compat(b"kho-v4;radix-v2\0"),
        Err(FdtError::UnknownSubComponent {
            token: FdtName::new("radix-v2")
        })
    );
}

#[test]
fn error_missing_sub_component_is_named() {
    assert_eq!(
        parse_compat(b"kho-v4;vmalloc-v1\0"),
        Err(FdtError::MissingSubComponent {
            name: "radix-v1",
            found: FdtName::new("kho-v4;vmalloc-v1")
        })
    );
}

#[test]
fn error_sub_components_out_of_order() {
    assert_eq!(
        parse_compat(b"kho-v4;vmalloc-v1;radix-v1\0"),
        Err(FdtError::SubComponentOrder(
            crate::compat::CompatError::Unordered {
                position: 1,
                token: FdtName::new("radix-v1")
            }
        ))
    );
    assert_eq!(
        parse_compat(b"kho-v4;\0"),
        Err(FdtError::SubComponentOrder(
            crate::compat::CompatError::EmptyToken { position: 0 }
        ))
    );
}

#[test]
fn error_sub_components_on_an_older_version() {
    assert_eq!(
        parse_compat(b"kho-v3;radix-v1\0"),
        Err(FdtError::UnexpectedSubComponents {
            version: KhoVersion::V3,
            found: FdtName::new("kho-v3;radix-v1")
        })
    );
}
