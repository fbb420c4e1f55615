//! Trace files: a list of preserved blocks, from a capture or a generator.
//!
//! Glossary:
//!
//! | name     | meaning                                                                  |
//! |----------|--------------------------------------------------------------------------|
//! | block    | `(pfn, order)`: `2^order` pages from frame `pfn`, naturally aligned      |
//! | trace    | a set of blocks, no two overlapping ([`Trace`]), kept sorted by pfn      |
//! | location | where in a file a block was read: a line (text) or a byte offset (binary) |
//! | run      | a maximal range of adjacent blocks (what a range tracker stores as one)  |
//!
//! Two formats, sniffed by their first bytes ([`Trace::parse`]): a file that
//! starts with [`MAGIC`] is binary, anything else must be text.
//!
//! ## Binary format (version 1)
//!
//! Integers after the magic are [postcard] varints (LEB128: 7 bits a byte,
//! low bits first, high bit = more follows); `order` is one byte.
//!
//! | offset | size        | field    | meaning                                      |
//! |--------|-------------|----------|----------------------------------------------|
//! | 0      | 8           | magic    | `KHOTRACE` (ASCII)                           |
//! | 8      | 1..=5       | version  | u32 varint, [`VERSION`] (1)                  |
//! | ..     | 1..=10      | count    | u64 varint, number of blocks `n`             |
//! | ..     | n x (2..=11)| blocks   | each: `pfn` u64 varint, then `order` u8      |
//!
//! Nothing may follow the last block. Blocks are written sorted by pfn; the
//! reader accepts any order.
//!
//! ## Text format
//!
//! One block per line, `pfn order`, each decimal or `0x`-hex, separated by
//! white space; `#` starts a comment (whole line or the end of one); blank
//! lines are skipped. The writer starts with `# kho-trace v1 ...` comments.
//!
//! ```text
//! # kho-trace v1: pfn order
//! 0x12345 0
//! 0x40000 9      # a 2 MiB folio
//! 262144 18
//! ```
//!
//! ## Validation
//!
//! Both readers reject, naming the line (text) or byte offset (binary) and
//! the reason ([`TraceError`]): a truncated file, a wrong magic or version,
//! a malformed number, an order above [`MAX_TRACE_ORDER`], a pfn not aligned
//! for its order, a duplicate block, two overlapping blocks, trailing bytes.
//! Overlaps are found after sorting: the error names the block that comes
//! later in the file and where the other one is.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use kho::{Block, Order, Pfn};

/// The binary format's first eight bytes.
pub const MAGIC: [u8; 8] = *b"KHOTRACE";

/// The binary format's version this build reads and writes.
pub const VERSION: u32 = 1;

/// The largest order a trace may hold: 1 GiB folios (order 18) and room
/// above, below [`Order::MAX`].
pub const MAX_TRACE_ORDER: u8 = 30;

/// Where in a file a block (or a fault) was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loc {
    /// A line of a text trace, 1-based.
    Line(usize),
    /// A byte offset in a binary trace.
    Offset(usize),
    /// The index of a block in a list given in memory.
    Index(usize),
}

impl fmt::Display for Loc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Line(n) => write!(f, "line {n}"),
            Self::Offset(n) => write!(f, "byte offset {n}"),
            Self::Index(n) => write!(f, "block {n}"),
        }
    }
}

/// Errors of reading and writing traces.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    /// The file ends inside a field.
    #[error("{at}: truncated: {what}")]
    Truncated {
        /// Where the missing bytes should be.
        at: Loc,
        /// What was being read.
        what: String,
    },
    /// Neither a binary trace nor text.
    #[error(
        "{at}: not a kho trace: no {magic:?} magic and not UTF-8 text",
        magic = "KHOTRACE"
    )]
    BadMagic {
        /// Where.
        at: Loc,
    },
    /// A binary trace of another version.
    #[error("{at}: unsupported trace version {found} (this build reads version {supported})")]
    WrongVersion {
        /// Where the version is.
        at: Loc,
        /// The file's version.
        found: u64,
        /// [`VERSION`].
        supported: u32,
    },
    /// A field that is not a number (text) or not a valid varint (binary).
    #[error("{at}: malformed {what}")]
    Malformed {
        /// Where.
        at: Loc,
        /// What and why.
        what: String,
    },
    /// An order above [`MAX_TRACE_ORDER`].
    #[error("{at}: order {order} is above the largest trace order {max}")]
    BadOrder {
        /// Where.
        at: Loc,
        /// The order.
        order: u64,
        /// [`MAX_TRACE_ORDER`].
        max: u8,
    },
    /// A pfn that is not a multiple of its block's pages.
    #[error(
        "{at}: pfn {pfn:#x} is misaligned for order {order} (must be a multiple of {pages:#x} pages)"
    )]
    Misaligned {
        /// Where.
        at: Loc,
        /// The frame.
        pfn: u64,
        /// The order.
        order: u8,
        /// `2^order`.
        pages: u64,
    },
    /// The same block twice.
    #[error("{at}: duplicate block (pfn {pfn:#x}, order {order}), first at {first}")]
    Duplicate {
        /// Where the second copy is.
        at: Loc,
        /// Where the first is.
        first: Loc,
        /// The frame.
        pfn: u64,
        /// The order.
        order: u8,
    },
    /// Two blocks sharing pages.
    #[error(
        "{at}: block (pfn {pfn:#x}, order {order}) overlaps block (pfn {other_pfn:#x}, order {other_order}) at {other}"
    )]
    Overlap {
        /// Where the later (in the file) block is.
        at: Loc,
        /// Its frame.
        pfn: u64,
        /// Its order.
        order: u8,
        /// Where the other is.
        other: Loc,
        /// Its frame.
        other_pfn: u64,
        /// Its order.
        other_order: u8,
    },
    /// Bytes after the last block of a binary trace.
    #[error("{at}: {count} trailing bytes after the last block")]
    TrailingBytes {
        /// Where they start.
        at: Loc,
        /// How many.
        count: usize,
    },
    /// Reading or writing the file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

/// A trace's file format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TraceFormat {
    /// [`MAGIC`], version, count, blocks (postcard varints).
    Binary,
    /// `pfn order` lines.
    Text,
}

/// A validated list of blocks: sorted by pfn, every block naturally
/// aligned, no two overlapping.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Trace {
    blocks: Vec<Block>,
}

/// What a trace holds.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct TraceStats {
    /// Blocks.
    pub blocks: u64,
    /// Pages of all blocks.
    pub pages: u64,
    /// Bytes of all blocks.
    pub bytes: u64,
    /// Maximal runs of adjacent blocks (coalesced ranges).
    pub ranges: u64,
    /// Blocks per order.
    pub orders: BTreeMap<u8, u64>,
    /// The lowest and highest frame (`None` if empty).
    pub span: Option<(u64, u64)>,
}

impl Trace {
    /// A trace of `blocks` (any order), validated like a file's blocks with
    /// [`Loc::Index`] locations.
    pub fn from_blocks(blocks: Vec<Block>) -> Result<Self, TraceError> {
        let raw = blocks
            .iter()
            .enumerate()
            .map(|(i, b)| (Loc::Index(i), b.pfn().as_u64(), b.order().as_u8()))
            .collect();
        validate(raw)
    }

    /// The blocks, sorted by pfn.
    pub fn blocks(&self) -> &[Block] {
        &self.blocks
    }

    /// The blocks, sorted by pfn.
    pub fn into_blocks(self) -> Vec<Block> {
        self.blocks
    }

    /// Parses either format: binary if `bytes` starts with [`MAGIC`], text
    /// otherwise.
    pub fn parse(bytes: &[u8]) -> Result<Self, TraceError> {
        if bytes.starts_with(&MAGIC) {
            return Self::parse_binary(bytes);
        }
        if MAGIC.starts_with(bytes.get(..bytes.len().min(8)).unwrap_or_default())
            && !bytes.is_empty()
        {
            return Err(TraceError::Truncated {
                at: Loc::Offset(bytes.len()),
                what: "magic".into(),
            });
        }
        match std::str::from_utf8(bytes) {
            Ok(text) => Self::parse_text(text),
            Err(e) => Err(TraceError::BadMagic {
                at: Loc::Offset(e.valid_up_to()),
            }),
        }
    }

    /// Reads and parses `path` ([`Trace::parse`]).
    pub fn read(path: &Path) -> Result<Self, TraceError> {
        let bytes = std::fs::read(path).map_err(|source| TraceError::Io {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&bytes)
    }

    /// Writes the trace to `path` in `format`.
    pub fn write(&self, path: &Path, format: TraceFormat) -> Result<(), TraceError> {
        let bytes = match format {
            TraceFormat::Binary => self.to_binary(),
            TraceFormat::Text => self.to_text().into_bytes(),
        };
        std::fs::write(path, bytes).map_err(|source| TraceError::Io {
            path: path.to_owned(),
            source,
        })
    }

    /// The binary format.
    pub fn parse_binary(bytes: &[u8]) -> Result<Self, TraceError> {
        let mut r = Reader { bytes, off: 0 };
        if !bytes.starts_with(&MAGIC) {
            return Err(TraceError::BadMagic { at: Loc::Offset(0) });
        }
        r.off = MAGIC.len();
        let at = r.off;
        let version: u64 = r.take("version")?;
        if version != u64::from(VERSION) {
            return Err(TraceError::WrongVersion {
                at: Loc::Offset(at),
                found: version,
                supported: VERSION,
            });
        }
        let count: u64 = r.take("block count")?;
        // Every block takes at least two bytes: refuse a count the file
        // cannot hold before allocating for it.
        let room = bytes.len().saturating_sub(r.off) / 2;
        if count > u64::try_from(room).unwrap_or(u64::MAX) {
            return Err(TraceError::Truncated {
                at: Loc::Offset(bytes.len()),
                what: format!("the header announces {count} blocks, the file holds at most {room}"),
            });
        }
        let mut raw = Vec::with_capacity(usize::try_from(count).unwrap_or(0));
        for i in 0..count {
            let at = Loc::Offset(r.off);
            let pfn: u64 = r.take(&format!("pfn of block {i}"))?;
            let order: u8 = r.take(&format!("order of block {i}"))?;
            raw.push((at, pfn, order));
        }
        if r.off < bytes.len() {
            return Err(TraceError::TrailingBytes {
                at: Loc::Offset(r.off),
                count: bytes.len() - r.off,
            });
        }
        validate(raw)
    }

    /// The text format.
    pub fn parse_text(text: &str) -> Result<Self, TraceError> {
        let mut raw = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let at = Loc::Line(i + 1);
            let body = line.split('#').next().unwrap_or_default().trim();
            if body.is_empty() {
                continue;
            }
            let mut fields = body.split_whitespace();
            let (Some(pfn), Some(order)) = (fields.next(), fields.next()) else {
                return Err(TraceError::Truncated {
                    at,
                    what: format!("{body:?}: expected `pfn order`"),
                });
            };
            if let Some(extra) = fields.next() {
                return Err(TraceError::Malformed {
                    at,
                    what: format!("line: unexpected {extra:?} after `pfn order`"),
                });
            }
            let pfn = number(pfn, "pfn", at)?;
            let order = number(order, "order", at)?;
            let order = u8::try_from(order)
                .ok()
                .filter(|&o| o <= MAX_TRACE_ORDER)
                .ok_or(TraceError::BadOrder {
                    at,
                    order,
                    max: MAX_TRACE_ORDER,
                })?;
            raw.push((at, pfn, order));
        }
        validate(raw)
    }

    /// The binary format's bytes.
    pub fn to_binary(&self) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        let mut put = |v: u64| {
            let mut buf = [0u8; 10];
            if let Ok(s) = postcard::to_slice(&v, &mut buf) {
                out.extend_from_slice(s);
            }
        };
        put(u64::from(VERSION));
        put(u64::try_from(self.blocks.len()).unwrap_or(u64::MAX));
        let mut body = Vec::new();
        for b in &self.blocks {
            let mut buf = [0u8; 10];
            if let Ok(s) = postcard::to_slice(&b.pfn().as_u64(), &mut buf) {
                body.extend_from_slice(s);
            }
            body.push(b.order().as_u8());
        }
        out.extend_from_slice(&body);
        out
    }

    /// The text format.
    pub fn to_text(&self) -> String {
        let s = self.stats();
        let mut out = format!(
            "# kho-trace v1: pfn order (one block per line)\n# {} blocks, {} pages, {} ranges\n",
            s.blocks, s.pages, s.ranges
        );
        for b in &self.blocks {
            out.push_str(&format!("{:#x} {}\n", b.pfn().as_u64(), b.order().as_u8()));
        }
        out
    }

    /// Counts: blocks, pages, ranges, orders.
    pub fn stats(&self) -> TraceStats {
        let mut s = TraceStats::default();
        let mut end = None;
        for b in &self.blocks {
            s.blocks += 1;
            s.pages += b.order().pages();
            s.bytes += b.size();
            *s.orders.entry(b.order().as_u8()).or_default() += 1;
            if end != Some(b.pfn().as_u64()) {
                s.ranges += 1;
            }
            end = Some(b.pfn().as_u64() + b.order().pages());
        }
        s.span = self
            .blocks
            .first()
            .zip(end)
            .map(|(f, e)| (f.pfn().as_u64(), e - 1));
        s
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    off: usize,
}

impl Reader<'_> {
    fn take<T: serde::de::DeserializeOwned>(&mut self, what: &str) -> Result<T, TraceError> {
        let rest = self.bytes.get(self.off..).unwrap_or_default();
        match postcard::take_from_bytes::<T>(rest) {
            Ok((v, tail)) => {
                self.off = self.bytes.len() - tail.len();
                Ok(v)
            }
            Err(postcard::Error::DeserializeUnexpectedEnd) => Err(TraceError::Truncated {
                at: Loc::Offset(self.bytes.len()),
                what: what.to_owned(),
            }),
            Err(e) => Err(TraceError::Malformed {
                at: Loc::Offset(self.off),
                what: format!("{what}: {e}"),
            }),
        }
    }
}

fn number(s: &str, what: &str, at: Loc) -> Result<u64, TraceError> {
    let parsed = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => s.parse::<u64>(),
    };
    parsed.map_err(|e| TraceError::Malformed {
        at,
        what: format!("{what} {s:?}: {e}"),
    })
}

/// Checks orders and alignment in file order, then sorts and checks that
/// no two blocks share a page.
fn validate(raw: Vec<(Loc, u64, u8)>) -> Result<Trace, TraceError> {
    for &(at, pfn, order) in &raw {
        if order > MAX_TRACE_ORDER {
            return Err(TraceError::BadOrder {
                at,
                order: u64::from(order),
                max: MAX_TRACE_ORDER,
            });
        }
        let pages = 1u64 << order;
        if pfn % pages != 0 {
            return Err(TraceError::Misaligned {
                at,
                pfn,
                order,
                pages,
            });
        }
        if Pfn::new(pfn)
            .and_then(|p| p.checked_add(pages))
            .is_none_or(|end| end.as_u64() > Pfn::MAX.as_u64())
        {
            return Err(TraceError::Malformed {
                at,
                what: format!("pfn {pfn:#x}: the block ends beyond the 64-bit address space"),
            });
        }
    }
    // Sort by pfn (stable: equal pfns keep file order), then compare
    // neighbours: the first block that starts before the previous ends.
    let mut idx: Vec<usize> = (0..raw.len()).collect();
    idx.sort_by_key(|&i| raw.get(i).map(|r| r.1));
    let mut blocks = Vec::with_capacity(raw.len());
    let mut prev: Option<(usize, u64)> = None; // (index, end pfn)
    for &i in &idx {
        let Some(&(at, pfn, order)) = raw.get(i) else {
            continue;
        };
        if let Some((p, end)) = prev
            && pfn < end
            && let Some(&(pat, ppfn, porder)) = raw.get(p)
        {
            // Name the block that comes later in the file.
            let ((at, pfn, order), (oat, opfn, oorder)) = if i > p {
                ((at, pfn, order), (pat, ppfn, porder))
            } else {
                ((pat, ppfn, porder), (at, pfn, order))
            };
            return Err(if pfn == opfn && order == oorder {
                TraceError::Duplicate {
                    at,
                    first: oat,
                    pfn,
                    order,
                }
            } else {
                TraceError::Overlap {
                    at,
                    pfn,
                    order,
                    other: oat,
                    other_pfn: opfn,
                    other_order: oorder,
                }
            });
        }
        let end = pfn + (1u64 << order);
        if prev.is_none_or(|(_, e)| end > e) {
            prev = Some((i, end));
        }
        let block = Pfn::new(pfn)
            .and_then(|p| Block::from_pfn(p, Order::new(order)).ok())
            .ok_or(TraceError::Misaligned {
                at,
                pfn,
                order,
                pages: 1u64 << order,
            })?;
        blocks.push(block);
    }
    Ok(Trace { blocks })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(pfn: u64, order: u8) -> Block {
        Block::from_pfn(Pfn::new(pfn).unwrap(), Order::new(order)).unwrap()
    }

    fn sample() -> Trace {
        Trace::from_blocks(vec![
            b(0x12345, 0),
            b(0x12346, 0),
            b(0x200, 9),
            b(1 << 18, 18),
        ])
        .unwrap()
    }

    #[test]
    fn both_formats_round_trip() {
        let t = sample();
        assert_eq!(Trace::parse(&t.to_binary()).unwrap(), t);
        assert_eq!(Trace::parse(t.to_text().as_bytes()).unwrap(), t);
        let s = t.stats();
        assert_eq!((s.blocks, s.ranges), (4, 3));
        assert_eq!(s.pages, 2 + 512 + (1 << 18));
        assert_eq!(s.span, Some((0x200, (1 << 19) - 1)));
    }

    /// The binary format, byte by byte (golden bytes built by hand).
    #[test]
    fn binary_golden_bytes() {
        let t = Trace::from_blocks(vec![b(0x80, 7), b(1, 0)]).unwrap();
        let mut want = b"KHOTRACE".to_vec();
        want.extend([1, 2]); // version 1, 2 blocks
        want.extend([1, 0]); // pfn 1, order 0
        want.extend([0x80, 0x01, 7]); // pfn 0x80 (varint 80 01), order 7
        assert_eq!(t.to_binary(), want);
        assert_eq!(Trace::parse(&want).unwrap(), t);
    }

    #[test]
    fn text_accepts_hex_decimal_comments_and_any_order() {
        let text = "# a trace\n\n0x200 9 # THP\n 1 0\n0X3 0\n";
        let t = Trace::parse(text.as_bytes()).unwrap();
        assert_eq!(t.blocks(), [b(1, 0), b(3, 0), b(0x200, 9)]);
    }

    #[test]
    fn truncated_binary_is_refused_with_its_offset() {
        let bytes = sample().to_binary();
        // Cut inside the last block's pfn varint (pfn 1<<18 is 3 bytes).
        let cut = &bytes[..bytes.len() - 2];
        let e = Trace::parse(cut).unwrap_err();
        assert!(matches!(e, TraceError::Truncated { .. }), "{e}");
        assert_eq!(
            e.to_string(),
            format!("byte offset {}: truncated: pfn of block 3", bytes.len() - 2)
        );
        // A count the file cannot hold.
        let mut short = b"KHOTRACE".to_vec();
        short.extend([1, 100, 1, 0]);
        let e = Trace::parse(&short).unwrap_err();
        assert!(e.to_string().contains("announces 100 blocks"), "{e}");
        // A cut magic.
        let e = Trace::parse(b"KHOTR").unwrap_err();
        assert!(matches!(e, TraceError::Truncated { .. }), "{e}");
    }

    #[test]
    fn truncated_text_line_is_refused_with_its_line() {
        let e = Trace::parse(b"0x10 0\n0x20\n").unwrap_err();
        assert!(
            matches!(
                e,
                TraceError::Truncated {
                    at: Loc::Line(2),
                    ..
                }
            ),
            "{e}"
        );
        assert!(e.to_string().starts_with("line 2: truncated"), "{e}");
    }

    #[test]
    fn wrong_version_is_refused() {
        let mut bytes = sample().to_binary();
        bytes[8] = 2;
        let e = Trace::parse(&bytes).unwrap_err();
        assert!(
            matches!(
                e,
                TraceError::WrongVersion {
                    at: Loc::Offset(8),
                    found: 2,
                    supported: 1
                }
            ),
            "{e}"
        );
        assert_eq!(
            e.to_string(),
            "byte offset 8: unsupported trace version 2 (this build reads version 1)"
        );
    }

    #[test]
    fn misaligned_pfn_is_refused() {
        let e = Trace::parse(b"# x\n0x200 9\n0x201 1\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "line 3: pfn 0x201 is misaligned for order 1 (must be a multiple of 0x2 pages)"
        );
        let mut bytes = b"KHOTRACE".to_vec();
        bytes.extend([1, 1, 3, 1]);
        let e = Trace::parse(&bytes).unwrap_err();
        assert!(
            matches!(
                e,
                TraceError::Misaligned {
                    at: Loc::Offset(10),
                    pfn: 3,
                    order: 1,
                    ..
                }
            ),
            "{e}"
        );
    }

    #[test]
    fn duplicate_block_is_refused() {
        let e = Trace::parse(b"0x10 0\n0x200 9\n0x10 0\n").unwrap_err();
        assert!(
            matches!(
                e,
                TraceError::Duplicate {
                    at: Loc::Line(3),
                    first: Loc::Line(1),
                    pfn: 0x10,
                    order: 0
                }
            ),
            "{e}"
        );
        assert_eq!(
            e.to_string(),
            "line 3: duplicate block (pfn 0x10, order 0), first at line 1"
        );
    }

    #[test]
    fn overlapping_blocks_are_refused() {
        // A page inside a 2 MiB folio listed before it.
        let e = Trace::parse(b"0x205 0\n0x200 9\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "line 2: block (pfn 0x200, order 9) overlaps block (pfn 0x205, order 0) at line 1"
        );
        // Binary: two blocks of different orders at the same pfn.
        let mut bytes = b"KHOTRACE".to_vec();
        bytes.extend([1, 2, 4, 2, 4, 0]);
        let e = Trace::parse(&bytes).unwrap_err();
        assert!(
            matches!(
                e,
                TraceError::Overlap {
                    at: Loc::Offset(12),
                    other: Loc::Offset(10),
                    ..
                }
            ),
            "{e}"
        );
    }

    #[test]
    fn other_faults_are_named() {
        let e = Trace::parse(b"0x10 zz\n").unwrap_err();
        assert!(
            matches!(
                e,
                TraceError::Malformed {
                    at: Loc::Line(1),
                    ..
                }
            ),
            "{e}"
        );
        let e = Trace::parse(b"0x10 0 7\n").unwrap_err();
        assert!(
            matches!(
                e,
                TraceError::Malformed {
                    at: Loc::Line(1),
                    ..
                }
            ),
            "{e}"
        );
        let e = Trace::parse(b"0 31\n").unwrap_err();
        assert!(matches!(e, TraceError::BadOrder { order: 31, .. }), "{e}");
        let e = Trace::parse(&[0xff, 0xfe, 0]).unwrap_err();
        assert!(matches!(e, TraceError::BadMagic { .. }), "{e}");
        let mut bytes = sample().to_binary();
        bytes.push(0);
        let e = Trace::parse(&bytes).unwrap_err();
        assert!(
            matches!(e, TraceError::TrailingBytes { count: 1, .. }),
            "{e}"
        );
        let mut bytes = b"KHOTRACE".to_vec();
        bytes.extend([
            1, 1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f, 0,
        ]);
        let e = Trace::parse(&bytes).unwrap_err();
        assert!(
            matches!(
                e,
                TraceError::Malformed {
                    at: Loc::Offset(10),
                    ..
                }
            ),
            "{e}"
        );
        let e = Trace::read(Path::new("/nonexistent/x.trace")).unwrap_err();
        assert!(matches!(e, TraceError::Io { .. }), "{e}");
    }

    #[test]
    fn an_empty_trace_is_valid() {
        assert_eq!(Trace::parse(b"").unwrap(), Trace::default());
        assert_eq!(Trace::parse(b"# nothing\n").unwrap(), Trace::default());
        let t = Trace::default();
        assert_eq!(Trace::parse(&t.to_binary()).unwrap(), t);
    }
}
