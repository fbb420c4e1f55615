//! Writing a LUO handover as Linux does: handler records, sessions, files,
//! FLBs and the header, in pages preserved in the tracker.
//!
//! A kernel-side writer (the simulated old kernel) calls, in Linux's order:
//!
//! ```text
//!   let w = PageWriter::new(&tree);
//!   // preserve each file: its folios, its folio array, its record
//!   let vm   = write_kvm(&w, &KvmSpec { vm_type: 0, mem_attrs: &[] })?;
//!   let gmem = write_guest_memfd(&w, &GuestMemfdSpec { size, flags, vm_token: 1, folios: &f })?;
//!   let mfd  = write_memfd(&w, &MemfdSpec::v2(pos, size, seals, &folios))?;
//!   // group them in sessions and write the header
//!   let mut luo = LuoBuilder::new(LuoCompat::V5, liveupdate_num);
//!   luo.session("vm0").file(KVM_LUO_FH_COMPATIBLE, vm.ser.as_u64(), 1)
//!                     .file(GUEST_MEMFD_LUO_FH_COMPATIBLE, gmem.ser.as_u64(), 2);
//!   luo.session("ckpt").file("memfd-v2", mfd.ser.as_u64(), 1);
//!   let out = luo.write(&w)?;
//!   // the root FDT names it
//!   fdt.add_subnode(LUO_KHO_ENTRY_NAME, out.header, out.size);
//! ```
//!
//! Every page written here is a fresh zeroed page preserved at order 0, as
//! `kho_alloc_preserve()` leaves it; folios are preserved at their own
//! order, as `kho_preserve_folio()` does. The writer does not check what the
//! reader checks (unique tokens, vm_token targets): tests build broken
//! handovers with it.

use alloc::string::String;
use alloc::vec::Vec;

use zerocopy::IntoBytes;

use super::kvm::{GuestMemfdLuoSer, KvmLuoMemAttr, KvmLuoSer};
use super::memfd::{MemfdLuoFolioSer, MemfdLuoSer, MemfdLuoSerV1, MemfdVersion};
use super::{
    LUO_FLB_MAX, LUO_FLB_PGCNT, LuoCompat, LuoFileSer, LuoFlbHeaderSer, LuoFlbSer, LuoSerTail,
    LuoSessionSer,
};
use crate::addr::{Block, PhysAddr};
use crate::block::write_chain;
use crate::mem::{PageAlloc, PageMap};
use crate::phys::{PageWriter, WriteError};
use crate::vmalloc::{VmallocWritten, write_vmalloc_bytes};

/// One folio to list: the preserved block (its order is the folio's) and
/// its place in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FolioSpec {
    /// The folio.
    pub block: Block,
    /// Its page offset in the file.
    pub index: u64,
    /// Its flags.
    pub flags: u16,
}

/// A memfd to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemfdSpec<'a> {
    /// The record's ABI.
    pub version: MemfdVersion,
    /// `pos`.
    pub pos: u64,
    /// `size` in bytes.
    pub size: u64,
    /// `seals` (`memfd-v2` only).
    pub seals: u32,
    /// `flags` (`memfd-v2` only).
    pub flags: u32,
    /// The folios, in array order.
    pub folios: &'a [FolioSpec],
}

impl<'a> MemfdSpec<'a> {
    /// A `memfd-v2` record with no flags.
    pub fn v2(pos: u64, size: u64, seals: u32, folios: &'a [FolioSpec]) -> Self {
        Self {
            version: MemfdVersion::V2,
            pos,
            size,
            seals,
            flags: 0,
            folios,
        }
    }
}

/// A guest_memfd to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuestMemfdSpec<'a> {
    /// `size` in bytes.
    pub size: u64,
    /// `flags`.
    pub flags: u64,
    /// The token of the session's kvm file.
    pub vm_token: u64,
    /// The folios, in array order.
    pub folios: &'a [FolioSpec],
}

/// A KVM VM to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvmSpec<'a> {
    /// `type`.
    pub vm_type: u64,
    /// The memory attributes.
    pub mem_attrs: &'a [KvmLuoMemAttr],
}

/// What a handler writer wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordWritten {
    /// The record's page: the file's data handle.
    pub ser: PhysAddr,
    /// Its array (folios or attributes).
    pub array: VmallocWritten,
}

fn folio_array<M: PageAlloc + PageMap>(
    w: &PageWriter<'_, M>,
    folios: &[FolioSpec],
) -> Result<VmallocWritten, WriteError> {
    let mut bytes = Vec::with_capacity(folios.len().saturating_mul(16));
    for f in folios {
        let e = MemfdLuoFolioSer::new(f.block.pfn().as_u64(), f.flags, f.index).ok_or(
            WriteError::TooLarge {
                what: "folio flags",
                len: usize::from(f.flags),
            },
        )?;
        bytes.extend_from_slice(e.as_bytes());
    }
    for f in folios {
        w.preserve(f.block)?;
    }
    write_vmalloc_bytes(w, &bytes)
}

fn count(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

/// Preserves a memfd's folios, its folio array and its record, as
/// `memfd_luo_preserve()` does.
pub fn write_memfd<M: PageAlloc + PageMap>(
    w: &PageWriter<'_, M>,
    spec: &MemfdSpec<'_>,
) -> Result<RecordWritten, WriteError> {
    let array = folio_array(w, spec.folios)?;
    let n = count(spec.folios.len());
    let ser = match spec.version {
        MemfdVersion::V1 => w.write_preserved(
            "memfd record",
            MemfdLuoSerV1::new(spec.pos, spec.size, n, array.desc).as_bytes(),
        )?,
        MemfdVersion::V2 => w.write_preserved(
            "memfd record",
            MemfdLuoSer::new(spec.pos, spec.size, spec.seals, spec.flags, n, array.desc).as_bytes(),
        )?,
    };
    Ok(RecordWritten { ser, array })
}

/// Preserves a guest_memfd's folios, its folio array and its record, as
/// `kvm_gmem_luo_preserve()` and `_freeze()` do.
pub fn write_guest_memfd<M: PageAlloc + PageMap>(
    w: &PageWriter<'_, M>,
    spec: &GuestMemfdSpec<'_>,
) -> Result<RecordWritten, WriteError> {
    let array = folio_array(w, spec.folios)?;
    let rec = GuestMemfdLuoSer::new(
        spec.size,
        spec.flags,
        count(spec.folios.len()),
        spec.vm_token,
        array.desc,
    );
    let ser = w.write_preserved("guest_memfd record", rec.as_bytes())?;
    Ok(RecordWritten { ser, array })
}

/// Preserves a VM's attribute array and its record.
pub fn write_kvm<M: PageAlloc + PageMap>(
    w: &PageWriter<'_, M>,
    spec: &KvmSpec<'_>,
) -> Result<RecordWritten, WriteError> {
    let array = write_vmalloc_bytes(w, spec.mem_attrs.as_bytes())?;
    let rec = KvmLuoSer::new(spec.vm_type, count(spec.mem_attrs.len()), array.desc);
    let ser = w.write_preserved("kvm record", rec.as_bytes())?;
    Ok(RecordWritten { ser, array })
}

/// A file of a session: its handler, data handle and token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileSpec {
    /// The handler's `compatible`.
    pub compatible: String,
    /// The data handle.
    pub data: u64,
    /// The token.
    pub token: u64,
}

/// A session to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionSpec {
    /// Its name.
    pub name: String,
    /// Its files, in order.
    pub files: Vec<FileSpec>,
}

impl SessionSpec {
    /// Adds a file.
    pub fn file(&mut self, compatible: &str, data: u64, token: u64) -> &mut Self {
        self.files.push(FileSpec {
            compatible: String::from(compatible),
            data,
            token,
        });
        self
    }
}

/// An FLB to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlbSpec {
    /// Its name.
    pub name: String,
    /// Its data handle.
    pub data: u64,
    /// Files that depend on it.
    pub count: u64,
}

/// What [`LuoBuilder::write`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LuoWritten {
    /// The header: the `LUO` subnode's `preserved-data`.
    pub header: PhysAddr,
    /// Its size: the subnode's `blob-size`.
    pub size: u64,
    /// The session chain's blocks.
    pub session_blocks: Vec<PhysAddr>,
    /// Each session's file chain blocks.
    pub file_blocks: Vec<Vec<PhysAddr>>,
    /// The FLB header page.
    pub flb_header: PhysAddr,
}

/// Builds a LUO header with its sessions and FLBs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LuoBuilder {
    compat: LuoCompat,
    liveupdate_num: u64,
    sessions: Vec<SessionSpec>,
    flbs: Vec<FlbSpec>,
}

impl LuoBuilder {
    /// A header of `compat` recording `liveupdate_num` live updates.
    pub fn new(compat: LuoCompat, liveupdate_num: u64) -> Self {
        Self {
            compat,
            liveupdate_num,
            sessions: Vec::new(),
            flbs: Vec::new(),
        }
    }

    /// Adds a session; add its files to the returned spec.
    pub fn session(&mut self, name: &str) -> &mut SessionSpec {
        self.sessions.push_mut(SessionSpec {
            name: String::from(name),
            files: Vec::new(),
        })
    }

    /// Adds an FLB.
    pub fn flb(&mut self, name: &str, data: u64, count: u64) -> &mut Self {
        self.flbs.push(FlbSpec {
            name: String::from(name),
            data,
            count,
        });
        self
    }

    /// Writes the file chains, the session chain, the FLB page (always, as
    /// Linux allocates it at boot) and the header.
    pub fn write<M: PageAlloc + PageMap>(
        &self,
        w: &PageWriter<'_, M>,
    ) -> Result<LuoWritten, WriteError> {
        let mut entries = Vec::with_capacity(self.sessions.len());
        let mut file_blocks = Vec::with_capacity(self.sessions.len());
        for s in &self.sessions {
            let files = s
                .files
                .iter()
                .map(|f| {
                    LuoFileSer::new(&f.compatible, f.data, f.token).ok_or(WriteError::NameTooLong {
                        what: "file compatible",
                        len: f.compatible.len(),
                        max: super::LIVEUPDATE_HNDL_COMPAT_LENGTH,
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            let (head, blocks) = write_chain(w, "file chain", &files)?;
            let e = LuoSessionSer::new(&s.name, head, count(files.len())).ok_or(
                WriteError::NameTooLong {
                    what: "session name",
                    len: s.name.len(),
                    max: super::LIVEUPDATE_SESSION_NAME_LENGTH,
                },
            )?;
            entries.push(e);
            file_blocks.push(blocks);
        }
        let (sessions, session_blocks) = write_chain(w, "session chain", &entries)?;
        if count(self.flbs.len()) > LUO_FLB_MAX {
            return Err(WriteError::TooMany {
                what: "FLBs",
                count: count(self.flbs.len()),
                max: LUO_FLB_MAX,
            });
        }
        let flbs = self
            .flbs
            .iter()
            .map(|f| {
                LuoFlbSer::new(&f.name, f.data, f.count).ok_or(WriteError::NameTooLong {
                    what: "FLB name",
                    len: f.name.len(),
                    max: super::LIVEUPDATE_FLB_COMPAT_LENGTH,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let flb_header = w.alloc_preserved()?;
        w.write(
            flb_header,
            0,
            LuoFlbHeaderSer::new(LUO_FLB_PGCNT, count(flbs.len())).as_bytes(),
        )?;
        w.write(flb_header, 16, flbs.as_bytes())?;
        let mut header = Vec::with_capacity(self.compat.header_size());
        header.resize(self.compat.compat_len(), 0);
        if !crate::compat::write_c_string(self.compat.as_str(), &mut header) {
            return Err(WriteError::NameTooLong {
                what: "LUO compatible",
                len: self.compat.as_str().len(),
                max: self.compat.compat_len(),
            });
        }
        header.extend_from_slice(
            LuoSerTail::new(self.liveupdate_num, sessions, flb_header).as_bytes(),
        );
        let phys = w.write_preserved("LUO header", &header)?;
        Ok(LuoWritten {
            header: phys,
            size: count(header.len()),
            session_blocks,
            file_blocks,
            flb_header,
        })
    }
}
