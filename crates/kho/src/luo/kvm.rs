//! The guest_memfd (`guest_memfd_luo_v1`) and KVM VM (`kvm_vm_luo_v1`) file
//! handlers' records.
//!
//! A VM is preserved as two kinds of files in one session: the VM itself
//! (its type and memory attributes) and one guest_memfd per memory region,
//! whose `vm_token` is the VM file's token in the same session.
//!
//! # Layout (little-endian, `__packed`)
//!
//! `struct guest_memfd_luo_ser` (48 bytes, a page from `kho_alloc_preserve()`):
//!
//! | offset | size | field       | meaning                                               |
//! |--------|------|-------------|-------------------------------------------------------|
//! | 0      | 8    | `size`      | file size in bytes: not zero, page aligned            |
//! | 8      | 8    | `flags`     | `GUEST_MEMFD_LUO_FLAG_MMAP` 1, `_INIT_SHARED` 2       |
//! | 16     | 8    | `nr_folios` | entries in the folio array                            |
//! | 24     | 8    | `vm_token`  | token of the session's `kvm_vm_luo_v1` file           |
//! | 32     | 16   | `folios`    | `struct kho_vmalloc` of 16-byte folio entries (as memfd's), flag `GUEST_MEMFD_LUO_FOLIO_UPTODATE` 1 |
//!
//! `struct kvm_luo_ser` (32 bytes):
//!
//! | offset | size | field          | meaning                                          |
//! |--------|------|----------------|--------------------------------------------------|
//! | 0      | 8    | `type`         | the VM type                                      |
//! | 8      | 8    | `nr_mem_attrs` | entries in the attribute array                   |
//! | 16     | 16   | `mem_attrs`    | `struct kho_vmalloc` of `struct kvm_luo_mem_attr` {`gfn` u64, `attributes` u64} |
//!
//! guest_memfd preserves only order-0 folios: its `can_preserve()` refuses a
//! mapping with large folio support.
//!
//! Sources: linux-mm/linux-mm@bd5682197f96 `include/linux/kho/abi/kvm.h`;
//! linux-mm/linux-mm@aecca8d1e091 `virt/kvm/guest_memfd_luo.c` (size and
//! flag checks on retrieve, `vm_token` resolved in the same session, holes
//! skipped, no large folios).

use zerocopy::byteorder::little_endian::U64;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use super::memfd::{Folios, HandlerError, MemfdLuoFolioSer, read_record};
use crate::addr::{PAGE_SIZE, PhysAddr};
use crate::mem::PageMap;
use crate::phys::PhysReader;
use crate::tracker::Tracker;
use crate::vmalloc::{KhoVmalloc, VmallocArray};

/// The guest_memfd handler.
pub const GUEST_MEMFD_LUO_FH_COMPATIBLE: &str = "guest_memfd_luo_v1";
/// The KVM VM handler.
pub const KVM_LUO_FH_COMPATIBLE: &str = "kvm_vm_luo_v1";
/// guest_memfd flag: host mmap allowed.
pub const GUEST_MEMFD_LUO_FLAG_MMAP: u64 = 1 << 0;
/// guest_memfd flag: memory starts shared.
pub const GUEST_MEMFD_LUO_FLAG_INIT_SHARED: u64 = 1 << 1;
/// The guest_memfd flags Linux restores.
pub const GUEST_MEMFD_LUO_SUPPORTED_FLAGS: u64 =
    GUEST_MEMFD_LUO_FLAG_MMAP | GUEST_MEMFD_LUO_FLAG_INIT_SHARED;
/// guest_memfd folio flag: up to date.
pub const GUEST_MEMFD_LUO_FOLIO_UPTODATE: u16 = 1 << 0;

/// `struct guest_memfd_luo_folio_ser`: the memfd layout.
pub type GuestMemfdLuoFolioSer = MemfdLuoFolioSer;

/// `struct guest_memfd_luo_ser`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout, Unaligned,
)]
#[repr(C)]
pub struct GuestMemfdLuoSer {
    size: U64,
    flags: U64,
    nr_folios: U64,
    vm_token: U64,
    folios: KhoVmalloc,
}

/// `struct kvm_luo_mem_attr`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout, Unaligned,
)]
#[repr(C)]
pub struct KvmLuoMemAttr {
    gfn: U64,
    attributes: U64,
}

/// `struct kvm_luo_ser`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout, Unaligned,
)]
#[repr(C)]
pub struct KvmLuoSer {
    vm_type: U64,
    nr_mem_attrs: U64,
    mem_attrs: KhoVmalloc,
}

const _: () = assert!(size_of::<GuestMemfdLuoSer>() == 48);
const _: () = assert!(size_of::<KvmLuoMemAttr>() == 16);
const _: () = assert!(size_of::<KvmLuoSer>() == 32);

impl GuestMemfdLuoSer {
    /// A record.
    pub fn new(size: u64, flags: u64, nr_folios: u64, vm_token: u64, folios: KhoVmalloc) -> Self {
        Self {
            size: U64::new(size),
            flags: U64::new(flags),
            nr_folios: U64::new(nr_folios),
            vm_token: U64::new(vm_token),
            folios,
        }
    }
}

impl KvmLuoMemAttr {
    /// An attribute.
    pub fn new(gfn: u64, attributes: u64) -> Self {
        Self {
            gfn: U64::new(gfn),
            attributes: U64::new(attributes),
        }
    }

    /// The guest frame.
    pub fn gfn(&self) -> u64 {
        self.gfn.get()
    }

    /// Its attributes.
    pub fn attributes(&self) -> u64 {
        self.attributes.get()
    }
}

impl KvmLuoSer {
    /// A record.
    pub fn new(vm_type: u64, nr_mem_attrs: u64, mem_attrs: KhoVmalloc) -> Self {
        Self {
            vm_type: U64::new(vm_type),
            nr_mem_attrs: U64::new(nr_mem_attrs),
            mem_attrs,
        }
    }
}

/// A validated guest_memfd record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuestMemfdFile {
    /// The record's address.
    pub ser: PhysAddr,
    /// `size` in bytes.
    pub size: u64,
    /// `flags`.
    pub flags: u64,
    /// `nr_folios`.
    pub nr_folios: u64,
    /// `vm_token`.
    pub vm_token: u64,
    /// The folio array's descriptor.
    pub folios: KhoVmalloc,
}

impl GuestMemfdFile {
    /// The handler's name in errors.
    pub const WHAT: &'static str = "guest_memfd";

    /// Reads and checks the record whose handle is `data`.
    pub fn read<M: PageMap + ?Sized>(
        reader: PhysReader<'_, '_, M>,
        tracker: Tracker<'_>,
        data: u64,
    ) -> Result<Self, HandlerError> {
        let (ser, r) = read_record::<GuestMemfdLuoSer, M>(reader, tracker, Self::WHAT, data)?;
        let size = r.size.get();
        if size == 0 || size % PAGE_SIZE != 0 {
            return Err(HandlerError::BadSize {
                what: Self::WHAT,
                ser,
                size,
            });
        }
        let flags = r.flags.get();
        if flags & !GUEST_MEMFD_LUO_SUPPORTED_FLAGS != 0 {
            return Err(HandlerError::UnknownFlags {
                what: Self::WHAT,
                ser,
                flags,
                known: GUEST_MEMFD_LUO_SUPPORTED_FLAGS,
            });
        }
        Ok(Self {
            ser,
            size,
            flags,
            nr_folios: r.nr_folios.get(),
            vm_token: r.vm_token.get(),
            folios: r.folios,
        })
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
            GUEST_MEMFD_LUO_FOLIO_UPTODATE,
        )
    }
}

/// A validated KVM VM record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvmFile {
    /// The record's address.
    pub ser: PhysAddr,
    /// `type`.
    pub vm_type: u64,
    /// `nr_mem_attrs`.
    pub nr_mem_attrs: u64,
    /// The attribute array's descriptor.
    pub mem_attrs: KhoVmalloc,
}

impl KvmFile {
    /// The handler's name in errors.
    pub const WHAT: &'static str = "kvm";

    /// Reads and checks the record whose handle is `data`.
    pub fn read<M: PageMap + ?Sized>(
        reader: PhysReader<'_, '_, M>,
        tracker: Tracker<'_>,
        data: u64,
    ) -> Result<Self, HandlerError> {
        let (ser, r) = read_record::<KvmLuoSer, M>(reader, tracker, Self::WHAT, data)?;
        Ok(Self {
            ser,
            vm_type: r.vm_type.get(),
            nr_mem_attrs: r.nr_mem_attrs.get(),
            mem_attrs: r.mem_attrs,
        })
    }

    /// The memory attributes (`None`: there are none).
    pub fn mem_attrs<'a, M: PageMap + ?Sized>(
        &self,
        reader: PhysReader<'a, 'a, M>,
        tracker: Tracker<'a>,
    ) -> Result<Option<VmallocArray<'a, M, KvmLuoMemAttr>>, HandlerError> {
        if self.nr_mem_attrs == 0 {
            return Ok(None);
        }
        VmallocArray::new(reader, tracker, self.mem_attrs, self.nr_mem_attrs)
            .map(Some)
            .map_err(|source| HandlerError::Array {
                what: Self::WHAT,
                ser: self.ser,
                array: "memory attribute array",
                source,
            })
    }
}
