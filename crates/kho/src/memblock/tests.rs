use alloc::vec::Vec;

use vm_fdt::FdtWriter;

use super::*;

type Props<'a> = &'a [(&'a str, &'a [u8])];

fn fdt(root_compat: &str, regions: &[(&str, Props<'_>)]) -> Vec<u8> {
    let mut w = FdtWriter::new().unwrap();
    let root = w.begin_node("").unwrap();
    w.property_string("compatible", root_compat).unwrap();
    for (name, props) in regions {
        let n = w.begin_node(name).unwrap();
        for (k, v) in *props {
            w.property(k, v).unwrap();
        }
        w.end_node(n).unwrap();
    }
    w.end_node(root).unwrap();
    w.finish().unwrap()
}

const REGION: &[(&str, &[u8])] = &[
    ("compatible", b"reserve-mem-v1\0"),
    ("start", &0x4000_0000u64.to_ne_bytes()),
    ("size", &0x20_0000u64.to_ne_bytes()),
];

#[test]
fn the_writer_and_a_hand_written_blob_agree() {
    let hand = fdt("memblock-v1", &[("trace", REGION)]);
    let built = build_memblock_fdt(&[("trace", PhysAddr::new(0x4000_0000), 0x20_0000)]).unwrap();
    assert_eq!(built, hand);
    let mb = MemblockFdt::parse(&hand).unwrap();
    let r: Vec<_> = mb.regions().collect();
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].name, "trace");
    assert_eq!(
        r[0].range,
        PhysRange::from_start_size(PhysAddr::new(0x4000_0000), 0x20_0000).unwrap()
    );
    // `start` is the raw native-endian bytes, not a big-endian cell.
    let at = hand
        .windows(8)
        .position(|w| w == 0x4000_0000u64.to_ne_bytes())
        .unwrap();
    assert_eq!(&hand[at..at + 8], &[0, 0, 0, 0x40, 0, 0, 0, 0]);
}

#[test]
fn error_root_compatible() {
    let e = MemblockFdt::parse(&fdt("memblock-v2", &[])).unwrap_err();
    assert_eq!(
        e,
        MemblockError::Compatible {
            node: FdtName::new("/"),
            found: FdtName::new("memblock-v2"),
            expected: "memblock-v1"
        }
    );
}

#[test]
fn error_region_compatible_and_properties() {
    let bad: &[(&str, &[u8])] = &[("compatible", b"reserve-mem-v2\0")];
    assert!(matches!(
        MemblockFdt::parse(&fdt("memblock-v1", &[("r", bad)])),
        Err(MemblockError::Compatible {
            expected: "reserve-mem-v1",
            ..
        })
    ));
    let short: &[(&str, &[u8])] = &[
        ("compatible", b"reserve-mem-v1\0"),
        ("start", &[0, 0, 0, 1]),
        ("size", &1u64.to_ne_bytes()),
    ];
    assert_eq!(
        MemblockFdt::parse(&fdt("memblock-v1", &[("r", short)])).unwrap_err(),
        MemblockError::Property {
            node: FdtName::new("r"),
            property: "start"
        }
    );
    let over: &[(&str, &[u8])] = &[
        ("compatible", b"reserve-mem-v1\0"),
        ("start", &u64::MAX.to_ne_bytes()),
        ("size", &2u64.to_ne_bytes()),
    ];
    assert!(matches!(
        MemblockFdt::parse(&fdt("memblock-v1", &[("r", over)])),
        Err(MemblockError::Overflow { size: 2, .. })
    ));
}

#[test]
fn error_malformed_and_oversized() {
    assert!(matches!(
        MemblockFdt::parse(&[0u8; 64]),
        Err(MemblockError::Malformed(_))
    ));
    let mut big = fdt("memblock-v1", &[]);
    big[4..8].copy_from_slice(&5000u32.to_be_bytes());
    assert!(matches!(
        MemblockFdt::parse(&big),
        Err(MemblockError::Size {
            totalsize: 5000,
            ..
        })
    ));
}
