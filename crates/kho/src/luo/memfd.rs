//! The memfd file handler's record (`memfd-v1`, `memfd-v2`,
//! `memfd-v2;vmalloc-v1`), and what every folio-listing handler shares: the
//! folio entry, its iterator and the handler error.
//!
//! Glossary:
//!
//! | name        | meaning                                                                |
//! |-------------|------------------------------------------------------------------------|
//! | record      | `struct memfd_luo_ser`: one page from `kho_alloc_preserve()`, the file's data handle |
//! | folio array | a vmalloc area ([`crate::vmalloc`]) of 16-byte folio entries           |
//! | folio entry | `struct memfd_luo_folio_ser`: a pfn, flags and the page index in the file |
//! | hole        | an entry whose pfn is 0: Linux skips it                                |
//!
//! # Layout (little-endian, `__packed`)
//!
//! `struct memfd_luo_ser`, `memfd-v2` (48 bytes; `memfd-v1` has no `seals`
//! and `flags`: 40 bytes, `nr_folios` at 16, `folios` at 24):
//!
//! | offset | size | field       | meaning                                          |
//! |--------|------|-------------|--------------------------------------------------|
//! | 0      | 8    | `pos`       | the file position (`f_pos`)                      |
//! | 8      | 8    | `size`      | the file size in bytes (`i_size`)                |
//! | 16     | 4    | `seals`     | `F_SEAL_*` bits (uapi), within `MEMFD_LUO_ALL_SEALS` = 0x3f |
//! | 20     | 4    | `flags`     | file flags; none defined, unused bits 0          |
//! | 24     | 8    | `nr_folios` | entries in the folio array                       |
//! | 32     | 16   | `folios`    | `struct kho_vmalloc` of the array                |
//!
//! `struct memfd_luo_folio_ser` (16 bytes, 256 per page):
//!
//! | bits / offset    | field   | meaning                                          |
//! |------------------|---------|--------------------------------------------------|
//! | word 0, 0..=51   | `pfn`   | first frame of the folio, 0 = hole               |
//! | word 0, 52..=63  | `flags` | `MEMFD_LUO_FOLIO_DIRTY` 1, `MEMFD_LUO_FOLIO_UPTODATE` 2 |
//! | 8 .. 16          | `index` | the folio's page offset in the file (`pgoff_t`)  |
//!
//! The folio's order is not recorded: it is the order the tracker holds the
//! folio at (`kho_preserve_folio()`), which the cross-layer check
//! ([`crate::crosscheck`]) compares.
//!
//! Sources: torvalds/linux@ac2d8102c4b8 and @32cb2729c956
//! `include/linux/kho/abi/memfd.h` (`memfd-v1`); a `memfd-v2` memfd.h (u32
//! `seals`, u32 `flags`) and sjp38/linux@ec4967c2db14 (an earlier
//! `memfd-v2` draft with `seals:8` and 56 reserved bits: the same bytes for
//! every seal set and zero flags); linux-mm/linux-mm@fb2257f1798a
//! `mm/memfd_luo.c` (the record and folios preserved, holes skipped, seals
//! checked on retrieve); the RFC spelling `memfd-v2;vmalloc-v1`.
//! linux-mm/linux-mm@c30cc99c09e5 has a feature-header variant
//! (`struct luo_feature_hdr` before `pos`, handler name `memfd`) that is
//! not read: a file of that handler is listed as unknown.

use core::fmt;

use zerocopy::byteorder::little_endian::{U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use crate::addr::{Pfn, PhysAddr};
use crate::compat::Compound;
use crate::mem::PageMap;
use crate::phys::{PhysReader, ReadError};
use crate::tracker::{Tracker, Unpreserved, expect_page};
use crate::vmalloc::{KHO_VMALLOC_COMPATIBLE, KhoVmalloc, VmallocArray, VmallocError};

/// `memfd-v1`.
pub const MEMFD_V1_COMPATIBLE: &str = "memfd-v1";
/// `memfd-v2`'s base.
pub const MEMFD_V2_COMPATIBLE: &str = "memfd-v2";
/// Folio flag: written by the user.
pub const MEMFD_LUO_FOLIO_DIRTY: u16 = 1 << 0;
/// Folio flag: zeroed or written.
pub const MEMFD_LUO_FOLIO_UPTODATE: u16 = 1 << 1;
/// The seals `memfd-v2` preserves: `F_SEAL_SEAL`, `SHRINK`, `GROW`,
/// `WRITE`, `FUTURE_WRITE`, `EXEC`.
pub const MEMFD_LUO_ALL_SEALS: u32 = 0x3f;

/// `struct memfd_luo_ser` of `memfd-v1`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout, Unaligned,
)]
#[repr(C)]
pub struct MemfdLuoSerV1 {
    pos: U64,
    size: U64,
    nr_folios: U64,
    folios: KhoVmalloc,
}

/// `struct memfd_luo_ser` of `memfd-v2`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout, Unaligned,
)]
#[repr(C)]
pub struct MemfdLuoSer {
    pos: U64,
    size: U64,
    seals: U32,
    flags: U32,
    nr_folios: U64,
    folios: KhoVmalloc,
}

/// `struct memfd_luo_folio_ser` (and `struct guest_memfd_luo_folio_ser`,
/// the same layout).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout, Unaligned,
)]
#[repr(C)]
pub struct MemfdLuoFolioSer {
    pfn_flags: U64,
    index: U64,
}

const _: () = assert!(size_of::<MemfdLuoSerV1>() == 40);
const _: () = assert!(size_of::<MemfdLuoSer>() == 48);
const _: () = assert!(size_of::<MemfdLuoFolioSer>() == 16);

const PFN_BITS: u32 = 52;
const PFN_MASK: u64 = (1 << PFN_BITS) - 1;

impl MemfdLuoSerV1 {
    /// A record.
    pub fn new(pos: u64, size: u64, nr_folios: u64, folios: KhoVmalloc) -> Self {
        Self {
            pos: U64::new(pos),
            size: U64::new(size),
            nr_folios: U64::new(nr_folios),
            folios,
        }
    }
}

impl MemfdLuoSer {
    /// A record.
    pub fn new(
        pos: u64,
        size: u64,
        seals: u32,
        flags: u32,
        nr_folios: u64,
        folios: KhoVmalloc,
    ) -> Self {
        Self {
            pos: U64::new(pos),
            size: U64::new(size),
            seals: U32::new(seals),
            flags: U32::new(flags),
            nr_folios: U64::new(nr_folios),
            folios,
        }
    }
}

impl MemfdLuoFolioSer {
    /// An entry; `None` if `pfn` needs more than 52 bits or `flags` more than 12.
    pub fn new(pfn: u64, flags: u16, index: u64) -> Option<Self> {
        if pfn > PFN_MASK || flags >= 1 << 12 {
            return None;
        }
        Some(Self {
            pfn_flags: U64::new(pfn | (u64::from(flags) << PFN_BITS)),
            index: U64::new(index),
        })
    }

    /// The raw pfn (0: a hole).
    pub fn pfn(&self) -> u64 {
        self.pfn_flags.get() & PFN_MASK
    }

    /// The flags.
    pub fn flags(&self) -> u16 {
        u16::try_from(self.pfn_flags.get() >> PFN_BITS).unwrap_or(u16::MAX)
    }

    /// The page index in the file.
    pub fn index(&self) -> u64 {
        self.index.get()
    }
}

/// The memfd ABIs this crate reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MemfdVersion {
    /// `memfd-v1` (released kernels): no seals.
    V1,
    /// `memfd-v2`, also spelled `memfd-v2;vmalloc-v1`: seals and flags.
    V2,
}

impl MemfdVersion {
    /// The version `compatible` names: `memfd-v1`, or `memfd-v2` with at
    /// most the `vmalloc-v1` sub-component.
    pub fn from_compatible(s: &str) -> Option<Self> {
        let c = Compound::parse(s).ok()?;
        match c.base() {
            MEMFD_V1_COMPATIBLE if !c.is_compound() => Some(Self::V1),
            MEMFD_V2_COMPATIBLE if c.tokens().all(|t| t == KHO_VMALLOC_COMPATIBLE) => {
                Some(Self::V2)
            }
            _ => None,
        }
    }
}

/// Why a handler's record was rejected: the first broken rule, with the
/// record's address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HandlerError {
    /// The file's data handle is 0.
    #[error("{what}: the data handle is null")]
    NullData {
        /// The handler.
        what: &'static str,
    },
    /// The record is not page aligned (Linux allocates it as a page).
    #[error("{what}: record {ser} is not page aligned")]
    Unaligned {
        /// The handler.
        what: &'static str,
        /// The record.
        ser: PhysAddr,
    },
    /// The record could not be read.
    #[error("{what}: record {ser}: {source}")]
    Read {
        /// The handler.
        what: &'static str,
        /// The record.
        ser: PhysAddr,
        /// Why.
        source: ReadError,
    },
    /// The record's page is not preserved at order 0.
    #[error("{what}: record {ser}: {source}")]
    NotPreserved {
        /// The handler.
        what: &'static str,
        /// The record.
        ser: PhysAddr,
        /// How the tracker holds it.
        source: Unpreserved,
    },
    /// Seals Linux refuses to restore.
    #[error("memfd: record {ser}: seals {seals:#x} outside {known:#x}")]
    UnknownSeals {
        /// The record.
        ser: PhysAddr,
        /// `seals`.
        seals: u32,
        /// [`MEMFD_LUO_ALL_SEALS`].
        known: u32,
    },
    /// File flags Linux refuses to restore.
    #[error("{what}: record {ser}: flags {flags:#x} outside {known:#x}")]
    UnknownFlags {
        /// The handler.
        what: &'static str,
        /// The record.
        ser: PhysAddr,
        /// `flags`.
        flags: u64,
        /// The known flags.
        known: u64,
    },
    /// A size Linux refuses (guest_memfd: zero or not page aligned).
    #[error("{what}: record {ser}: size {size:#x} is zero or not page aligned")]
    BadSize {
        /// The handler.
        what: &'static str,
        /// The record.
        ser: PhysAddr,
        /// `size`.
        size: u64,
    },
    /// The record's array (folios, memory attributes) broke a vmalloc rule.
    #[error("{what}: record {ser}: {array}: {source}")]
    Array {
        /// The handler.
        what: &'static str,
        /// The record.
        ser: PhysAddr,
        /// Which array.
        array: &'static str,
        /// The rule broken.
        source: VmallocError,
    },
    /// A folio entry with flags the handler does not define.
    #[error("{what}: record {ser}: folio {slot} at {entry}: flags {flags:#x} outside {known:#x}")]
    FolioFlags {
        /// The handler.
        what: &'static str,
        /// The record.
        ser: PhysAddr,
        /// The folio's index in the array.
        slot: u64,
        /// The entry's address.
        entry: PhysAddr,
        /// Its flags.
        flags: u16,
        /// The known flags.
        known: u16,
    },
}

impl HandlerError {
    /// The address the error names: the broken entry, array page or record
    /// (`None`: a null handle).
    pub fn phys(&self) -> Option<PhysAddr> {
        match *self {
            Self::NullData { .. } => None,
            Self::FolioFlags { entry, .. } => Some(entry),
            Self::Array { ser, source, .. } => source.phys().or(Some(ser)),
            Self::Unaligned { ser, .. }
            | Self::Read { ser, .. }
            | Self::NotPreserved { ser, .. }
            | Self::UnknownSeals { ser, .. }
            | Self::UnknownFlags { ser, .. }
            | Self::BadSize { ser, .. } => Some(ser),
        }
    }
}

/// Reads a handler's record: non-null, page aligned, readable, preserved.
pub(crate) fn read_record<T, M>(
    reader: PhysReader<'_, '_, M>,
    tracker: Tracker<'_>,
    what: &'static str,
    data: u64,
) -> Result<(PhysAddr, T), HandlerError>
where
    T: FromBytes + IntoBytes,
    M: PageMap + ?Sized,
{
    if data == 0 {
        return Err(HandlerError::NullData { what });
    }
    let ser = PhysAddr::new(data);
    if !ser.is_page_aligned() {
        return Err(HandlerError::Unaligned { what, ser });
    }
    let v = reader
        .read::<T>(ser)
        .map_err(|source| HandlerError::Read { what, ser, source })?;
    expect_page(tracker, ser).map_err(|source| HandlerError::NotPreserved { what, ser, source })?;
    Ok((ser, v))
}

/// A validated memfd record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemfdFile {
    /// The record's address.
    pub ser: PhysAddr,
    /// Its ABI.
    pub version: MemfdVersion,
    /// `pos`.
    pub pos: u64,
    /// `size` in bytes.
    pub size: u64,
    /// `seals` (0 in `memfd-v1`).
    pub seals: u32,
    /// `flags` (0 in `memfd-v1`).
    pub flags: u32,
    /// `nr_folios`.
    pub nr_folios: u64,
    /// The folio array's descriptor.
    pub folios: KhoVmalloc,
}

impl MemfdFile {
    /// The handler's name in errors.
    pub const WHAT: &'static str = "memfd";

    /// Reads and checks the record whose handle is `data`.
    pub fn read<M: PageMap + ?Sized>(
        reader: PhysReader<'_, '_, M>,
        tracker: Tracker<'_>,
        data: u64,
        version: MemfdVersion,
    ) -> Result<Self, HandlerError> {
        let this = match version {
            MemfdVersion::V1 => {
                let (ser, r) = read_record::<MemfdLuoSerV1, M>(reader, tracker, Self::WHAT, data)?;
                Self {
                    ser,
                    version,
                    pos: r.pos.get(),
                    size: r.size.get(),
                    seals: 0,
                    flags: 0,
                    nr_folios: r.nr_folios.get(),
                    folios: r.folios,
                }
            }
            MemfdVersion::V2 => {
                let (ser, r) = read_record::<MemfdLuoSer, M>(reader, tracker, Self::WHAT, data)?;
                Self {
                    ser,
                    version,
                    pos: r.pos.get(),
                    size: r.size.get(),
                    seals: r.seals.get(),
                    flags: r.flags.get(),
                    nr_folios: r.nr_folios.get(),
                    folios: r.folios,
                }
            }
        };
        if this.seals & !MEMFD_LUO_ALL_SEALS != 0 {
            return Err(HandlerError::UnknownSeals {
                ser: this.ser,
                seals: this.seals,
                known: MEMFD_LUO_ALL_SEALS,
            });
        }
        Ok(this)
    }

    /// The folio entries, in array order (holes included).
    pub fn folios<'a, M: PageMap + ?Sized>(
        &self,
        reader: PhysReader<'a, 'a, M>,
        tracker: Tracker<'a>,
    ) -> Result<Folios<'a, M>, HandlerError> {
        Folios::open(
            reader,
            tracker,
            Self::WHAT,
            self.ser,
            self.folios,
            self.nr_folios,
            MEMFD_LUO_FOLIO_DIRTY | MEMFD_LUO_FOLIO_UPTODATE,
        )
    }
}

/// One folio entry of a memfd or guest_memfd.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FolioEntry {
    /// Its index in the array.
    pub slot: u64,
    /// The entry's address.
    pub entry: PhysAddr,
    /// The folio's first frame (`None`: a hole, skipped by Linux).
    pub pfn: Option<Pfn>,
    /// Its flags.
    pub flags: u16,
    /// Its page offset in the file.
    pub index: u64,
}

/// The folio entries of a record's array.
pub struct Folios<'a, M: ?Sized> {
    array: Option<VmallocArray<'a, M, MemfdLuoFolioSer>>,
    what: &'static str,
    ser: PhysAddr,
    known: u16,
    done: bool,
}

impl<M: ?Sized> fmt::Debug for Folios<'_, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Folios")
            .field("what", &self.what)
            .field("ser", &self.ser)
            .field("array", &self.array)
            .finish()
    }
}

impl<'a, M: PageMap + ?Sized> Folios<'a, M> {
    pub(crate) fn open(
        reader: PhysReader<'a, 'a, M>,
        tracker: Tracker<'a>,
        what: &'static str,
        ser: PhysAddr,
        desc: KhoVmalloc,
        count: u64,
        known: u16,
    ) -> Result<Self, HandlerError> {
        // No folio: Linux neither writes nor reads the array.
        let array = if count == 0 {
            None
        } else {
            Some(
                VmallocArray::new(reader, tracker, desc, count).map_err(|source| {
                    HandlerError::Array {
                        what,
                        ser,
                        array: "folio array",
                        source,
                    }
                })?,
            )
        };
        Ok(Self {
            array,
            what,
            ser,
            known,
            done: false,
        })
    }
}

impl<M: PageMap + ?Sized> Iterator for Folios<'_, M> {
    type Item = Result<FolioEntry, HandlerError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let (what, ser, known) = (self.what, self.ser, self.known);
        let item = self.array.as_mut()?.next().map(|r| {
            let e = r.map_err(|source| HandlerError::Array {
                what,
                ser,
                array: "folio array",
                source,
            })?;
            let flags = e.value.flags();
            if flags & !known != 0 {
                return Err(HandlerError::FolioFlags {
                    what,
                    ser,
                    slot: e.slot,
                    entry: e.phys,
                    flags,
                    known,
                });
            }
            Ok(FolioEntry {
                slot: e.slot,
                entry: e.phys,
                pfn: Pfn::new(e.value.pfn()).filter(|p| p.as_u64() != 0),
                flags,
                index: e.value.index(),
            })
        });
        if !matches!(item, Some(Ok(_))) {
            self.done = true;
        }
        item
    }
}

impl fmt::Display for MemfdVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::V1 => MEMFD_V1_COMPATIBLE,
            Self::V2 => MEMFD_V2_COMPATIBLE,
        })
    }
}
