//! The KHO root FDT: the one page the old kernel hands the new one.
//!
//! Glossary:
//!
//! | name          | meaning                                                                 |
//! |---------------|-------------------------------------------------------------------------|
//! | root FDT      | a flattened device tree of at most one page, itself preserved (order 0) |
//! | compatible    | the root's ABI version: `kho-v1` .. `kho-v4`, or `kho-v4;radix-v1;...`  |
//! | sub-component | a `;token` after `kho-v4`: the version of a structure it embeds         |
//! | memory map    | root `preserved-memory-map`: the radix root (v2/v3) or first chunk (v1) |
//! | subnode       | one child of the root per KHO user (LUO, memblock, a driver, ...)       |
//! | blob          | the user's preserved data: phys in `preserved-data` (`fdt` in v1)       |
//! | native-endian | the raw bytes of a host `u64` (little-endian here), *not* a DT cell     |
//!
//! # Format
//!
//! A standard DTB (magic `0xd00dfeed`, version 17, empty memory reservation
//! block). The DTB framing is big-endian as always, but every KHO property
//! value is the raw native-endian bytes of a `u64`, written by Linux with
//! `fdt_property(fdt, name, &u64, 8)`: read them with `u64::from_ne_bytes`,
//! never with the big-endian DT cell helpers.
//!
//! | node      | property               | value                       | v1 (6.16) | v2 | v3 | v4 |
//! |-----------|------------------------|-----------------------------|-----------|----|----|----|
//! | `/`       | `compatible`           | `"kho-vN\0"`                | yes       | yes| yes| yes, alone or compound |
//! | `/`       | `preserved-memory-map` | u64 phys, 8 bytes           | first chunk (0 = none) | radix root | radix root | radix root |
//! | `/<user>` | `fdt`                  | u64 phys of the user's FDT  | yes       | -  | -  | -  |
//! | `/<user>` | `preserved-data`       | u64 phys of the user's blob | -         | yes| yes| yes|
//! | `/<user>` | `blob-size`            | u64 byte length of the blob | -         | -  | yes| yes|
//!
//! `kho-v4` (the KHO serialization-blocks series) changes none of these
//! bytes: it versions the block chains ([`crate::block`]) that LUO builds
//! on. Its compound form names the structures it embeds with
//! `KHO_SUB_COMPAT` tokens in alphabetical order ([`crate::compat`]):
//! `kho-v4;radix-v1` (the radix tree), then `kho-v4;radix-v1;vmalloc-v1`
//! (and vmalloc areas, [`crate::vmalloc`]). A compound string must name
//! `radix-v1` (the memory map cannot be read otherwise); an unknown token
//! is rejected by name. Linux compares the whole string, so a kernel reads
//! only the spelling it writes; [`KhoCompat`] keeps which one was read, and
//! the writer can emit each.
//!
//! Sources: Linux 6.16 `kernel/kexec_handover.c` (`KHO_FDT_COMPATIBLE
//! "kho-v1"`, `PROP_PRESERVED_MEMORY_MAP`, `PROP_SUB_FDT "fdt"`, written in
//! `kho_finalize()` and `kho_add_subtree()`); mainline
//! `include/linux/kho/abi/kexec_handover.h` (`"kho-v2"`, then `"kho-v3"` with
//! `blob-size`); linux-mm/linux-mm@d3b55a6a3d6c (`"kho-v4"`); the RFC
//! "kho: decouple ... compatibility from global KHO version" (June 2026:
//! `KHO_FDT_COMPAT_BASE "kho-v4"` plus `KHO_SUB_COMPAT(KHO_RADIX_COMPATIBLE)`
//! and `KHO_SUB_COMPAT(KHO_VMALLOC_COMPATIBLE)`).
//!
//! # Validation
//!
//! [`KhoFdt::parse`] fails fast, in this order, on the first broken rule:
//! header and structure (magic, version, offsets, tokens, names: checked by
//! `dtoolkit`), total size (at most one page, within the bytes given),
//! `compatible` (present, one NUL-terminated string, a known version; for a
//! compound string: tokens in order, each known, `radix-v1` among them),
//! `preserved-memory-map` (present, 8 bytes), then each subnode in order
//! (its data property present and 8 bytes, `blob-size` present and 8 bytes
//! in v3, no two subnodes with the same name). Extra properties and nested
//! nodes are ignored, as Linux ignores them. Addresses are not judged here:
//! the radix walker and the chunk reader check them against the machine.

use core::fmt;

use dtoolkit::error::FdtParseError;
use dtoolkit::fdt::{Fdt, FdtNode};
use dtoolkit::{Node, Property};

use crate::addr::{PAGE_SIZE, PhysAddr};
use crate::name::FdtName;

/// The largest root FDT: one page.
pub const KHO_FDT_MAX_SIZE: usize = 4096;
const _: () = assert!(KHO_FDT_MAX_SIZE as u64 == PAGE_SIZE);

/// Root property: the ABI version.
pub const PROP_COMPATIBLE: &str = "compatible";
/// Root property: the radix root (v2/v3) or the first chunk (v1).
pub const PROP_PRESERVED_MEMORY_MAP: &str = "preserved-memory-map";
/// Subnode property (v2, v3): phys of the user's blob.
pub const PROP_PRESERVED_DATA: &str = "preserved-data";
/// Subnode property (v1, Linux 6.16 `PROP_SUB_FDT`): phys of the user's FDT.
pub const PROP_SUB_FDT: &str = "fdt";
/// Subnode property (v3): byte length of the user's blob.
pub const PROP_BLOB_SIZE: &str = "blob-size";

/// The KHO ABI version named by the root `compatible`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum KhoVersion {
    /// `kho-v1` (Linux 6.16, 6.17): the memory map is a chunk list, read by
    /// [`crate::V1Reader`]; subnodes carry `fdt`.
    V1,
    /// `kho-v2`: radix tree; subnodes carry `preserved-data`.
    V2,
    /// `kho-v3`: radix tree; subnodes carry `preserved-data` and `blob-size`.
    V3,
    /// `kho-v4`: as `kho-v3`, with serialization blocks; may be compound
    /// ([`KhoCompat`]).
    V4,
}

impl KhoVersion {
    /// The version this crate writes by default.
    pub const DEFAULT: Self = Self::V3;

    /// The `compatible` string.
    pub const fn compatible(self) -> &'static str {
        match self {
            Self::V1 => "kho-v1",
            Self::V2 => "kho-v2",
            Self::V3 => "kho-v3",
            Self::V4 => "kho-v4",
        }
    }

    /// The version a `compatible` string names, if known.
    pub fn from_compatible(s: &str) -> Option<Self> {
        [Self::V1, Self::V2, Self::V3, Self::V4]
            .into_iter()
            .find(|v| v.compatible() == s)
    }

    /// The subnode property that holds the blob's address.
    pub const fn data_property(self) -> &'static str {
        match self {
            Self::V1 => PROP_SUB_FDT,
            Self::V2 | Self::V3 | Self::V4 => PROP_PRESERVED_DATA,
        }
    }

    /// Whether subnodes must carry `blob-size`.
    pub const fn has_blob_size(self) -> bool {
        matches!(self, Self::V3 | Self::V4)
    }
}

impl fmt::Display for KhoVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.compatible())
    }
}

/// A sub-component of a compound `kho-v4` root `compatible`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum KhoSubCompat {
    /// `radix-v1`: the radix tree of `preserved-memory-map`.
    Radix,
    /// `vmalloc-v1`: preserved vmalloc areas ([`VmallocBlocks`](crate::VmallocBlocks)).
    Vmalloc,
}

impl KhoSubCompat {
    /// Every sub-component, in the alphabetical order of their tokens.
    pub const ALL: [Self; 2] = [Self::Radix, Self::Vmalloc];

    /// The token.
    pub const fn token(self) -> &'static str {
        match self {
            Self::Radix => "radix-v1",
            Self::Vmalloc => crate::vmalloc::KHO_VMALLOC_COMPATIBLE,
        }
    }

    const fn bit(self) -> u8 {
        match self {
            Self::Radix => 1,
            Self::Vmalloc => 2,
        }
    }
}

/// A root `compatible`: the version and, for a compound `kho-v4`, its
/// sub-components.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct KhoCompat {
    version: KhoVersion,
    subs: u8,
}

impl KhoCompat {
    /// `kho-v4;radix-v1`.
    pub const V4_RADIX: Self = Self {
        version: KhoVersion::V4,
        subs: 1,
    };
    /// `kho-v4;radix-v1;vmalloc-v1`.
    pub const V4_RADIX_VMALLOC: Self = Self {
        version: KhoVersion::V4,
        subs: 3,
    };

    /// `version` alone.
    pub const fn plain(version: KhoVersion) -> Self {
        Self { version, subs: 0 }
    }

    /// The version.
    pub const fn version(self) -> KhoVersion {
        self.version
    }

    /// Whether `sub` is named.
    pub const fn has(self, sub: KhoSubCompat) -> bool {
        self.subs & sub.bit() != 0
    }

    /// Whether any sub-component is named.
    pub const fn is_compound(self) -> bool {
        self.subs != 0
    }

    /// The sub-components, in token order.
    pub fn sub_components(self) -> impl Iterator<Item = KhoSubCompat> {
        KhoSubCompat::ALL.into_iter().filter(move |s| self.has(*s))
    }

    /// Parses a root `compatible` (see the module doc for the rules).
    pub fn parse(s: &str) -> Result<Self, FdtError> {
        let compound = crate::compat::Compound::parse(s).map_err(FdtError::SubComponentOrder)?;
        let version =
            KhoVersion::from_compatible(compound.base()).ok_or(FdtError::UnknownCompatible {
                found: FdtName::new(s),
            })?;
        if !compound.is_compound() {
            return Ok(Self::plain(version));
        }
        if version != KhoVersion::V4 {
            return Err(FdtError::UnexpectedSubComponents {
                version,
                found: FdtName::new(s),
            });
        }
        let mut subs = 0u8;
        for token in compound.tokens() {
            let sub = KhoSubCompat::ALL
                .into_iter()
                .find(|k| k.token() == token)
                .ok_or(FdtError::UnknownSubComponent {
                    token: FdtName::new(token),
                })?;
            subs |= sub.bit();
        }
        if subs & KhoSubCompat::Radix.bit() == 0 {
            return Err(FdtError::MissingSubComponent {
                name: KhoSubCompat::Radix.token(),
                found: FdtName::new(s),
            });
        }
        Ok(Self { version, subs })
    }
}

impl From<KhoVersion> for KhoCompat {
    fn from(version: KhoVersion) -> Self {
        Self::plain(version)
    }
}

impl fmt::Display for KhoCompat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.version.compatible())?;
        for sub in self.sub_components() {
            write!(f, ";{}", sub.token())?;
        }
        Ok(())
    }
}

/// Why a root FDT was rejected: the first broken rule, with where and what.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FdtError {
    /// Bad magic, unsupported version, header offsets out of bounds, a bad
    /// token, an invalid node or property name, ...: reported by `dtoolkit`
    /// with the byte offset.
    #[error("malformed device tree: {0}")]
    Malformed(#[source] FdtParseError),
    /// The header's `totalsize` is more than the bytes given.
    #[error("device tree header says {totalsize} bytes but only {len} are given")]
    Truncated {
        /// `totalsize` from the header.
        totalsize: u32,
        /// Bytes given.
        len: usize,
    },
    /// The header's `totalsize` is more than one page.
    #[error("device tree of {totalsize} bytes is larger than one page ({max} bytes)")]
    TooLarge {
        /// `totalsize` from the header.
        totalsize: u32,
        /// The limit, [`KHO_FDT_MAX_SIZE`].
        max: usize,
    },
    /// The root has no `compatible`.
    #[error("root node has no `compatible` property")]
    MissingCompatible,
    /// `compatible` is not exactly one NUL-terminated UTF-8 string.
    #[error("root `compatible` ({len} bytes) is not one NUL-terminated string")]
    CompatibleNotString {
        /// Its length in bytes.
        len: usize,
    },
    /// `compatible` names no KHO version this crate reads.
    #[error("root `compatible` is {found:?}, not kho-v1, kho-v2, kho-v3 or kho-v4")]
    UnknownCompatible {
        /// The string found.
        found: FdtName,
    },
    /// Sub-components after a version that has none (only `kho-v4` is
    /// compound).
    #[error("root `compatible` {found:?}: {version} takes no sub-components")]
    UnexpectedSubComponents {
        /// The base version.
        version: KhoVersion,
        /// The whole string.
        found: FdtName,
    },
    /// A compound `compatible` that breaks the ordering rules.
    #[error("root {0}")]
    SubComponentOrder(#[source] crate::compat::CompatError),
    /// A sub-component this crate does not know.
    #[error("root `compatible`: unknown sub-component `{token}`")]
    UnknownSubComponent {
        /// The token.
        token: FdtName,
    },
    /// A compound `compatible` without a sub-component it requires.
    #[error("root `compatible` {found:?}: the required sub-component `{name}` is missing")]
    MissingSubComponent {
        /// The missing token.
        name: &'static str,
        /// The whole string.
        found: FdtName,
    },
    /// The root has no `preserved-memory-map`.
    #[error("root node has no `preserved-memory-map` property")]
    MissingMemoryMap,
    /// `preserved-memory-map` is not 8 bytes.
    #[error("root `preserved-memory-map` is {len} bytes, not 8")]
    MemoryMapLength {
        /// Its length in bytes.
        len: usize,
    },
    /// A subnode lacks its data property (`preserved-data`, or `fdt` in v1).
    #[error("subnode `{node}` has no `{property}` property")]
    MissingData {
        /// The subnode.
        node: FdtName,
        /// The property expected.
        property: &'static str,
    },
    /// A subnode's data property is not 8 bytes.
    #[error("subnode `{node}` property `{property}` is {len} bytes, not 8")]
    DataLength {
        /// The subnode.
        node: FdtName,
        /// The property.
        property: &'static str,
        /// Its length in bytes.
        len: usize,
    },
    /// A kho-v3 subnode lacks `blob-size`.
    #[error("subnode `{node}` has no `blob-size` property (required by kho-v3)")]
    MissingBlobSize {
        /// The subnode.
        node: FdtName,
    },
    /// A subnode's `blob-size` is not 8 bytes.
    #[error("subnode `{node}` property `blob-size` is {len} bytes, not 8")]
    BlobSizeLength {
        /// The subnode.
        node: FdtName,
        /// Its length in bytes.
        len: usize,
    },
    /// Two subnodes share a name: a lookup by name would be ambiguous.
    #[error("two subnodes are named `{node}`")]
    DuplicateSubnode {
        /// The name.
        node: FdtName,
    },
}

/// One KHO user's entry: its name and where its blob is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KhoSubnode<'a> {
    name: &'a str,
    data: PhysAddr,
    size: Option<u64>,
}

impl<'a> KhoSubnode<'a> {
    /// The node name (the KHO user's key).
    pub fn name(&self) -> &'a str {
        self.name
    }

    /// Physical address of the user's blob (`preserved-data`, or `fdt` in v1).
    pub fn data(&self) -> PhysAddr {
        self.data
    }

    /// The blob's byte length (`blob-size`, kho-v3 only).
    pub fn size(&self) -> Option<u64> {
        self.size
    }
}

/// A validated KHO root FDT, borrowing the bytes.
#[derive(Debug, Clone, Copy)]
pub struct KhoFdt<'a> {
    fdt: Fdt<'a>,
    compat: KhoCompat,
    root: PhysAddr,
}

impl<'a> KhoFdt<'a> {
    /// Validates `data` (the FDT page, or just its `totalsize` bytes).
    /// Bytes past `totalsize` are ignored.
    pub fn parse(data: &'a [u8]) -> Result<Self, FdtError> {
        let fdt = Fdt::new(trim_to_totalsize(data)?).map_err(FdtError::Malformed)?;
        let root_node = fdt.root();
        let compat = read_version(&root_node)?;
        let version = compat.version();
        let root = match root_node.property(PROP_PRESERVED_MEMORY_MAP) {
            None => return Err(FdtError::MissingMemoryMap),
            Some(p) => read_u64(p.value()).ok_or(FdtError::MemoryMapLength {
                len: p.value().len(),
            })?,
        };
        // Validate every subnode up front, so the iterator yields only good
        // entries. At most a page of FDT: the quadratic duplicate check is
        // bounded by (4096 / 12)^2 node visits.
        for (i, node) in root_node.children().enumerate() {
            read_subnode(&node, version)?;
            if root_node
                .children()
                .take(i)
                .any(|earlier| earlier.name() == node.name())
            {
                return Err(FdtError::DuplicateSubnode {
                    node: FdtName::new(node.name()),
                });
            }
        }
        Ok(Self {
            fdt,
            compat,
            root: PhysAddr::new(root),
        })
    }

    /// The ABI version (the base of a compound `compatible`).
    pub fn version(&self) -> KhoVersion {
        self.compat.version()
    }

    /// The whole `compatible`: version and sub-components.
    pub fn compat(&self) -> KhoCompat {
        self.compat
    }

    /// `preserved-memory-map`: the radix root (v2, v3) or the first chunk of
    /// the chunk list (v1; zero means an empty list).
    pub fn root(&self) -> PhysAddr {
        self.root
    }

    /// The FDT's size in bytes (`totalsize`).
    pub fn total_size(&self) -> usize {
        self.fdt.data().len()
    }

    /// The subnodes, in FDT order.
    pub fn subnodes(&self) -> KhoSubnodes<'a> {
        KhoSubnodes {
            children: self.fdt.root().children(),
            version: self.compat.version(),
        }
    }

    /// The subnode named `name`, if any.
    pub fn subnode(&self, name: &str) -> Option<KhoSubnode<'a>> {
        self.subnodes().find(|s| s.name() == name)
    }
}

/// Iterator over the subnodes of a [`KhoFdt`].
#[derive(Debug, Clone)]
pub struct KhoSubnodes<'a> {
    children: <FdtNode<'a> as Node>::Children<'a>,
    version: KhoVersion,
}

impl<'a> Iterator for KhoSubnodes<'a> {
    type Item = KhoSubnode<'a>;

    fn next(&mut self) -> Option<Self::Item> {
        // `KhoFdt::parse` validated every subnode, so `read_subnode` cannot
        // fail here; `find_map` keeps the iterator total regardless.
        let version = self.version;
        self.children
            .find_map(|node| read_subnode(&node, version).ok())
    }
}

/// The first `totalsize` bytes, once the header says they are one page or
/// less and all present. Input too short or with a bad magic is passed on
/// whole, for `dtoolkit` to name the problem.
fn trim_to_totalsize(data: &[u8]) -> Result<&[u8], FdtError> {
    const FDT_MAGIC: u32 = 0xd00d_feed;
    let word = |at: usize| -> Option<u32> {
        let bytes: [u8; 4] = data.get(at..at.checked_add(4)?)?.try_into().ok()?;
        Some(u32::from_be_bytes(bytes))
    };
    let (Some(FDT_MAGIC), Some(totalsize)) = (word(0), word(4)) else {
        return Ok(data);
    };
    let Ok(size) = usize::try_from(totalsize) else {
        return Err(FdtError::TooLarge {
            totalsize,
            max: KHO_FDT_MAX_SIZE,
        });
    };
    if size > KHO_FDT_MAX_SIZE {
        return Err(FdtError::TooLarge {
            totalsize,
            max: KHO_FDT_MAX_SIZE,
        });
    }
    data.get(..size).ok_or(FdtError::Truncated {
        totalsize,
        len: data.len(),
    })
}

fn read_version(root: &FdtNode<'_>) -> Result<KhoCompat, FdtError> {
    let prop = root
        .property(PROP_COMPATIBLE)
        .ok_or(FdtError::MissingCompatible)?;
    let value = prop.value();
    let not_string = FdtError::CompatibleNotString { len: value.len() };
    // Exactly one string: a single NUL, at the end.
    let body = match value.split_last() {
        Some((0, body)) if !body.contains(&0) => body,
        _ => return Err(not_string),
    };
    let s = core::str::from_utf8(body).map_err(|_| not_string)?;
    KhoCompat::parse(s)
}

fn read_subnode<'a>(node: &FdtNode<'a>, version: KhoVersion) -> Result<KhoSubnode<'a>, FdtError> {
    let name = node.name();
    let property = version.data_property();
    let data = match node.property(property) {
        None => {
            return Err(FdtError::MissingData {
                node: FdtName::new(name),
                property,
            });
        }
        Some(p) => read_u64(p.value()).ok_or(FdtError::DataLength {
            node: FdtName::new(name),
            property,
            len: p.value().len(),
        })?,
    };
    let size = if version.has_blob_size() {
        match node.property(PROP_BLOB_SIZE) {
            None => {
                return Err(FdtError::MissingBlobSize {
                    node: FdtName::new(name),
                });
            }
            Some(p) => Some(read_u64(p.value()).ok_or(FdtError::BlobSizeLength {
                node: FdtName::new(name),
                len: p.value().len(),
            })?),
        }
    } else {
        None
    };
    Ok(KhoSubnode {
        name,
        data: PhysAddr::new(data),
        size,
    })
}

/// A native-endian u64 property value (exactly 8 bytes).
fn read_u64(value: &[u8]) -> Option<u64> {
    value.try_into().ok().map(u64::from_ne_bytes)
}

#[cfg(feature = "alloc")]
pub use writer::{FdtBuildError, KhoFdtBuilder};

#[cfg(feature = "alloc")]
mod writer {
    use alloc::string::String;
    use alloc::vec::Vec;

    use vm_fdt::FdtWriter;

    use super::{
        FdtName, KHO_FDT_MAX_SIZE, KhoCompat, KhoVersion, PROP_BLOB_SIZE, PROP_COMPATIBLE,
        PROP_PRESERVED_MEMORY_MAP,
    };
    use crate::addr::PhysAddr;

    /// Why a root FDT could not be written.
    #[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
    pub enum FdtBuildError {
        /// The FDT would be larger than one page.
        #[error("root FDT of {size} bytes is larger than one page ({max} bytes)")]
        TooLarge {
            /// Bytes the FDT would take.
            size: usize,
            /// The limit, [`KHO_FDT_MAX_SIZE`].
            max: usize,
        },
        /// A subnode name that is not a valid DT node name.
        #[error("`{name}` is not a valid device tree node name")]
        InvalidName {
            /// The name.
            name: FdtName,
        },
        /// Two subnodes with the same name.
        #[error("two subnodes are named `{name}`")]
        DuplicateName {
            /// The name.
            name: FdtName,
        },
        /// Any other refusal of the FDT writer.
        #[error("FDT writer: {0}")]
        Writer(String),
    }

    fn writer_error(e: vm_fdt::Error) -> FdtBuildError {
        FdtBuildError::Writer(alloc::format!("{e}"))
    }

    /// Writes a KHO root FDT the way Linux does: root `compatible`, then
    /// `preserved-memory-map`, then one subnode per user, every value the
    /// native-endian bytes of a u64.
    #[derive(Debug, Clone)]
    pub struct KhoFdtBuilder {
        compat: KhoCompat,
        root: PhysAddr,
        subnodes: Vec<(String, PhysAddr, u64)>,
    }

    impl KhoFdtBuilder {
        /// A `kho-v3` FDT whose memory map is at `root`.
        pub fn new(root: PhysAddr) -> Self {
            Self {
                compat: KhoCompat::plain(KhoVersion::DEFAULT),
                root,
                subnodes: Vec::new(),
            }
        }

        /// Writes another version instead (`kho-v1` subnodes get `fdt`,
        /// `kho-v1` and `kho-v2` subnodes get no `blob-size`).
        pub fn version(mut self, version: KhoVersion) -> Self {
            self.compat = KhoCompat::plain(version);
            self
        }

        /// Writes this `compatible`, compound or not (`kho-v4` and
        /// `kho-v4;radix-v1;vmalloc-v1` write the same subnodes as `kho-v3`).
        pub fn compat(mut self, compat: KhoCompat) -> Self {
            self.compat = compat;
            self
        }

        /// Adds a user's subnode: its blob at `data`, `size` bytes long
        /// (`size` is written only in kho-v3).
        pub fn add_subnode(&mut self, name: &str, data: PhysAddr, size: u64) -> &mut Self {
            self.subnodes.push((String::from(name), data, size));
            self
        }

        /// The DTB bytes (`totalsize` long, at most one page).
        pub fn build(&self) -> Result<Vec<u8>, FdtBuildError> {
            let mut w = FdtWriter::new().map_err(writer_error)?;
            let root = w.begin_node("").map_err(writer_error)?;
            let version = self.compat.version();
            w.property_string(PROP_COMPATIBLE, &alloc::format!("{}", self.compat))
                .map_err(writer_error)?;
            w.property(PROP_PRESERVED_MEMORY_MAP, &self.root.as_u64().to_ne_bytes())
                .map_err(writer_error)?;
            for (i, (name, data, size)) in self.subnodes.iter().enumerate() {
                if self.subnodes.iter().take(i).any(|(n, _, _)| n == name) {
                    return Err(FdtBuildError::DuplicateName {
                        name: FdtName::new(name),
                    });
                }
                // vm-fdt lets an empty name through; a DT child needs one.
                if name.is_empty() {
                    return Err(FdtBuildError::InvalidName {
                        name: FdtName::new(name),
                    });
                }
                let node = w.begin_node(name).map_err(|e| match e {
                    vm_fdt::Error::InvalidNodeName | vm_fdt::Error::InvalidString => {
                        FdtBuildError::InvalidName {
                            name: FdtName::new(name),
                        }
                    }
                    e => writer_error(e),
                })?;
                w.property(version.data_property(), &data.as_u64().to_ne_bytes())
                    .map_err(writer_error)?;
                if version.has_blob_size() {
                    w.property(PROP_BLOB_SIZE, &size.to_ne_bytes())
                        .map_err(writer_error)?;
                }
                w.end_node(node).map_err(writer_error)?;
            }
            w.end_node(root).map_err(writer_error)?;
            let bytes = w.finish().map_err(writer_error)?;
            if bytes.len() > KHO_FDT_MAX_SIZE {
                return Err(FdtBuildError::TooLarge {
                    size: bytes.len(),
                    max: KHO_FDT_MAX_SIZE,
                });
            }
            Ok(bytes)
        }
    }
}

#[cfg(all(test, feature = "alloc"))]
mod tests;
