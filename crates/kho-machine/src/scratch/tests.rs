use super::*;
use crate::testing::GIB;

/// A bump allocator over [base, end) that records frees.
struct Bump {
    next: u64,
    end: u64,
    freed: Vec<PhysRange>,
}

impl ScratchAlloc for Bump {
    fn alloc(
        &mut self,
        size: u64,
        align: u64,
        below: PhysAddr,
        _nid: Option<usize>,
    ) -> Option<PhysAddr> {
        let a = self.next.div_ceil(align) * align;
        let e = a.checked_add(size)?;
        if e > self.end || e > below.as_u64() {
            return None;
        }
        self.next = e;
        Some(PhysAddr::new(a))
    }
    fn free(&mut self, range: PhysRange) {
        self.freed.push(range);
    }
}

#[test]
fn scale_sizing_follows_linux_formula() {
    // A 16 GiB machine: 40 MiB of kernel below 4 GiB, 296 MiB in all.
    let kern = KernReserved {
        below_low_limit: 40 * MIB,
        total: 296 * MIB,
        per_node: vec![296 * MIB],
    };
    let s = ScratchSizing::default().sizes(&kern);
    // lowmem = round_up(40 * 2) = 80 MiB; global = round_up(592 - 80) = 512 MiB;
    // node 0 = round_up(592) = 592 MiB.
    assert_eq!(s.lowmem, 80 * MIB);
    assert_eq!(s.global, 512 * MIB);
    assert_eq!(s.per_node, vec![592 * MIB]);

    // Rounding to the 2 MiB CMA granule: 1 MiB + 4 KiB at 200% -> 4 MiB.
    let odd = KernReserved {
        below_low_limit: MIB + 4096,
        total: 3 * MIB + 4096,
        per_node: vec![3 * MIB + 4096],
    };
    let s = ScratchSizing::Scale(200).sizes(&odd);
    assert_eq!(s.lowmem, 4 * MIB); // 2 MiB + 8 KiB rounds up to 4 MiB
    assert_eq!(s.global, 4 * MIB); // 6 MiB + 8 KiB - 4 MiB rounds up to 4 MiB
    assert_eq!(s.per_node, vec![8 * MIB]);

    // 50%: all-low kernel, where Linux's subtraction would wrap.
    let low = KernReserved {
        below_low_limit: 3 * MIB,
        total: 3 * MIB,
        per_node: vec![3 * MIB],
    };
    let s = ScratchSizing::Scale(50).sizes(&low);
    assert_eq!(s.lowmem, 2 * MIB);
    assert_eq!(s.global, SCRATCH_MIN_SIZE);
    assert_eq!(s.per_node, vec![2 * MIB]);

    // Nothing reserved: every area gets the floor.
    let s = ScratchSizing::default().sizes(&KernReserved {
        per_node: vec![0],
        ..Default::default()
    });
    assert_eq!(
        (s.lowmem, s.global, s.per_node),
        (SCRATCH_MIN_SIZE, SCRATCH_MIN_SIZE, vec![SCRATCH_MIN_SIZE])
    );
}

#[test]
fn explicit_sizing_and_parse() {
    let e: ScratchSizing = "64M,1G,3M".parse().unwrap();
    assert_eq!(
        e,
        ScratchSizing::Explicit {
            lowmem: 64 * MIB,
            global: GIB,
            pernode: 3 * MIB
        }
    );
    let s = e.sizes(&KernReserved {
        per_node: vec![0, 0],
        ..Default::default()
    });
    assert_eq!(s.lowmem, 64 * MIB);
    assert_eq!(s.global, GIB);
    assert_eq!(s.per_node, vec![4 * MIB, 4 * MIB]);
    assert_eq!("150%".parse(), Ok(ScratchSizing::Scale(150)));
    for bad in ["", "%", "x%", "1M,2M", "1M,2M,3M,4M", "0,0,0", "1Q,1M,1M"] {
        assert!(
            matches!(
                bad.parse::<ScratchSizing>(),
                Err(ScratchError::Parse { .. })
            ),
            "{bad}"
        );
    }
    assert_eq!(memparse("0x10k"), Some(16 * 1024));
    assert_eq!(memparse("1T"), Some(1 << 40));
    assert_eq!(memparse("17E"), None);
}

#[test]
fn reserve_allocates_in_array_order_and_unwinds() {
    let kern = KernReserved {
        below_low_limit: 3 * MIB,
        total: 5 * MIB,
        per_node: vec![5 * MIB],
    };
    let mut a = Bump {
        next: MIB,
        end: GIB,
        freed: vec![],
    };
    let areas = kho_reserve_scratch(&ScratchSizing::default(), &kern, &mut a).unwrap();
    let r = |s, n| PhysRange::from_start_size(PhysAddr::new(s), n).unwrap();
    assert_eq!(
        areas.as_slice(),
        &[
            r(2 * MIB, 6 * MIB),
            r(8 * MIB, 4 * MIB),
            r(12 * MIB, 10 * MIB)
        ]
    );
    assert_eq!(areas.total(), 20 * MIB);
    assert_eq!(ScratchAreas::kind(2), ScratchKind::Node(0));
    // Preserving into scratch is refused, next to it is fine.
    assert!(matches!(
        areas.check_preserve(r(9 * MIB, 4096)),
        Err(ScratchError::PreservedInScratch {
            area: ScratchKind::Global,
            ..
        })
    ));
    assert!(areas.check_preserve(r(22 * MIB, 4096)).is_ok());

    // Room for lowmem and global but not the node: both are freed.
    let mut small = Bump {
        next: MIB,
        end: 14 * MIB,
        freed: vec![],
    };
    assert_eq!(
        kho_reserve_scratch(&ScratchSizing::default(), &kern, &mut small),
        Err(ScratchError::Alloc {
            area: ScratchKind::Node(0),
            size: 10 * MIB
        })
    );
    assert_eq!(small.freed, vec![r(8 * MIB, 4 * MIB), r(2 * MIB, 6 * MIB)]);
}
