//! The x86 KHO hand-over in memory, from the old kernel to the new one:
//! the setup_data node, its `kho_data` and the `kho_scratch` array, written
//! by the old kernel ([`write_handover`]) and read, trusting nothing, by the
//! new one ([`read_setup_data`]). How the processes cross the exec is
//! [`crate::liveupdate`]'s exec protocol.
//!
//! ## On-memory layouts (little-endian, packed, as Linux's uapi header)
//!
//! Source: Linux `arch/x86/include/uapi/asm/setup_data.h` (`SETUP_KEXEC_KHO`
//! is 10; 9 is `SETUP_RNG_SEED`), filled by `setup_kho()` in
//! `arch/x86/kernel/kexec-bzimage64.c` and consumed by `add_kho()` in
//! `arch/x86/kernel/setup.c`, which hands the four fields to
//! `kho_populate(fdt_phys, fdt_len, scratch_phys, scratch_len)`.
//!
//! `struct setup_data` (16-byte header, then `len` bytes of payload):
//!
//! | offset | size | field  | meaning                                        |
//! |--------|------|--------|------------------------------------------------|
//! | 0      | 8    | `next` | phys of the next node, 0 ends the list          |
//! | 8      | 4    | `type` | `SETUP_*`; KHO is `SETUP_KEXEC_KHO` = 10        |
//! | 12     | 4    | `len`  | payload bytes; 32 for KHO                       |
//! | 16     | len  | `data` | payload                                        |
//!
//! `struct kho_data` (the payload of a `SETUP_KEXEC_KHO` node, 32 bytes):
//!
//! | offset | size | field          | meaning                                  |
//! |--------|------|----------------|------------------------------------------|
//! | 0      | 8    | `fdt_addr`     | phys of the KHO root FDT                 |
//! | 8      | 8    | `fdt_size`     | its length in bytes (Linux: `PAGE_SIZE`) |
//! | 16     | 8    | `scratch_addr` | phys of the `kho_scratch` array          |
//! | 24     | 8    | `scratch_size` | its length in **bytes** (16 per entry)   |
//!
//! `struct kho_scratch` (one entry of the array, 16 bytes), entries ordered
//! `[lowmem, global, node 0, node 1, ...]`:
//!
//! | offset | size | field  |
//! |--------|------|--------|
//! | 0      | 8    | `addr` |
//! | 8      | 8    | `size` |
//!
//! ## The reader is total
//!
//! The new kernel trusts nothing: every pointer and length is checked against
//! the firmware memory map before it is read, the list walk is bounded, and
//! every error names what was broken and where.
#![deny(
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::as_conversions,
    clippy::unwrap_used
)]

use kho::{MemError, PAGE_SIZE, PhysAddr, PhysRange};
use zerocopy::little_endian::{U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use crate::arena::PhysMem;
use crate::physio::{read_bytes, write_bytes};

/// `SETUP_KEXEC_KHO`: the node carries a [`KhoData`].
pub(crate) const SETUP_KEXEC_KHO: u32 = 10;

/// The longest setup_data list the reader walks (Linux defines ten types; a
/// longer list is a loop or garbage).
pub(crate) const MAX_SETUP_DATA_NODES: usize = 64;
/// The largest handover FDT accepted. Linux passes one page; the temporary
/// payload passes its manifest here (see `liveupdate`), hence the room.
pub(crate) const MAX_FDT_SIZE: u64 = 256 << 20;
/// The most scratch areas accepted: lowmem, global and one per node for
/// x86's `MAX_NUMNODES` (1 << NODES_SHIFT, 10).
pub(crate) const MAX_SCRATCH_AREAS: u64 = 2 + 1024;

/// `struct setup_data` without its flexible payload.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout, Unaligned,
)]
#[repr(C)]
pub(crate) struct SetupDataHeader {
    /// Phys of the next node, 0 ends the list.
    pub next: U64,
    /// `SETUP_*` type.
    pub kind: U32,
    /// Payload length in bytes.
    pub len: U32,
}
const _: () = assert!(size_of::<SetupDataHeader>() == 16);

/// `struct kho_data`: where the KHO metadata lies.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout, Unaligned,
)]
#[repr(C)]
pub(crate) struct KhoData {
    /// Phys of the root FDT.
    pub fdt_addr: U64,
    /// Its length in bytes.
    pub fdt_size: U64,
    /// Phys of the `kho_scratch` array.
    pub scratch_addr: U64,
    /// The array's length in bytes.
    pub scratch_size: U64,
}
const _: () = assert!(size_of::<KhoData>() == 32);

/// `struct kho_scratch`: one scratch area.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout, Unaligned,
)]
#[repr(C)]
pub(crate) struct KhoScratch {
    /// First byte.
    pub addr: U64,
    /// Length in bytes.
    pub size: U64,
}
const _: () = assert!(size_of::<KhoScratch>() == 16);

const HEADER_LEN: u64 = 16;
const KHO_DATA_LEN: u32 = 32;
/// Bytes of one `SETUP_KEXEC_KHO` node: the 16-byte header and the
/// 32-byte `kho_data`.
pub(crate) const KHO_NODE_LEN: u64 = 48;
const _: () = assert!(size_of::<SetupDataHeader>() + size_of::<KhoData>() == 48);
const SCRATCH_ENTRY_LEN: u64 = 16;

/// Errors of the hand-over, each naming what was broken and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KexecError {
    /// A structure that must be 8-byte aligned is not.
    #[error("{what} at {phys} is not 8-byte aligned")]
    Unaligned {
        /// What was being read.
        what: &'static str,
        /// Where.
        phys: PhysAddr,
    },
    /// A structure that does not lie inside one RAM range of the memory map.
    #[error("{what} at {phys:#x} of {len:#x} bytes is not inside one RAM range")]
    NotRam {
        /// What was being read.
        what: &'static str,
        /// Its claimed start (raw: it may not even be a valid address).
        phys: u64,
        /// Its claimed length.
        len: u64,
    },
    /// The setup_data list does not end within `MAX_SETUP_DATA_NODES`.
    #[error("setup_data list from {head} does not end within {max} nodes (a loop?)")]
    ChainTooLong {
        /// Head of the list.
        head: PhysAddr,
        /// The bound.
        max: usize,
    },
    /// A `SETUP_KEXEC_KHO` node whose payload is not one `kho_data`.
    #[error("SETUP_KEXEC_KHO node at {phys} has len {len}, expected {expected}")]
    KhoLen {
        /// The node.
        phys: PhysAddr,
        /// Its `len`.
        len: u32,
        /// `sizeof(struct kho_data)`.
        expected: u32,
    },
    /// Two `SETUP_KEXEC_KHO` nodes.
    #[error("second SETUP_KEXEC_KHO node at {second} (the first is at {first})")]
    DuplicateKho {
        /// The first node.
        first: PhysAddr,
        /// The second.
        second: PhysAddr,
    },
    /// `fdt_size` zero or too large.
    #[error("kho_data at {phys}: fdt_size {size:#x} is zero or above {max:#x}")]
    FdtSize {
        /// The kho_data.
        phys: PhysAddr,
        /// `fdt_size`.
        size: u64,
        /// `MAX_FDT_SIZE`.
        max: u64,
    },
    /// `scratch_size` is not a whole, non-zero, bounded number of entries.
    #[error("kho_data at {phys}: scratch_size {size:#x} is not 1..={max} entries of 16 bytes")]
    ScratchSize {
        /// The kho_data.
        phys: PhysAddr,
        /// `scratch_size`.
        size: u64,
        /// `MAX_SCRATCH_AREAS`.
        max: u64,
    },
    /// An empty scratch area.
    #[error("scratch area {index} at {addr:#x} is empty")]
    ScratchEmpty {
        /// Its index in the array.
        index: usize,
        /// Its `addr`.
        addr: u64,
    },
    /// A scratch area whose address or size is not page aligned.
    #[error("scratch area {index} at {addr:#x} of {size:#x} bytes is not page aligned")]
    ScratchUnaligned {
        /// Its index.
        index: usize,
        /// Its `addr`.
        addr: u64,
        /// Its `size`.
        size: u64,
    },
    /// A scratch area outside RAM (or whose end overflows).
    #[error("scratch area {index} at {addr:#x} of {size:#x} bytes is not inside one RAM range")]
    ScratchNotRam {
        /// Its index.
        index: usize,
        /// Its `addr`.
        addr: u64,
        /// Its `size`.
        size: u64,
    },
    /// Two scratch areas overlap.
    #[error("scratch areas {first} {first_range} and {second} {second_range} overlap")]
    ScratchOverlap {
        /// Index of the one.
        first: usize,
        /// Its range.
        first_range: PhysRange,
        /// Index of the other.
        second: usize,
        /// Its range.
        second_range: PhysRange,
    },
    /// The handover FDT lies in scratch, which the new kernel allocates from.
    #[error("handover FDT {fdt} overlaps scratch area {index} {area}")]
    FdtInScratch {
        /// The FDT's range.
        fdt: PhysRange,
        /// Index of the scratch area.
        index: usize,
        /// Its range.
        area: PhysRange,
    },
    /// The writer was given memory it cannot reach.
    #[error("writing {what}: {source}")]
    Write {
        /// What was being written.
        what: &'static str,
        /// The error.
        source: MemError,
    },
}

// ---------------------------------------------------------------------------
// Writer (old kernel)

impl KhoData {
    /// A `kho_data` naming the root FDT and the scratch array.
    pub(crate) fn new(fdt: PhysRange, scratch_array: PhysRange) -> Self {
        Self {
            fdt_addr: U64::new(fdt.start().as_u64()),
            fdt_size: U64::new(fdt.size()),
            scratch_addr: U64::new(scratch_array.start().as_u64()),
            scratch_size: U64::new(scratch_array.size()),
        }
    }
}

/// The bytes of a `kho_scratch` array for `areas`.
pub(crate) fn scratch_array_bytes(areas: &[PhysRange]) -> Vec<u8> {
    areas
        .iter()
        .flat_map(|r| {
            KhoScratch {
                addr: U64::new(r.start().as_u64()),
                size: U64::new(r.size()),
            }
            .as_bytes()
            .to_vec()
        })
        .collect()
}

/// The bytes of one `SETUP_KEXEC_KHO` node: header then `kho_data`.
pub(crate) fn setup_data_bytes(next: PhysAddr, kho: &KhoData) -> Vec<u8> {
    let header = SetupDataHeader {
        next: U64::new(next.as_u64()),
        kind: U32::new(SETUP_KEXEC_KHO),
        len: U32::new(KHO_DATA_LEN),
    };
    let mut out = header.as_bytes().to_vec();
    out.extend_from_slice(kho.as_bytes());
    out
}

/// Where the old kernel put the hand-over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HandoverImage {
    /// The head of the setup_data list (what `--setup-data` carries).
    pub setup_data: PhysAddr,
    /// Every byte written: the setup_data node and the scratch array (a
    /// kexec segment the next kernel reserves; never poisoned).
    pub range: PhysRange,
}

/// Writes, at `at` (8-byte aligned), one `SETUP_KEXEC_KHO` node whose
/// `kho_data` names `fdt` and a scratch array written right after the node,
/// as `setup_kho()` and `kho_fill_kimage()` do. `next` chains further nodes
/// (0 for none).
pub fn write_handover(
    mem: &PhysMem,
    at: PhysAddr,
    next: PhysAddr,
    fdt: PhysRange,
    scratch: &[PhysRange],
) -> Result<HandoverImage, KexecError> {
    let node_len = HEADER_LEN.saturating_add(u64::from(KHO_DATA_LEN));
    let array = scratch_array_bytes(scratch);
    let array_len = u64::try_from(array.len()).unwrap_or(u64::MAX);
    let too_big = || KexecError::NotRam {
        what: "hand-over image",
        phys: at.as_u64(),
        len: node_len.saturating_add(array_len),
    };
    let array_at = at.checked_add(node_len).ok_or_else(too_big)?;
    let array_range = PhysRange::from_start_size(array_at, array_len).map_err(|_| too_big())?;
    let kho = KhoData::new(fdt, array_range);
    write_bytes(mem, at, &setup_data_bytes(next, &kho)).map_err(|source| KexecError::Write {
        what: "setup_data",
        source,
    })?;
    write_bytes(mem, array_at, &array).map_err(|source| KexecError::Write {
        what: "kho_scratch array",
        source,
    })?;
    Ok(HandoverImage {
        setup_data: at,
        range: PhysRange::new(at, array_range.end()).map_err(|_| too_big())?,
    })
}

// ---------------------------------------------------------------------------
// Reader (new kernel)

/// What the new kernel learned from a validated `SETUP_KEXEC_KHO` node:
/// the arguments of `kho_populate`, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KhoHandover {
    /// The node that carried it.
    pub node: PhysAddr,
    /// The root FDT (range checked against RAM, outside scratch).
    pub fdt: PhysRange,
    /// The `kho_scratch` array itself.
    pub scratch_array: PhysRange,
    /// The scratch areas, in array order `[lowmem, global, node...]`.
    pub scratch: Vec<PhysRange>,
}

/// Checks that `[phys, phys + len)` lies in one RAM range and is 8-byte
/// aligned, then reads it.
fn read_checked(
    mem: &PhysMem,
    what: &'static str,
    phys: u64,
    len: u64,
) -> Result<Vec<u8>, KexecError> {
    let not_ram = || KexecError::NotRam { what, phys, len };
    let start = PhysAddr::new(phys);
    let range = PhysRange::from_start_size(start, len).map_err(|_| not_ram())?;
    if !mem.layout().is_ram(range) {
        return Err(not_ram());
    }
    if !start.is_aligned(8) {
        return Err(KexecError::Unaligned { what, phys: start });
    }
    let n = usize::try_from(len).map_err(|_| not_ram())?;
    read_bytes(mem, start, n).map_err(|_| not_ram())
}

/// Walks the setup_data list from `head` (0: no list) and returns the
/// validated KHO hand-over, or `None` if the list carries no
/// `SETUP_KEXEC_KHO` node (a boot without KHO). Other node types are
/// skipped after their extent is checked.
pub fn read_setup_data(mem: &PhysMem, head: PhysAddr) -> Result<Option<KhoHandover>, KexecError> {
    let mut found: Option<(PhysAddr, KhoData)> = None;
    let mut cur = head;
    let mut steps = 0usize;
    while cur != PhysAddr::ZERO {
        if steps == MAX_SETUP_DATA_NODES {
            return Err(KexecError::ChainTooLong {
                head,
                max: MAX_SETUP_DATA_NODES,
            });
        }
        steps = steps.saturating_add(1);
        let bytes = read_checked(mem, "setup_data header", cur.as_u64(), HEADER_LEN)?;
        let header = SetupDataHeader::read_from_bytes(&bytes).map_err(|_| KexecError::NotRam {
            what: "setup_data header",
            phys: cur.as_u64(),
            len: HEADER_LEN,
        })?;
        let payload_at = cur.as_u64().saturating_add(HEADER_LEN);
        let len = header.len.get();
        if header.kind.get() == SETUP_KEXEC_KHO {
            if len != KHO_DATA_LEN {
                return Err(KexecError::KhoLen {
                    phys: cur,
                    len,
                    expected: KHO_DATA_LEN,
                });
            }
            if let Some((first, _)) = found {
                return Err(KexecError::DuplicateKho { first, second: cur });
            }
            let bytes = read_checked(mem, "kho_data", payload_at, u64::from(len))?;
            let kho = KhoData::read_from_bytes(&bytes).map_err(|_| KexecError::NotRam {
                what: "kho_data",
                phys: payload_at,
                len: u64::from(len),
            })?;
            found = Some((cur, kho));
        } else {
            // Only the extent of a foreign node is checked.
            let range = PhysRange::from_start_size(PhysAddr::new(payload_at), u64::from(len));
            if !range.is_ok_and(|r| r.is_empty() || mem.layout().is_ram(r)) {
                return Err(KexecError::NotRam {
                    what: "setup_data payload",
                    phys: payload_at,
                    len: u64::from(len),
                });
            }
        }
        cur = PhysAddr::new(header.next.get());
    }
    match found {
        None => Ok(None),
        Some((node, kho)) => validate_kho(mem, node, &kho).map(Some),
    }
}

/// Validates a `kho_data` and the scratch array it names.
pub(crate) fn validate_kho(
    mem: &PhysMem,
    node: PhysAddr,
    kho: &KhoData,
) -> Result<KhoHandover, KexecError> {
    let kho_at = node.checked_add(HEADER_LEN).unwrap_or(node);
    let fdt_size = kho.fdt_size.get();
    if fdt_size == 0 || fdt_size > MAX_FDT_SIZE {
        return Err(KexecError::FdtSize {
            phys: kho_at,
            size: fdt_size,
            max: MAX_FDT_SIZE,
        });
    }
    let fdt_addr = kho.fdt_addr.get();
    let fdt_not_ram = || KexecError::NotRam {
        what: "handover FDT",
        phys: fdt_addr,
        len: fdt_size,
    };
    let fdt =
        PhysRange::from_start_size(PhysAddr::new(fdt_addr), fdt_size).map_err(|_| fdt_not_ram())?;
    if !mem.layout().is_ram(fdt) {
        return Err(fdt_not_ram());
    }

    let size = kho.scratch_size.get();
    let count = size / SCRATCH_ENTRY_LEN;
    if size == 0 || !size.is_multiple_of(SCRATCH_ENTRY_LEN) || count > MAX_SCRATCH_AREAS {
        return Err(KexecError::ScratchSize {
            phys: kho_at,
            size,
            max: MAX_SCRATCH_AREAS,
        });
    }
    let addr = kho.scratch_addr.get();
    let bytes = read_checked(mem, "kho_scratch array", addr, size)?;
    let array_not_ram = || KexecError::NotRam {
        what: "kho_scratch array",
        phys: addr,
        len: size,
    };
    let scratch_array =
        PhysRange::from_start_size(PhysAddr::new(addr), size).map_err(|_| array_not_ram())?;
    let entries = <[KhoScratch]>::ref_from_bytes(&bytes).map_err(|_| array_not_ram())?;

    let mut scratch: Vec<PhysRange> = Vec::with_capacity(entries.len());
    for (index, e) in entries.iter().enumerate() {
        let (addr, size) = (e.addr.get(), e.size.get());
        if size == 0 {
            return Err(KexecError::ScratchEmpty { index, addr });
        }
        if !PhysAddr::new(addr).is_page_aligned() || !size.is_multiple_of(PAGE_SIZE) {
            return Err(KexecError::ScratchUnaligned { index, addr, size });
        }
        let area = PhysRange::from_start_size(PhysAddr::new(addr), size)
            .ok()
            .filter(|r| mem.layout().is_ram(*r))
            .ok_or(KexecError::ScratchNotRam { index, addr, size })?;
        if let Some((first, first_range)) =
            scratch.iter().enumerate().find(|(_, r)| r.overlaps(area))
        {
            return Err(KexecError::ScratchOverlap {
                first,
                first_range: *first_range,
                second: index,
                second_range: area,
            });
        }
        scratch.push(area);
    }
    if let Some((index, area)) = scratch.iter().enumerate().find(|(_, r)| r.overlaps(fdt)) {
        return Err(KexecError::FdtInScratch {
            fdt,
            index,
            area: *area,
        });
    }
    Ok(KhoHandover {
        node,
        fdt,
        scratch_array,
        scratch,
    })
}

#[cfg(test)]
mod tests;
