//! The Live Update Orchestrator's handover: the `LUO` subnode's blob, its
//! sessions, their files, and the file-lifecycle-bound objects (FLBs).
//!
//! Glossary (Linux names in `code`):
//!
//! | name        | meaning                                                                 |
//! |-------------|-------------------------------------------------------------------------|
//! | header      | `struct luo_ser`: the blob of the root FDT's `LUO` subnode              |
//! | session     | a named set of preserved files (`struct luo_session_ser`), made by userspace |
//! | file        | one preserved file (`struct luo_file_ser`): its handler, token and data |
//! | handler     | the kernel code that serialized a file, named by the file's `compatible` |
//! | token       | the u64 userspace chose for a file, unique in its session               |
//! | data        | the handler's handle for the file: phys of its record (memfd, kvm, ...) |
//! | FLB         | global state shared by files (IOMMU, ...): `struct luo_flb_ser`         |
//! | path        | where a structure sits: session / file / folio ([`LuoPath`])            |
//!
//! # Layout (little-endian, `__packed`)
//!
//! ```text
//!  root FDT  /LUO { preserved-data = <luo_ser>; blob-size = <32 or 40>; }
//!                |
//!  luo_ser       compatible | liveupdate_num | sessions_pa | flbs_pa
//!                                              |             |
//!  session chain (block-v1, 80-byte entries)   |             +--> FLB header page
//!    name[64] | files | count  <--------------+                  pgcnt | count | luo_flb_ser[count]
//!               |
//!  file chain (block-v1, 64-byte entries)
//!    compatible[48] | data | token
//!                     |
//!  handler record     memfd_luo_ser / guest_memfd_luo_ser / kvm_luo_ser (see the submodules)
//! ```
//!
//! `struct luo_ser` (`compatible` is `KHO_COMPAT_ALIGN`ed: 8 bytes for
//! `luo-v5`, 16 for `luo-v5;block-v1`, so the header is 32 or 40 bytes):
//!
//! | offset  | size | field            | meaning                                         |
//! |---------|------|------------------|-------------------------------------------------|
//! | 0       | C    | `compatible`     | `"luo-v5"` or `"luo-v5;block-v1"`, NUL padded   |
//! | C       | 8    | `liveupdate_num` | live updates so far (the old kernel's count + 1) |
//! | C + 8   | 8    | `sessions_pa`    | head of the session chain, 0 = no session       |
//! | C + 16  | 8    | `flbs_pa`        | the FLB header page, 0 = none                   |
//!
//! `struct luo_session_ser` (80 bytes, 51 per block):
//!
//! | offset | size | field                | meaning                                     |
//! |--------|------|----------------------|---------------------------------------------|
//! | 0      | 64   | `name`               | NUL-terminated (`LIVEUPDATE_SESSION_NAME_LENGTH`) |
//! | 64     | 8    | `file_set_ser.files` | head of the file chain, 0 = no file         |
//! | 72     | 8    | `file_set_ser.count` | files in the chain                          |
//!
//! `struct luo_file_ser` (64 bytes, 63 per block):
//!
//! | offset | size | field             | meaning                                        |
//! |--------|------|-------------------|------------------------------------------------|
//! | 0      | 48   | `compatible`      | handler name, NUL-terminated (`LIVEUPDATE_HNDL_COMPAT_LENGTH`) |
//! | 48     | 8    | `serialized_data` | the handler's handle (`DECLARE_KHOSER_PTR`)    |
//! | 56     | 8    | `token`           | userspace's token                              |
//!
//! FLB header page (`LUO_FLB_PGCNT = 1`): `struct luo_flb_header_ser`
//! {`pgcnt` u64, `count` u64} then `count` (at most 63) `struct luo_flb_ser`
//! {`name` (48 bytes), `data` u64, `count` u64}.
//!
//! How Linux writes it: `luo_ser`, each block and the FLB page come from
//! `kho_alloc_preserve()` (zeroed pages preserved at order 0); the `LUO`
//! subnode points at `luo_ser` with `blob-size = sizeof(struct luo_ser)`.
//! Session names are unique; tokens are unique within a session.
//!
//! Sources: linux-mm/linux-mm@fb2257f1798a `include/linux/kho/abi/luo.h`
//! (`luo-v5`, `struct luo_ser`, the block chains); the RFC "kho: decouple
//! ... compatibility" (`LUO_ABI_COMPATIBLE "luo-v5;block-v1"`,
//! `KHO_COMPAT_ALIGN`); the session and file chain conversions of
//! `kernel/liveupdate/luo_session.c` and `luo_file.c` (the file count must
//! match the chain); torvalds/linux@cc4adab164b7 `include/linux/kho/abi/luo.h`
//! (`luo-v1`, the FDT-based era this reader recognises but does not read);
//! `LIVEUPDATE_SESSION_NAME_LENGTH 64` from `include/uapi/linux/liveupdate.h`.
//!
//! # Validation
//!
//! [`LuoHeader::read`] checks the blob, in this order: non-null and page
//! aligned; preserved at order 0 (with a tracker); not an FDT (the `luo-v1`
//! .. `luo-v2` era, reported by name); `compatible` NUL-terminated, a known
//! base with known sub-components in order; `blob-size` exactly the header's
//! size. [`Sessions`] and [`Files`] walk the chains ([`crate::block`]) and
//! check each name's NUL and, at the end of a file chain, its count.
//! [`LuoFile::open`] reads a known handler's record
//! ([`memfd`], [`kvm`]); an unknown handler is listed with its raw data
//! handle. Errors are [`LuoError`]s carrying the [`LuoPath`] and the
//! address; after one the iterators are fused.

// The errors hold their values (paths with session names) inline: no_std,
// no allocation, and only ever built on the cold path.
#![allow(clippy::result_large_err)]
#![deny(
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::as_conversions,
    clippy::unwrap_used,
    clippy::panic
)]

use core::fmt;

use zerocopy::byteorder::little_endian::U64;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use crate::addr::{PAGE_SIZE, PhysAddr};
use crate::block::{BlockChain, BlockError, KHO_BLOCK_COMPATIBLE};
use crate::compat::{CompatError, Compound, aligned_len};
use crate::mem::PageMap;
use crate::name::FdtName;
use crate::phys::{PAGE_BYTES, PhysReader, ReadError};
use crate::tracker::{Tracker, Unpreserved, expect_page};

pub(crate) mod kvm;
pub(crate) mod memfd;
#[cfg(feature = "alloc")]
pub(crate) mod state;
#[cfg(feature = "alloc")]
pub(crate) mod writer;

pub use kvm::{
    GUEST_MEMFD_LUO_FH_COMPATIBLE, GUEST_MEMFD_LUO_FLAG_INIT_SHARED, GUEST_MEMFD_LUO_FLAG_MMAP,
    GUEST_MEMFD_LUO_FOLIO_UPTODATE, GUEST_MEMFD_LUO_SUPPORTED_FLAGS, GuestMemfdFile,
    GuestMemfdLuoFolioSer, GuestMemfdLuoSer, KVM_LUO_FH_COMPATIBLE, KvmFile, KvmLuoMemAttr,
    KvmLuoSer,
};
pub use memfd::{
    FolioEntry, Folios, HandlerError, MEMFD_LUO_ALL_SEALS, MEMFD_LUO_FOLIO_DIRTY,
    MEMFD_LUO_FOLIO_UPTODATE, MEMFD_V1_COMPATIBLE, MEMFD_V2_COMPATIBLE, MemfdFile,
    MemfdLuoFolioSer, MemfdLuoSer, MemfdLuoSerV1, MemfdVersion,
};
#[cfg(feature = "alloc")]
pub use state::{AreaPages, FileData, FileState, LuoState, SessionState};
#[cfg(feature = "alloc")]
pub use writer::{
    FileSpec, FlbSpec, FolioSpec, GuestMemfdSpec, KvmSpec, LuoBuilder, LuoWritten, MemfdSpec,
    RecordWritten, SessionSpec, write_guest_memfd, write_kvm, write_memfd,
};

/// The root FDT subnode LUO registers.
pub const LUO_KHO_ENTRY_NAME: &str = "LUO";
/// The header's base version.
pub const LUO_ABI_COMPAT_BASE: &str = "luo-v5";
/// Bytes of a file's `compatible`.
pub const LIVEUPDATE_HNDL_COMPAT_LENGTH: usize = 48;
/// Bytes of a session's `name`.
pub const LIVEUPDATE_SESSION_NAME_LENGTH: usize = 64;
/// Bytes of an FLB's `name`.
pub const LIVEUPDATE_FLB_COMPAT_LENGTH: usize = 48;
/// Pages of the FLB header.
pub const LUO_FLB_PGCNT: u64 = 1;
/// FLBs the header page holds: `(4096 - 16) / 64`.
pub const LUO_FLB_MAX: u64 = 63;

/// The header's ABI, from its `compatible`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LuoCompat {
    /// `luo-v5`: 8-byte `compatible`, 32-byte header (linux-mm).
    V5,
    /// `luo-v5;block-v1`: 16-byte `compatible`, 40-byte header (RFC).
    V5Block,
}

impl LuoCompat {
    /// The full `compatible` string.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::V5 => "luo-v5",
            Self::V5Block => "luo-v5;block-v1",
        }
    }

    /// Bytes of the `compatible` field (`KHO_COMPAT_ALIGN`).
    pub const fn compat_len(self) -> usize {
        match aligned_len(self.as_str()) {
            Some(n) => n,
            None => 0,
        }
    }

    /// Bytes of `struct luo_ser`.
    pub const fn header_size(self) -> usize {
        match self.compat_len().checked_add(size_of::<LuoSerTail>()) {
            Some(n) => n,
            None => 0,
        }
    }
}

impl fmt::Display for LuoCompat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The fields of `struct luo_ser` after `compatible`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout, Unaligned,
)]
#[repr(C)]
pub struct LuoSerTail {
    liveupdate_num: U64,
    sessions_pa: U64,
    flbs_pa: U64,
}

/// `struct luo_ser` of `luo-v5`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout, Unaligned,
)]
#[repr(C)]
pub struct LuoSerV5 {
    /// `"luo-v5\0\0"`.
    pub compatible: [u8; 8],
    /// The rest.
    pub tail: LuoSerTail,
}

/// `struct luo_ser` of `luo-v5;block-v1`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout, Unaligned,
)]
#[repr(C)]
pub struct LuoSerV5Block {
    /// `"luo-v5;block-v1\0"`.
    pub compatible: [u8; 16],
    /// The rest.
    pub tail: LuoSerTail,
}

/// `struct luo_file_set_ser`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout, Unaligned,
)]
#[repr(C)]
pub struct LuoFileSetSer {
    files: U64,
    count: U64,
}

/// `struct luo_session_ser`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout, Unaligned,
)]
#[repr(C)]
pub struct LuoSessionSer {
    name: [u8; LIVEUPDATE_SESSION_NAME_LENGTH],
    file_set: LuoFileSetSer,
}

/// `struct luo_file_ser`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout, Unaligned,
)]
#[repr(C)]
pub struct LuoFileSer {
    compatible: [u8; LIVEUPDATE_HNDL_COMPAT_LENGTH],
    data: U64,
    token: U64,
}

/// `struct luo_flb_header_ser`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout, Unaligned,
)]
#[repr(C)]
pub struct LuoFlbHeaderSer {
    pgcnt: U64,
    count: U64,
}

/// `struct luo_flb_ser`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout, Unaligned,
)]
#[repr(C)]
pub struct LuoFlbSer {
    name: [u8; LIVEUPDATE_FLB_COMPAT_LENGTH],
    data: U64,
    count: U64,
}

const _: () = assert!(size_of::<LuoSerTail>() == 24);
const _: () = assert!(size_of::<LuoSerV5>() == 32);
const _: () = assert!(size_of::<LuoSerV5Block>() == 40);
const _: () = assert!(size_of::<LuoFileSetSer>() == 16);
const _: () = assert!(size_of::<LuoSessionSer>() == 80);
const _: () = assert!(size_of::<LuoFileSer>() == 64);
const _: () = assert!(size_of::<LuoFlbHeaderSer>() == 16);
const _: () = assert!(size_of::<LuoFlbSer>() == 64);
const _: () = assert!(LuoCompat::V5.header_size() == 32);
const _: () = assert!(LuoCompat::V5Block.header_size() == 40);
const _: () = assert!((PAGE_BYTES - size_of::<LuoFlbHeaderSer>()) / size_of::<LuoFlbSer>() == 63);

impl LuoSerTail {
    /// The fields.
    pub fn new(liveupdate_num: u64, sessions: PhysAddr, flbs: PhysAddr) -> Self {
        Self {
            liveupdate_num: U64::new(liveupdate_num),
            sessions_pa: U64::new(sessions.as_u64()),
            flbs_pa: U64::new(flbs.as_u64()),
        }
    }
}

impl LuoSessionSer {
    /// An entry; `None` if `name` does not fit with its NUL.
    pub fn new(name: &str, files: PhysAddr, count: u64) -> Option<Self> {
        Some(Self {
            name: CName::new(name)?.field(),
            file_set: LuoFileSetSer {
                files: U64::new(files.as_u64()),
                count: U64::new(count),
            },
        })
    }
}

impl LuoFileSer {
    /// An entry; `None` if `compatible` does not fit with its NUL.
    pub fn new(compatible: &str, data: u64, token: u64) -> Option<Self> {
        Some(Self {
            compatible: CName::new(compatible)?.field(),
            data: U64::new(data),
            token: U64::new(token),
        })
    }
}

impl LuoFlbHeaderSer {
    /// A header.
    pub fn new(pgcnt: u64, count: u64) -> Self {
        Self {
            pgcnt: U64::new(pgcnt),
            count: U64::new(count),
        }
    }
}

impl LuoFlbSer {
    /// An entry; `None` if `name` does not fit with its NUL.
    pub fn new(name: &str, data: u64, count: u64) -> Option<Self> {
        Some(Self {
            name: CName::new(name)?.field(),
            data: U64::new(data),
            count: U64::new(count),
        })
    }
}

/// A NUL-terminated string read from a fixed `N`-byte field. Bytes that are
/// not UTF-8 are kept and shown escaped.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct CName<const N: usize> {
    bytes: [u8; N],
    len: u8,
}

impl<const N: usize> CName<N> {
    /// The string of `field` up to its first NUL; `None` if it has none.
    pub fn from_field(field: &[u8; N]) -> Option<Self> {
        let len = field.iter().position(|&b| b == 0)?;
        let mut bytes = [0u8; N];
        let (head, _) = bytes.split_at_mut(len);
        head.copy_from_slice(field.get(..len)?);
        Some(Self {
            bytes,
            len: u8::try_from(len).ok()?,
        })
    }

    /// `s` as a field value; `None` if it holds a NUL or does not fit with
    /// its NUL.
    pub fn new(s: &str) -> Option<Self> {
        let mut bytes = [0u8; N];
        if !crate::compat::write_c_string(s, &mut bytes) {
            return None;
        }
        Some(Self {
            bytes,
            len: u8::try_from(s.len()).ok()?,
        })
    }

    /// The bytes before the NUL.
    pub fn as_bytes(&self) -> &[u8] {
        self.bytes.get(..usize::from(self.len)).unwrap_or_default()
    }

    /// The string, if it is UTF-8.
    pub fn to_str(&self) -> Option<&str> {
        core::str::from_utf8(self.as_bytes()).ok()
    }

    /// The NUL-padded field.
    pub fn field(&self) -> [u8; N] {
        self.bytes
    }
}

impl<const N: usize> fmt::Display for CName<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for chunk in self.as_bytes().utf8_chunks() {
            f.write_str(chunk.valid())?;
            for b in chunk.invalid() {
                write!(f, "\\x{b:02x}")?;
            }
        }
        Ok(())
    }
}

impl<const N: usize> fmt::Debug for CName<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{self}\"")
    }
}

/// A session name.
pub type SessionName = CName<LIVEUPDATE_SESSION_NAME_LENGTH>;
/// A file handler's `compatible`.
pub type HandlerName = CName<LIVEUPDATE_HNDL_COMPAT_LENGTH>;
/// An FLB's name.
pub type FlbName = CName<LIVEUPDATE_FLB_COMPAT_LENGTH>;

/// Where a structure sits in the LUO tree, for errors and reports.
#[derive(Clone, Copy, PartialEq, Eq, Default)]
pub struct LuoPath {
    /// Index and name of the session.
    pub session: Option<(u64, SessionName)>,
    /// Index and token of the file in its session.
    pub file: Option<(u64, u64)>,
    /// Index of the FLB.
    pub flb: Option<u64>,
}

impl LuoPath {
    /// The header itself.
    pub const ROOT: Self = Self {
        session: None,
        file: None,
        flb: None,
    };

    /// Session `index` named `name`.
    pub fn session(index: u64, name: SessionName) -> Self {
        Self {
            session: Some((index, name)),
            ..Self::ROOT
        }
    }

    /// File `index` (token `token`) of this session.
    pub fn file(self, index: u64, token: u64) -> Self {
        Self {
            file: Some((index, token)),
            ..self
        }
    }

    /// FLB `index`.
    pub fn flb(index: u64) -> Self {
        Self {
            flb: Some(index),
            ..Self::ROOT
        }
    }
}

impl fmt::Display for LuoPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LUO")?;
        if let Some((i, name)) = &self.session {
            write!(f, " / session {i} `{name}`")?;
        }
        if let Some((i, token)) = self.file {
            write!(f, " / file {i} (token {token:#x})")?;
        }
        if let Some(i) = self.flb {
            write!(f, " / FLB {i}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for LuoPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LuoPath({self})")
    }
}

/// Why the LUO handover was rejected: the first broken rule, with the path
/// and the address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LuoError {
    /// The subnode's blob pointer is 0.
    #[error("LUO: the subnode's blob pointer is null")]
    NullBlob,
    /// The blob is not page aligned (Linux allocates it as a page).
    #[error("LUO: header {blob} is not page aligned")]
    BlobUnaligned {
        /// The blob.
        blob: PhysAddr,
    },
    /// A structure could not be read.
    #[error("{path}: {what} at {phys}: {source}")]
    Read {
        /// Where.
        path: LuoPath,
        /// Which structure.
        what: &'static str,
        /// Its address.
        phys: PhysAddr,
        /// Why.
        source: ReadError,
    },
    /// A structure page the tracker does not hold as an order-0 page.
    #[error("{path}: {what} at {phys}: {source}")]
    NotPreserved {
        /// Where.
        path: LuoPath,
        /// Which structure.
        what: &'static str,
        /// Its address.
        phys: PhysAddr,
        /// How the tracker holds it.
        source: Unpreserved,
    },
    /// The blob is a device tree: the FDT-based LUO of `luo-v1` (released
    /// kernels) or `luo-v2`, which this reader recognises but does not read.
    #[error(
        "LUO: header {blob} is an FDT with compatible `{compatible}`: the FDT-based LUO ABI is not read"
    )]
    FdtEra {
        /// The blob.
        blob: PhysAddr,
        /// Its root `compatible`, if one could be read.
        compatible: FdtName,
    },
    /// `compatible` has no NUL within its first 48 bytes.
    #[error("LUO: header {blob}: `compatible` is not NUL-terminated")]
    CompatibleNotTerminated {
        /// The blob.
        blob: PhysAddr,
    },
    /// `compatible` is not UTF-8 text.
    #[error("LUO: header {blob}: `compatible` is not text")]
    CompatibleNotText {
        /// The blob.
        blob: PhysAddr,
    },
    /// A compound `compatible` that breaks the ordering rules.
    #[error("LUO: header {blob}: {source}")]
    Compat {
        /// The blob.
        blob: PhysAddr,
        /// The rule broken.
        source: CompatError,
    },
    /// An unknown base version.
    #[error("LUO: header {blob}: compatible `{found}` is not luo-v5")]
    UnknownCompatible {
        /// The blob.
        blob: PhysAddr,
        /// The string.
        found: FdtName,
    },
    /// A sub-component this reader does not know.
    #[error("LUO: header {blob}: unknown sub-component `{token}`")]
    UnknownSubComponent {
        /// The blob.
        blob: PhysAddr,
        /// The token.
        token: FdtName,
    },
    /// `blob-size` is smaller than the header its `compatible` implies.
    #[error("LUO: header {blob} is truncated: blob-size {size}, `{compat}` needs {expected}")]
    Truncated {
        /// The blob.
        blob: PhysAddr,
        /// `blob-size`.
        size: u64,
        /// The header's ABI.
        compat: LuoCompat,
        /// Its size.
        expected: u64,
    },
    /// `blob-size` is larger than the header.
    #[error("LUO: header {blob}: blob-size {size}, `{compat}` is {expected} bytes")]
    Oversized {
        /// The blob.
        blob: PhysAddr,
        /// `blob-size`.
        size: u64,
        /// The header's ABI.
        compat: LuoCompat,
        /// Its size.
        expected: u64,
    },
    /// A session or file chain broke a block rule.
    #[error("{path}: {what}: {source}")]
    Block {
        /// Where.
        path: LuoPath,
        /// Which chain.
        what: &'static str,
        /// The rule broken.
        source: BlockError,
    },
    /// A session name without a NUL.
    #[error("{path}: entry {entry}: session name is not NUL-terminated")]
    SessionNameNotTerminated {
        /// The session.
        path: LuoPath,
        /// The entry's address.
        entry: PhysAddr,
    },
    /// A file `compatible` without a NUL.
    #[error("{path}: entry {entry}: handler `compatible` is not NUL-terminated")]
    HandlerNotTerminated {
        /// The file.
        path: LuoPath,
        /// The entry's address.
        entry: PhysAddr,
    },
    /// A session that counts files but has no chain.
    #[error("{path}: counts {count} files but has no file chain")]
    FilesWithoutChain {
        /// The session.
        path: LuoPath,
        /// `file_set_ser.count`.
        count: u64,
    },
    /// A file chain whose length is not the session's count.
    #[error("{path}: the file chain at {head} holds {found} files, the session counts {expected}")]
    FileCountMismatch {
        /// The session.
        path: LuoPath,
        /// The chain's head.
        head: PhysAddr,
        /// `file_set_ser.count`.
        expected: u64,
        /// Entries in the chain.
        found: u64,
    },
    /// An FLB header pointer that is not page aligned.
    #[error("LUO: FLB header {header} is not page aligned")]
    FlbUnaligned {
        /// The pointer.
        header: PhysAddr,
    },
    /// An FLB header whose `pgcnt` is not 1.
    #[error("LUO: FLB header {header}: pgcnt {pgcnt}, Linux writes {expected}")]
    FlbPageCount {
        /// The header.
        header: PhysAddr,
        /// `pgcnt`.
        pgcnt: u64,
        /// [`LUO_FLB_PGCNT`].
        expected: u64,
    },
    /// More FLBs than the header page holds.
    #[error("LUO: FLB header {header} counts {count} entries, the page holds {max}")]
    FlbCountOverflow {
        /// The header.
        header: PhysAddr,
        /// `count`.
        count: u64,
        /// [`LUO_FLB_MAX`].
        max: u64,
    },
    /// An FLB name without a NUL.
    #[error("{path}: entry {entry}: FLB name is not NUL-terminated")]
    FlbNameNotTerminated {
        /// The FLB.
        path: LuoPath,
        /// The entry's address.
        entry: PhysAddr,
    },
    /// A file handler's record broke a rule.
    #[error("{path}: {source}")]
    Handler {
        /// The file.
        path: LuoPath,
        /// The rule broken.
        source: HandlerError,
    },
}

impl LuoError {
    /// The address the error names (`None`: a null header pointer).
    pub fn phys(&self) -> Option<PhysAddr> {
        match *self {
            Self::NullBlob => None,
            Self::Read { phys, .. } | Self::NotPreserved { phys, .. } => Some(phys),
            Self::BlobUnaligned { blob }
            | Self::FdtEra { blob, .. }
            | Self::CompatibleNotTerminated { blob }
            | Self::CompatibleNotText { blob }
            | Self::Compat { blob, .. }
            | Self::UnknownCompatible { blob, .. }
            | Self::UnknownSubComponent { blob, .. }
            | Self::Truncated { blob, .. }
            | Self::Oversized { blob, .. } => Some(blob),
            Self::Block { source, .. } => Some(source.phys()),
            Self::SessionNameNotTerminated { entry, .. }
            | Self::HandlerNotTerminated { entry, .. }
            | Self::FlbNameNotTerminated { entry, .. } => Some(entry),
            Self::FilesWithoutChain { .. } => None,
            Self::FileCountMismatch { head, .. } => Some(head),
            Self::FlbUnaligned { header }
            | Self::FlbPageCount { header, .. }
            | Self::FlbCountOverflow { header, .. } => Some(header),
            Self::Handler { source, .. } => source.phys(),
        }
    }

    /// Where in the LUO tree the error lies.
    pub fn path(&self) -> LuoPath {
        match *self {
            Self::Read { path, .. }
            | Self::NotPreserved { path, .. }
            | Self::Block { path, .. }
            | Self::SessionNameNotTerminated { path, .. }
            | Self::HandlerNotTerminated { path, .. }
            | Self::FilesWithoutChain { path, .. }
            | Self::FileCountMismatch { path, .. }
            | Self::Handler { path, .. }
            | Self::FlbNameNotTerminated { path, .. } => path,
            _ => LuoPath::ROOT,
        }
    }
}

/// The validated `struct luo_ser`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LuoHeader {
    /// Where it is.
    pub blob: PhysAddr,
    /// Its ABI.
    pub compat: LuoCompat,
    /// `liveupdate_num`.
    pub liveupdate_num: u64,
    /// Head of the session chain (0: none).
    pub sessions: PhysAddr,
    /// The FLB header page (0: none).
    pub flbs: PhysAddr,
}

fn read_err(
    path: LuoPath,
    what: &'static str,
    phys: PhysAddr,
) -> impl FnOnce(ReadError) -> LuoError {
    move |source| LuoError::Read {
        path,
        what,
        phys,
        source,
    }
}

impl LuoHeader {
    /// Reads and checks the header at `blob`; `size` is the subnode's
    /// `blob-size` (kho-v3 and later), checked when given.
    pub fn read<M: PageMap + ?Sized>(
        reader: PhysReader<'_, '_, M>,
        tracker: Tracker<'_>,
        blob: PhysAddr,
        size: Option<u64>,
    ) -> Result<Self, LuoError> {
        if blob == PhysAddr::ZERO {
            return Err(LuoError::NullBlob);
        }
        if !blob.is_page_aligned() {
            return Err(LuoError::BlobUnaligned { blob });
        }
        let path = LuoPath::ROOT;
        let mut head = [0u8; LIVEUPDATE_HNDL_COMPAT_LENGTH];
        reader
            .read_bytes(blob, &mut head)
            .map_err(read_err(path, "header", blob))?;
        expect_page(tracker, blob).map_err(|source| LuoError::NotPreserved {
            path,
            what: "header",
            phys: blob,
            source,
        })?;
        if head.starts_with(&0xd00d_feed_u32.to_be_bytes()) {
            return Err(LuoError::FdtEra {
                blob,
                compatible: fdt_compatible(reader, blob, size),
            });
        }
        let Some(name) = CName::<LIVEUPDATE_HNDL_COMPAT_LENGTH>::from_field(&head) else {
            return Err(LuoError::CompatibleNotTerminated { blob });
        };
        let s = name.to_str().ok_or(LuoError::CompatibleNotText { blob })?;
        let compound = Compound::parse(s).map_err(|source| LuoError::Compat { blob, source })?;
        if compound.base() != LUO_ABI_COMPAT_BASE {
            return Err(LuoError::UnknownCompatible {
                blob,
                found: FdtName::new(s),
            });
        }
        if let Some(token) = compound.tokens().find(|t| *t != KHO_BLOCK_COMPATIBLE) {
            return Err(LuoError::UnknownSubComponent {
                blob,
                token: FdtName::new(token),
            });
        }
        let compat = if compound.has(KHO_BLOCK_COMPATIBLE) {
            LuoCompat::V5Block
        } else {
            LuoCompat::V5
        };
        let expected = u64::try_from(compat.header_size()).unwrap_or(u64::MAX);
        match size {
            Some(size) if size < expected => {
                return Err(LuoError::Truncated {
                    blob,
                    size,
                    compat,
                    expected,
                });
            }
            Some(size) if size > expected => {
                return Err(LuoError::Oversized {
                    blob,
                    size,
                    compat,
                    expected,
                });
            }
            _ => {}
        }
        let at = blob
            .checked_add(u64::try_from(compat.compat_len()).unwrap_or(u64::MAX))
            .unwrap_or(blob);
        let tail: LuoSerTail = reader.read(at).map_err(read_err(path, "header", at))?;
        Ok(Self {
            blob,
            compat,
            liveupdate_num: tail.liveupdate_num.get(),
            sessions: PhysAddr::new(tail.sessions_pa.get()),
            flbs: PhysAddr::new(tail.flbs_pa.get()),
        })
    }

    /// The sessions, in chain order.
    pub fn sessions<'a, M: PageMap + ?Sized>(
        &self,
        reader: PhysReader<'a, 'a, M>,
        tracker: Tracker<'a>,
    ) -> Sessions<'a, M> {
        Sessions {
            chain: BlockChain::new(reader, tracker, self.sessions),
            done: false,
        }
    }

    /// The FLBs.
    pub fn flbs<'a, M: PageMap + ?Sized>(
        &self,
        reader: PhysReader<'a, 'a, M>,
        tracker: Tracker<'a>,
    ) -> Result<Flbs<'a, M>, LuoError> {
        Flbs::open(reader, tracker, self.flbs)
    }
}

/// The root `compatible` of an FDT-era blob, for the error.
fn fdt_compatible<M: PageMap + ?Sized>(
    reader: PhysReader<'_, '_, M>,
    blob: PhysAddr,
    size: Option<u64>,
) -> FdtName {
    let mut buf = [0u8; PAGE_BYTES];
    let len = size
        .and_then(|s| usize::try_from(s).ok())
        .unwrap_or(PAGE_BYTES)
        .min(PAGE_BYTES);
    let Some(bytes) = buf.get_mut(..len) else {
        return FdtName::new("");
    };
    if reader.read_bytes(blob, bytes).is_err() {
        return FdtName::new("");
    }
    let Ok(fdt) = dtoolkit::fdt::Fdt::new(bytes) else {
        return FdtName::new("");
    };
    use dtoolkit::{Node, Property};
    fdt.root()
        .property("compatible")
        .and_then(|p| {
            let v = p.value();
            let body = v.split(|&b| b == 0).next()?;
            core::str::from_utf8(body).ok().map(FdtName::new)
        })
        .unwrap_or_else(|| FdtName::new(""))
}

/// One session, as its entry says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Session {
    /// Its index in the chain.
    pub index: u64,
    /// Its entry's address.
    pub entry: PhysAddr,
    /// The block that holds the entry.
    pub block: PhysAddr,
    /// Its name.
    pub name: SessionName,
    /// Head of its file chain (0: none).
    pub files: PhysAddr,
    /// Files it counts.
    pub count: u64,
}

impl Session {
    /// Where it is.
    pub fn path(&self) -> LuoPath {
        LuoPath::session(self.index, self.name)
    }

    /// Its files, in chain order; the count is checked at the end.
    pub fn files<'a, M: PageMap + ?Sized>(
        &self,
        reader: PhysReader<'a, 'a, M>,
        tracker: Tracker<'a>,
    ) -> Files<'a, M> {
        Files {
            chain: BlockChain::new(reader, tracker, self.files),
            path: self.path(),
            head: self.files,
            expected: self.count,
            seen: 0,
            done: false,
        }
    }
}

/// The sessions of a header.
pub struct Sessions<'a, M: ?Sized> {
    chain: BlockChain<'a, M, LuoSessionSer>,
    done: bool,
}

impl<M: ?Sized> fmt::Debug for Sessions<'_, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sessions")
            .field("chain", &self.chain)
            .finish()
    }
}

impl<M: PageMap + ?Sized> Iterator for Sessions<'_, M> {
    type Item = Result<Session, LuoError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let item = self.chain.next().map(|r| {
            let e = r.map_err(|source| LuoError::Block {
                path: LuoPath::ROOT,
                what: "session chain",
                source,
            })?;
            let name = SessionName::from_field(&e.value.name).ok_or(
                LuoError::SessionNameNotTerminated {
                    path: LuoPath::ROOT,
                    entry: e.phys,
                },
            )?;
            Ok(Session {
                index: e.index,
                entry: e.phys,
                block: e.block,
                name,
                files: PhysAddr::new(e.value.file_set.files.get()),
                count: e.value.file_set.count.get(),
            })
        });
        if !matches!(item, Some(Ok(_))) {
            self.done = true;
        }
        item
    }
}

/// One file, as its entry says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LuoFile {
    /// Where it is.
    pub path: LuoPath,
    /// Its index in the session.
    pub index: u64,
    /// Its entry's address.
    pub entry: PhysAddr,
    /// The block that holds the entry.
    pub block: PhysAddr,
    /// Its handler's name.
    pub compatible: HandlerName,
    /// The handler's raw data handle.
    pub data: u64,
    /// Userspace's token.
    pub token: u64,
}

/// The handlers this crate reads, from a file's `compatible`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HandlerKind {
    /// `memfd-v1`, `memfd-v2`, `memfd-v2;vmalloc-v1`.
    Memfd(MemfdVersion),
    /// `guest_memfd_luo_v1`.
    GuestMemfd,
    /// `kvm_vm_luo_v1`.
    Kvm,
    /// Any other handler: listed, not read.
    Unknown,
}

impl HandlerKind {
    /// The handler named `compatible`.
    pub fn of(compatible: &[u8]) -> Self {
        let Ok(s) = core::str::from_utf8(compatible) else {
            return Self::Unknown;
        };
        if let Some(v) = MemfdVersion::from_compatible(s) {
            return Self::Memfd(v);
        }
        match s {
            kvm::GUEST_MEMFD_LUO_FH_COMPATIBLE => Self::GuestMemfd,
            kvm::KVM_LUO_FH_COMPATIBLE => Self::Kvm,
            _ => Self::Unknown,
        }
    }
}

/// What a file's handler record holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileContent {
    /// A memfd.
    Memfd(MemfdFile),
    /// A guest_memfd.
    GuestMemfd(GuestMemfdFile),
    /// A KVM VM.
    Kvm(KvmFile),
    /// A handler this crate does not read: its raw data handle.
    Unknown {
        /// The handle.
        data: u64,
    },
}

impl LuoFile {
    /// Its handler.
    pub fn kind(&self) -> HandlerKind {
        HandlerKind::of(self.compatible.as_bytes())
    }

    /// Reads and checks its handler's record.
    pub fn open<M: PageMap + ?Sized>(
        &self,
        reader: PhysReader<'_, '_, M>,
        tracker: Tracker<'_>,
    ) -> Result<FileContent, LuoError> {
        self.content(reader, tracker)
            .map_err(|source| LuoError::Handler {
                path: self.path,
                source,
            })
    }

    /// As [`LuoFile::open`], with the handler's own error.
    pub fn content<M: PageMap + ?Sized>(
        &self,
        reader: PhysReader<'_, '_, M>,
        tracker: Tracker<'_>,
    ) -> Result<FileContent, HandlerError> {
        Ok(match self.kind() {
            HandlerKind::Memfd(v) => {
                FileContent::Memfd(MemfdFile::read(reader, tracker, self.data, v)?)
            }
            HandlerKind::GuestMemfd => {
                FileContent::GuestMemfd(GuestMemfdFile::read(reader, tracker, self.data)?)
            }
            HandlerKind::Kvm => FileContent::Kvm(KvmFile::read(reader, tracker, self.data)?),
            HandlerKind::Unknown => FileContent::Unknown { data: self.data },
        })
    }
}

/// The files of a session.
pub struct Files<'a, M: ?Sized> {
    chain: BlockChain<'a, M, LuoFileSer>,
    path: LuoPath,
    head: PhysAddr,
    expected: u64,
    seen: u64,
    done: bool,
}

impl<M: ?Sized> fmt::Debug for Files<'_, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Files")
            .field("path", &self.path)
            .field("chain", &self.chain)
            .field("expected", &self.expected)
            .finish()
    }
}

impl<M: PageMap + ?Sized> Files<'_, M> {
    /// Blocks of the chain entered so far.
    pub fn blocks(&self) -> u64 {
        self.chain.blocks()
    }

    fn step(&mut self) -> Option<Result<LuoFile, LuoError>> {
        if self.head == PhysAddr::ZERO && self.expected != 0 {
            return Some(Err(LuoError::FilesWithoutChain {
                path: self.path,
                count: self.expected,
            }));
        }
        match self.chain.next() {
            None if self.seen != self.expected => Some(Err(LuoError::FileCountMismatch {
                path: self.path,
                head: self.head,
                expected: self.expected,
                found: self.seen,
            })),
            None => None,
            Some(Err(source)) => Some(Err(LuoError::Block {
                path: self.path,
                what: "file chain",
                source,
            })),
            Some(Ok(e)) => {
                self.seen = self.seen.saturating_add(1);
                let token = e.value.token.get();
                let path = self.path.file(e.index, token);
                let Some(compatible) = HandlerName::from_field(&e.value.compatible) else {
                    return Some(Err(LuoError::HandlerNotTerminated {
                        path,
                        entry: e.phys,
                    }));
                };
                Some(Ok(LuoFile {
                    path,
                    index: e.index,
                    entry: e.phys,
                    block: e.block,
                    compatible,
                    data: e.value.data.get(),
                    token,
                }))
            }
        }
    }
}

impl<M: PageMap + ?Sized> Iterator for Files<'_, M> {
    type Item = Result<LuoFile, LuoError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let item = self.step();
        if !matches!(item, Some(Ok(_))) {
            self.done = true;
        }
        item
    }
}

/// One FLB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flb {
    /// Its index.
    pub index: u64,
    /// Its entry's address.
    pub entry: PhysAddr,
    /// Its name.
    pub name: FlbName,
    /// Its opaque data handle.
    pub data: u64,
    /// Files that depended on it.
    pub count: u64,
}

/// The FLBs of the header page.
pub struct Flbs<'a, M: ?Sized> {
    reader: PhysReader<'a, 'a, M>,
    header: PhysAddr,
    count: u64,
    next: u64,
}

impl<M: ?Sized> fmt::Debug for Flbs<'_, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Flbs")
            .field("header", &self.header)
            .field("count", &self.count)
            .field("next", &self.next)
            .finish()
    }
}

impl<'a, M: PageMap + ?Sized> Flbs<'a, M> {
    fn open(
        reader: PhysReader<'a, 'a, M>,
        tracker: Tracker<'_>,
        header: PhysAddr,
    ) -> Result<Self, LuoError> {
        let mut this = Self {
            reader,
            header,
            count: 0,
            next: 0,
        };
        if header == PhysAddr::ZERO {
            return Ok(this);
        }
        if !header.is_page_aligned() {
            return Err(LuoError::FlbUnaligned { header });
        }
        let h: LuoFlbHeaderSer =
            reader
                .read(header)
                .map_err(read_err(LuoPath::ROOT, "FLB header", header))?;
        expect_page(tracker, header).map_err(|source| LuoError::NotPreserved {
            path: LuoPath::ROOT,
            what: "FLB header",
            phys: header,
            source,
        })?;
        let pgcnt = h.pgcnt.get();
        if pgcnt != LUO_FLB_PGCNT {
            return Err(LuoError::FlbPageCount {
                header,
                pgcnt,
                expected: LUO_FLB_PGCNT,
            });
        }
        let count = h.count.get();
        if count > LUO_FLB_MAX {
            return Err(LuoError::FlbCountOverflow {
                header,
                count,
                max: LUO_FLB_MAX,
            });
        }
        this.count = count;
        Ok(this)
    }

    /// The header page (0: none).
    pub fn header(&self) -> PhysAddr {
        self.header
    }

    /// FLBs it counts.
    pub fn count(&self) -> u64 {
        self.count
    }
}

impl<M: PageMap + ?Sized> Iterator for Flbs<'_, M> {
    type Item = Result<Flb, LuoError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.next >= self.count {
            return None;
        }
        let index = self.next;
        self.next = self.next.saturating_add(1);
        let offset = index
            .checked_mul(64)
            .and_then(|o| o.checked_add(16))
            .filter(|o| *o < PAGE_SIZE);
        let Some(entry) = offset.and_then(|o| self.header.checked_add(o)) else {
            self.next = self.count;
            return None;
        };
        let path = LuoPath::flb(index);
        let item = self
            .reader
            .read::<LuoFlbSer>(entry)
            .map_err(read_err(path, "FLB entry", entry))
            .and_then(|v| {
                let name = FlbName::from_field(&v.name)
                    .ok_or(LuoError::FlbNameNotTerminated { path, entry })?;
                Ok(Flb {
                    index,
                    entry,
                    name,
                    data: v.data.get(),
                    count: v.count.get(),
                })
            });
        if item.is_err() {
            self.next = self.count;
        }
        Some(item)
    }
}

#[cfg(all(test, feature = "alloc"))]
#[allow(
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::unwrap_used,
    clippy::panic,
    clippy::as_conversions
)]
mod tests;
