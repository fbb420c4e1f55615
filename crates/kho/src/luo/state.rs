//! The whole LUO handover read into memory: every session, file, folio and
//! the pages each structure occupies, for inspectors and for the
//! cross-layer checks ([`crate::crosscheck`]).
//!
//! [`LuoState::read`] runs the streaming readers of [`crate::luo`] to their
//! end and stops at the first error, so a returned state is a validated
//! one. An inspector calls:
//!
//! ```text
//!   let fdt = KhoFdt::parse(&fdt_bytes)?;
//!   let (tracker, tree_pages) = PreservedSet::read_tree(&mem, ram, fdt.root(), budget)?;
//!   let reader = PhysReader::new(&mem, ram);
//!   let luo = fdt.subnode(LUO_KHO_ENTRY_NAME).map(|n| {
//!       LuoState::read(reader, Some(&tracker), n.data(), n.size())
//!   });
//!   // then crosscheck::CrossCheck::new(&tracker) ... .luo(&state) ... .run()
//! ```

use alloc::vec::Vec;

use super::kvm::KvmLuoMemAttr;
use super::{
    FileContent, Flb, GuestMemfdFile, HandlerError, KvmFile, LuoError, LuoFile, LuoHeader,
    MemfdFile, Session,
};
use crate::addr::{Block, PhysAddr};
use crate::mem::PageMap;
use crate::phys::PhysReader;
use crate::tracker::Tracker;
use crate::vmalloc::{KhoVmalloc, VmallocBlocks, VmallocError};

use super::memfd::FolioEntry;

/// The pages of a vmalloc area.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AreaPages {
    /// Its descriptor.
    pub desc: KhoVmalloc,
    /// Its chunks, in list order.
    pub chunks: Vec<PhysAddr>,
    /// Its entries, in order.
    pub blocks: Vec<Block>,
}

impl AreaPages {
    /// Walks `desc` to its end; no records: no area (Linux neither writes
    /// nor reads the descriptor then).
    fn read<M: PageMap + ?Sized>(
        reader: PhysReader<'_, '_, M>,
        tracker: Tracker<'_>,
        desc: KhoVmalloc,
        records: u64,
    ) -> Result<Self, VmallocError> {
        let mut out = Self {
            desc,
            ..Self::default()
        };
        if records == 0 {
            return Ok(out);
        }
        let mut walk = VmallocBlocks::new(reader, tracker, desc)?;
        for b in walk.by_ref() {
            let b = b?;
            if out.chunks.last() != Some(&b.chunk) {
                out.chunks.push(b.chunk);
            }
            out.blocks.push(b.block);
        }
        // The last chunk lists no entry when the one before it is full.
        if let Some(c) = walk.last_chunk()
            && out.chunks.last() != Some(&c)
        {
            out.chunks.push(c);
        }
        Ok(out)
    }
}

/// What a file's handler preserved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileData {
    /// A memfd: its record, folio entries and folio array.
    Memfd {
        /// The record.
        rec: MemfdFile,
        /// The folio entries, holes included.
        folios: Vec<FolioEntry>,
        /// The folio array's pages.
        area: AreaPages,
    },
    /// A guest_memfd: its record, folio entries and folio array.
    GuestMemfd {
        /// The record.
        rec: GuestMemfdFile,
        /// The folio entries, holes included.
        folios: Vec<FolioEntry>,
        /// The folio array's pages.
        area: AreaPages,
    },
    /// A KVM VM: its record and memory attributes.
    Kvm {
        /// The record.
        rec: KvmFile,
        /// The attributes.
        attrs: Vec<KvmLuoMemAttr>,
        /// The attribute array's pages.
        area: AreaPages,
    },
    /// A handler this crate does not read: its raw data handle.
    Unknown {
        /// The handle.
        data: u64,
    },
}

impl FileData {
    /// The handler record's page, if the handler is known.
    pub fn record(&self) -> Option<PhysAddr> {
        match self {
            Self::Memfd { rec, .. } => Some(rec.ser),
            Self::GuestMemfd { rec, .. } => Some(rec.ser),
            Self::Kvm { rec, .. } => Some(rec.ser),
            Self::Unknown { .. } => None,
        }
    }

    /// The array's pages, if any.
    pub fn area(&self) -> Option<&AreaPages> {
        match self {
            Self::Memfd { area, .. } | Self::GuestMemfd { area, .. } | Self::Kvm { area, .. } => {
                Some(area)
            }
            Self::Unknown { .. } => None,
        }
    }

    /// The folio entries (memfd, guest_memfd), holes included.
    pub fn folios(&self) -> &[FolioEntry] {
        match self {
            Self::Memfd { folios, .. } | Self::GuestMemfd { folios, .. } => folios,
            Self::Kvm { .. } | Self::Unknown { .. } => &[],
        }
    }

    /// The file size the record holds (memfd, guest_memfd).
    pub fn size(&self) -> Option<u64> {
        match self {
            Self::Memfd { rec, .. } => Some(rec.size),
            Self::GuestMemfd { rec, .. } => Some(rec.size),
            Self::Kvm { .. } | Self::Unknown { .. } => None,
        }
    }
}

/// One file and what its handler preserved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileState {
    /// The file's entry.
    pub file: LuoFile,
    /// The handler's data.
    pub data: FileData,
}

/// One session and its files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionState {
    /// The session's entry.
    pub session: Session,
    /// The blocks of its file chain.
    pub file_blocks: Vec<PhysAddr>,
    /// Its files, in chain order.
    pub files: Vec<FileState>,
}

/// A validated LUO handover.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LuoState {
    /// The header.
    pub header: LuoHeader,
    /// The blocks of the session chain.
    pub session_blocks: Vec<PhysAddr>,
    /// The sessions, in chain order.
    pub sessions: Vec<SessionState>,
    /// The FLB header page, if any.
    pub flb_header: Option<PhysAddr>,
    /// The FLBs.
    pub flbs: Vec<Flb>,
}

fn push_block(blocks: &mut Vec<PhysAddr>, block: PhysAddr) {
    if blocks.last() != Some(&block) {
        blocks.push(block);
    }
}

impl LuoState {
    /// Reads and checks the whole handover whose header is `blob` (`size`:
    /// the subnode's `blob-size`, if the root FDT has one).
    pub fn read<M: PageMap + ?Sized>(
        reader: PhysReader<'_, '_, M>,
        tracker: Tracker<'_>,
        blob: PhysAddr,
        size: Option<u64>,
    ) -> Result<Self, LuoError> {
        let header = LuoHeader::read(reader, tracker, blob, size)?;
        let mut session_blocks = Vec::new();
        let mut sessions = Vec::new();
        for s in header.sessions(reader, tracker) {
            let session = s?;
            push_block(&mut session_blocks, session.block);
            let mut file_blocks = Vec::new();
            let mut files = Vec::new();
            for f in session.files(reader, tracker) {
                let file = f?;
                push_block(&mut file_blocks, file.block);
                let data =
                    read_data(reader, tracker, &file).map_err(|source| LuoError::Handler {
                        path: file.path,
                        source,
                    })?;
                files.push(FileState { file, data });
            }
            sessions.push(SessionState {
                session,
                file_blocks,
                files,
            });
        }
        let flb_iter = header.flbs(reader, tracker)?;
        let flb_header = Some(flb_iter.header()).filter(|h| *h != PhysAddr::ZERO);
        let flbs = flb_iter.collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            header,
            session_blocks,
            sessions,
            flb_header,
            flbs,
        })
    }

    /// Files in every session.
    pub fn files(&self) -> impl Iterator<Item = (&SessionState, &FileState)> {
        self.sessions
            .iter()
            .flat_map(|s| s.files.iter().map(move |f| (s, f)))
    }
}

/// The pages of a file's folio array (memfd, guest_memfd), an error
/// naming the handler `what` and its record `ser`.
fn folio_area<M: PageMap + ?Sized>(
    reader: PhysReader<'_, '_, M>,
    tracker: Tracker<'_>,
    what: &'static str,
    ser: PhysAddr,
    desc: KhoVmalloc,
    records: u64,
) -> Result<AreaPages, HandlerError> {
    AreaPages::read(reader, tracker, desc, records).map_err(|source| HandlerError::Array {
        what,
        ser,
        array: "folio array",
        source,
    })
}

fn read_data<M: PageMap + ?Sized>(
    reader: PhysReader<'_, '_, M>,
    tracker: Tracker<'_>,
    file: &LuoFile,
) -> Result<FileData, HandlerError> {
    Ok(match file.content(reader, tracker)? {
        FileContent::Memfd(rec) => {
            let folios = rec
                .folios(reader, tracker)?
                .collect::<Result<Vec<_>, _>>()?;
            let area = folio_area(
                reader,
                tracker,
                MemfdFile::WHAT,
                rec.ser,
                rec.folios,
                rec.nr_folios,
            )?;
            FileData::Memfd { rec, folios, area }
        }
        FileContent::GuestMemfd(rec) => {
            let folios = rec
                .folios(reader, tracker)?
                .collect::<Result<Vec<_>, _>>()?;
            let area = folio_area(
                reader,
                tracker,
                GuestMemfdFile::WHAT,
                rec.ser,
                rec.folios,
                rec.nr_folios,
            )?;
            FileData::GuestMemfd { rec, folios, area }
        }
        FileContent::Kvm(rec) => {
            let wrap = |source| HandlerError::Array {
                what: KvmFile::WHAT,
                ser: rec.ser,
                array: "memory attribute array",
                source,
            };
            let attrs = match rec.mem_attrs(reader, tracker)? {
                None => Vec::new(),
                Some(a) => a
                    .map(|e| e.map(|e| e.value))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(wrap)?,
            };
            let area =
                AreaPages::read(reader, tracker, rec.mem_attrs, rec.nr_mem_attrs).map_err(wrap)?;
            FileData::Kvm { rec, attrs, area }
        }
        FileContent::Unknown { data } => FileData::Unknown { data },
    })
}
