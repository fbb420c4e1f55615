use std::ffi::OsString;
use std::os::fd::AsRawFd;

use super::*;
use crate::memmap::MemmapMode;
use crate::physio::{read_bytes, write_bytes};
use crate::testing::{MIB, mem};

fn args(v: &[&str]) -> Vec<OsString> {
    v.iter().map(OsString::from).collect()
}

#[test]
fn command_line_round_trip() {
    let a = NewKernelArgs {
        memfd: 3,
        e820: MemoryLayout::pc(16 << 30).unwrap(),
        setup_data: PhysAddr::new(0x1234_5000),
        strategy: Strategy::Skip,
        memmap: MemmapMode::Deferred,
        threads: 4,
        parallel_memmap_init: true,
        scheme: OURS.to_owned(),
        on_corruption: crate::OnCorruption::Salvage,
        updates: 7,
        generation: 3,
    };
    let v = KernelArgs::New(a.clone()).to_args();
    assert_eq!(v[0], NEW_KERNEL_SUBCOMMAND);
    assert_eq!(
        v[4],
        "0x0-0xa0000,0x100000-0xc0000000,0x100000000-0x440000000"
    );
    assert_eq!(
        KernelArgs::parse(v.clone()).unwrap(),
        Some(KernelArgs::New(a))
    );
    let mut bad = v.clone();
    bad[2] = "-1".into();
    assert!(matches!(
        KernelArgs::parse(bad),
        Err(ExecError::BadArg { what: "memfd", .. })
    ));
    assert!(matches!(
        parse_e820("0x2000-0x1000"),
        Err(ExecError::BadArg { what: "e820", .. })
    ));
    assert!(matches!(parse_e820("zz"), Err(ExecError::BadArg { .. })));
    assert!(matches!(parse_phys("0xg"), Err(ExecError::BadArg { .. })));
    assert_eq!(parse_phys("4096").unwrap(), PhysAddr::new(4096));
}

/// A chain's `--updates` and `--generation`: a generation past the chain,
/// zero or a count above `MAX_UPDATES` is refused.
#[test]
fn chain_arguments_round_trip_and_are_bounded() {
    let mut o = OldKernelArgs::new(64 * MIB, Strategy::Bulk);
    o.updates = 20;
    let v = KernelArgs::Old(o.clone()).to_args();
    assert_eq!(KernelArgs::parse(v).unwrap(), Some(KernelArgs::Old(o)));
    let base = [
        "__new-kernel",
        "--memfd",
        "3",
        "--e820",
        "0x0-0x4000000",
        "--setup-data",
        "0x1000",
        "--strategy",
        "bulk",
    ];
    let with = |extra: &[&str]| {
        let mut v = base.to_vec();
        v.extend_from_slice(extra);
        KernelArgs::parse(args(&v))
    };
    let Ok(Some(KernelArgs::New(n))) = with(&["--updates", "20", "--generation", "20"]) else {
        panic!("a chain's last generation parses");
    };
    assert_eq!((n.updates, n.generation), (20, 20));
    for bad in [
        &["--updates", "2", "--generation", "3"][..],
        &["--updates", "0"],
        &["--generation", "0"],
        &["--updates", "1001"],
    ] {
        assert!(
            matches!(with(bad), Err(ExecError::BadArg { .. })),
            "{bad:?}"
        );
    }
}

/// Every field of the old kernel's command line survives the round trip;
/// what is missing, unknown or malformed is refused; a user's command line
/// is not a kernel's.
#[test]
fn old_kernel_command_line_round_trip() {
    let mut a = OldKernelArgs::new(64 * MIB, Strategy::Bulk);
    assert_eq!(
        KernelArgs::parse(KernelArgs::Old(a.clone()).to_args()).unwrap(),
        Some(KernelArgs::Old(a.clone()))
    );
    a.workload = WorkloadKind::Fragmented;
    a.memfd_bytes = Some(3 * MIB);
    a.vm_1g_folios = Some(0);
    a.vm_2m_folios = Some(7);
    a.forget_pages = 2;
    a.seed = 11;
    a.print_phases = true;
    a.kho_scratch = "1M,2M,3M".parse().unwrap();
    a.scheme = "maple".to_owned();
    a.trace = Some("t.trace".into());
    a.dump_core = Some("x.core".into());
    a.abi = kho::KhoVersion::V3;
    let v = KernelArgs::Old(a.clone()).to_args();
    assert_eq!(v[0], OLD_KERNEL_SUBCOMMAND);
    assert_eq!(KernelArgs::parse(v).unwrap(), Some(KernelArgs::Old(a)));
    let parsed = KernelArgs::parse(args(&[
        OLD_KERNEL_SUBCOMMAND,
        "--machine-size=64M",
        "--strategy",
        "skip",
    ]))
    .unwrap();
    assert_eq!(
        parsed,
        Some(KernelArgs::Old(OldKernelArgs::new(
            64 * MIB,
            Strategy::Skip
        )))
    );
    let old = |v: &[&str]| KernelArgs::parse(args(&[&[OLD_KERNEL_SUBCOMMAND], v].concat()));
    assert!(matches!(
        old(&["--strategy", "skip"]),
        Err(ExecError::MissingArg("machine-size"))
    ));
    assert!(matches!(
        old(&["--machine-size", "64M", "--strategy", "fast"]),
        Err(ExecError::Strategy(_))
    ));
    assert!(matches!(
        old(&[
            "--machine-size",
            "64M",
            "--strategy",
            "skip",
            "--trace-file",
            "x"
        ]),
        Err(ExecError::UnknownArg(_))
    ));
    assert!(matches!(
        old(&["--machine-size", "64X", "--strategy", "skip"]),
        Err(ExecError::BadArg { .. })
    ));
    assert!(matches!(
        old(&["--machine-size", "64M", "--strategy", "skip", "--abi", "kho-v2"]),
        Err(ExecError::BadArg { what, .. }) if what.starts_with("abi")
    ));
    assert_eq!(KernelArgs::parse(args(&["run", "--json"])).unwrap(), None);
    assert_eq!(KernelArgs::parse(args(&[])).unwrap(), None);
}

#[test]
fn attach_refuses_what_is_not_a_memfd() {
    let a = NewKernelArgs {
        memfd: 0,
        e820: MemoryLayout::pc(64 * MIB).unwrap(),
        setup_data: PhysAddr::ZERO,
        strategy: Strategy::PerBlock,
        memmap: MemmapMode::Eager,
        threads: 1,
        parallel_memmap_init: false,
        scheme: OURS.to_owned(),
        on_corruption: crate::OnCorruption::Reject,
        updates: 1,
        generation: 1,
    };
    // fd 0 of a test is never a memfd.
    assert!(a.attach().is_err());
    // The arena's own memfd, by number, attaches.
    let m = mem(64 * MIB);
    let b = NewKernelArgs {
        memfd: m.fd().as_raw_fd(),
        ..a
    };
    let again = b.attach().unwrap();
    write_bytes(&m, PhysAddr::new(MIB), &[7; 8]).unwrap();
    assert_eq!(
        read_bytes(&again, PhysAddr::new(MIB), 8).unwrap(),
        vec![7; 8]
    );
}
