//! Real captures: the folios a running process holds, read from `/proc`.
//!
//! Glossary:
//!
//! | name        | meaning                                                                |
//! |-------------|------------------------------------------------------------------------|
//! | VMA         | one line of `/proc/PID/maps`: a virtual range and what backs it        |
//! | frame       | a physical page a present virtual page maps (`/proc/PID/pagemap`)      |
//! | folio       | the compound page a frame belongs to (`/proc/kpageflags`): head + tails |
//! | shared      | a frame mapped more than once (by one process or several): kept once   |
//!
//! Sources (Documentation/admin-guide/mm/pagemap.rst):
//!
//! | file                 | entry                 | bits used                                        |
//! |----------------------|-----------------------|--------------------------------------------------|
//! | `/proc/PID/maps`     | a text line per VMA   | `start-end perms offset dev inode [path]`        |
//! | `/proc/PID/pagemap`  | u64 per virtual page  | 0-54 PFN ([`PM_PFN_MASK`]), 63 present ([`PM_PRESENT`]) |
//! | `/proc/kpageflags`   | u64 per PFN           | 15 `COMPOUND_HEAD`, 16 `COMPOUND_TAIL`, 17 `HUGE`, 22 `THP` |
//!
//! A folio's order: a head followed by `t` tail frames is `1 + t` pages,
//! rounded up to a power of two; the head's pfn must be aligned to it (a
//! folio that is not, or a tail whose head cannot be found, is captured as
//! the order-0 frames that were mapped, and counted in
//! [`CaptureStats::irregular`]). A mapped tail stands for its whole folio.
//!
//! Without `CAP_SYS_ADMIN` the kernel reports every PFN as zero: the capture
//! fails with [`CaptureError::NeedRoot`] rather than writing a trace of
//! frame 0.

use std::collections::BTreeSet;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

use kho::{Block, Order, Pfn};

use crate::trace::{Trace, TraceError};

/// `pagemap`: the PFN field (bits 0-54).
pub const PM_PFN_MASK: u64 = (1 << 55) - 1;
/// `pagemap`: the page is present in RAM (bit 63).
pub const PM_PRESENT: u64 = 1 << 63;
/// `kpageflags`: the first page of a compound page.
pub const KPF_COMPOUND_HEAD: u32 = 15;
/// `kpageflags`: a non-first page of a compound page.
pub const KPF_COMPOUND_TAIL: u32 = 16;
/// `kpageflags`: a hugetlbfs page.
pub const KPF_HUGE: u32 = 17;
/// `kpageflags`: a transparent huge page.
pub const KPF_THP: u32 = 22;

/// The largest folio a capture accepts (1 GiB, order 18).
pub const MAX_FOLIO_ORDER: u32 = 18;

const PAGE: u64 = 4096;
/// pagemap entries read at once.
const CHUNK: u64 = 8192;

/// Errors of capturing.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// A `/proc` file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A `maps` line that does not parse.
    #[error("{path}: malformed line {line:?}")]
    BadMaps {
        /// The file.
        path: PathBuf,
        /// The line.
        line: String,
    },
    /// Present pages, all with PFN 0: the kernel hid the frames.
    #[error(
        "pagemap PFNs are zero: run as root (CAP_SYS_ADMIN) ({present} present pages of pid {pid} read as frame 0)"
    )]
    NeedRoot {
        /// The process.
        pid: u32,
        /// Its present pages.
        present: u64,
    },
    /// Nothing to capture.
    #[error("no process could be captured ({0})")]
    Nothing(String),
    /// The captured blocks do not form a valid trace (a bug).
    #[error("the captured blocks: {0}")]
    Trace(#[from] TraceError),
}

fn io(path: &str) -> impl FnOnce(std::io::Error) -> CaptureError + '_ {
    move |source| CaptureError::Io {
        path: PathBuf::from(path),
        source,
    }
}

/// One line of `/proc/PID/maps`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vma {
    /// First virtual address.
    pub start: u64,
    /// One past the last.
    pub end: u64,
    /// `rwxp`-style permissions.
    pub perms: String,
    /// The backing path or pseudo name (`[heap]`, ...), empty for anonymous.
    pub name: String,
}

/// Parses `/proc/PID/maps`.
pub fn read_maps(pid: u32) -> Result<Vec<Vma>, CaptureError> {
    let path = format!("/proc/{pid}/maps");
    let text = std::fs::read_to_string(&path).map_err(io(&path))?;
    text.lines()
        .map(|line| {
            parse_maps_line(line).ok_or_else(|| CaptureError::BadMaps {
                path: PathBuf::from(&path),
                line: line.to_owned(),
            })
        })
        .collect()
}

fn parse_maps_line(line: &str) -> Option<Vma> {
    let mut f = line.split_whitespace();
    let (range, perms) = (f.next()?, f.next()?);
    let (s, e) = range.split_once('-')?;
    let (start, end) = (
        u64::from_str_radix(s, 16).ok()?,
        u64::from_str_radix(e, 16).ok()?,
    );
    // offset, dev, inode, then the name (may contain spaces).
    let name = f.nth(3).map_or(String::new(), |first| {
        std::iter::once(first)
            .chain(f)
            .collect::<Vec<_>>()
            .join(" ")
    });
    (start <= end).then(|| Vma {
        start,
        end,
        perms: perms.to_owned(),
        name,
    })
}

/// The frames of one process.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Frames {
    /// Distinct frames of present pages, ascending.
    pub pfns: Vec<Pfn>,
    /// Present virtual pages (a frame mapped twice counts twice).
    pub present: u64,
    /// Present pages whose PFN read as zero.
    pub zero_pfn: u64,
}

/// The present frames of `pid`'s virtual pages in `[lo, hi)` (every VMA
/// intersected with it; `None`: the whole address space). `[vsyscall]` is
/// skipped; a VMA whose pagemap cannot be read is skipped.
pub fn process_frames(pid: u32, window: Option<(u64, u64)>) -> Result<Frames, CaptureError> {
    let vmas = read_maps(pid)?;
    let path = format!("/proc/{pid}/pagemap");
    let pagemap = File::open(&path).map_err(io(&path))?;
    let mut out = Frames::default();
    let mut buf = vec![0u8; usize::try_from(CHUNK * 8).unwrap_or(65536)];
    for v in vmas.iter().filter(|v| v.name != "[vsyscall]") {
        let (lo, hi) = window.unwrap_or((0, u64::MAX));
        let (start, end) = (v.start.max(lo) / PAGE, v.end.min(hi).div_ceil(PAGE));
        let mut page = start;
        'vma: while page < end {
            let n = (end - page).min(CHUNK);
            let bytes = usize::try_from(n * 8).unwrap_or(0);
            let Some(chunk) = buf.get_mut(..bytes) else {
                break;
            };
            if pagemap.read_exact_at(chunk, page * 8).is_err() {
                break 'vma;
            }
            for e in chunk.chunks_exact(8) {
                let mut w = [0u8; 8];
                w.copy_from_slice(e);
                let entry = u64::from_ne_bytes(w);
                if entry & PM_PRESENT != 0 {
                    out.present += 1;
                    match entry & PM_PFN_MASK {
                        0 => out.zero_pfn += 1,
                        pfn => out.pfns.extend(Pfn::new(pfn)),
                    }
                }
            }
            page += n;
        }
    }
    if out.present > 0 && out.zero_pfn == out.present {
        return Err(CaptureError::NeedRoot {
            pid,
            present: out.present,
        });
    }
    out.pfns.sort_unstable();
    out.pfns.dedup();
    Ok(out)
}

/// `/proc/kpageflags`, read 512 entries (one page) at a time.
#[derive(Debug)]
pub struct KPageFlags {
    file: File,
    base: u64,
    cache: Vec<u64>,
}

impl KPageFlags {
    /// Opens `/proc/kpageflags`.
    pub fn open() -> Result<Self, CaptureError> {
        let path = "/proc/kpageflags";
        Ok(Self {
            file: File::open(path).map_err(io(path))?,
            base: u64::MAX,
            cache: Vec::new(),
        })
    }

    /// The flags of `pfn` (0 if unreadable: past the end of memory).
    pub fn get(&mut self, pfn: Pfn) -> u64 {
        let pfn = pfn.as_u64();
        let base = pfn & !511;
        if base != self.base {
            let mut buf = [0u8; 4096];
            let n = read_upto(&self.file, &mut buf, base.saturating_mul(8));
            self.cache = buf
                .get(..n)
                .unwrap_or_default()
                .chunks_exact(8)
                .map(|c| {
                    let mut w = [0u8; 8];
                    w.copy_from_slice(c);
                    u64::from_ne_bytes(w)
                })
                .collect();
            self.base = base;
        }
        usize::try_from(pfn - base)
            .ok()
            .and_then(|i| self.cache.get(i))
            .copied()
            .unwrap_or(0)
    }
}

/// A source of `kpageflags` entries: [`KPageFlags`], or a table in tests.
pub trait PageFlags {
    /// The flags of `pfn` (0 if unknown).
    fn flags(&mut self, pfn: u64) -> u64;

    /// Whether `pfn` has flag `bit`.
    fn has(&mut self, pfn: u64, bit: u32) -> bool {
        self.flags(pfn) & (1 << bit) != 0
    }
}

impl PageFlags for KPageFlags {
    fn flags(&mut self, pfn: u64) -> u64 {
        Pfn::new(pfn).map_or(0, |p| self.get(p))
    }
}

impl<F: FnMut(u64) -> u64> PageFlags for F {
    fn flags(&mut self, pfn: u64) -> u64 {
        self(pfn)
    }
}

fn read_upto(f: &File, buf: &mut [u8], at: u64) -> usize {
    let mut done = 0;
    while done < buf.len() {
        let Some(rest) = buf.get_mut(done..) else {
            break;
        };
        match f.read_at(rest, at + done as u64) {
            Ok(0) | Err(_) => break,
            Ok(n) => done += n,
        }
    }
    done - done % 8
}

/// What a capture found.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct CaptureStats {
    /// Processes captured.
    pub processes: u64,
    /// Processes skipped (gone, kernel threads, unreadable).
    pub skipped: u64,
    /// Present virtual pages over all processes.
    pub present_pages: u64,
    /// Distinct frames after deduplication (across processes).
    pub frames: u64,
    /// Frames in compound pages (head or tail).
    pub compound_frames: u64,
    /// Folios whose order or head could not be established (captured as
    /// order-0 frames).
    pub irregular: u64,
}

/// A capture: the trace and what went into it.
#[derive(Debug, Clone, Default)]
pub struct Capture {
    /// The folios.
    pub trace: Trace,
    /// Counts.
    pub stats: CaptureStats,
}

/// The folio blocks of sorted distinct `pfns` (see the module doc for the
/// rule), sorted and disjoint.
pub fn folios(pfns: &[Pfn], flags: &mut impl PageFlags, stats: &mut CaptureStats) -> Vec<Block> {
    let mut out: Vec<Block> = Vec::new();
    let mut covered_end = 0u64; // one past the last block emitted
    let order0 = |pfn: u64| Pfn::new(pfn).and_then(|p| Block::from_pfn(p, Order::ZERO).ok());
    for pfn in pfns.iter().map(|p| p.as_u64()) {
        if pfn < covered_end {
            continue; // inside a folio already emitted
        }
        let head = flags.has(pfn, KPF_COMPOUND_HEAD);
        let tail = flags.has(pfn, KPF_COMPOUND_TAIL);
        if !head && !tail {
            out.extend(order0(pfn));
            covered_end = pfn + 1;
            continue;
        }
        stats.compound_frames += 1;
        let head_pfn = if head {
            Some(pfn)
        } else {
            find_head(pfn, flags)
        };
        let block = head_pfn.and_then(|h| {
            let tails = count_tails(h, flags);
            let order = (1 + tails).next_power_of_two().ilog2();
            let b = Pfn::new(h).and_then(|p| Order::try_new(order).ok().map(|o| (p, o)))?;
            Block::from_pfn(b.0, b.1)
                .ok()
                .filter(|_| h >= covered_end && order <= MAX_FOLIO_ORDER)
        });
        match block {
            Some(b) => {
                covered_end = b.pfn().as_u64() + b.order().pages();
                out.push(b);
            }
            None => {
                stats.irregular += 1;
                out.extend(order0(pfn));
                covered_end = pfn + 1;
            }
        }
    }
    out
}

fn find_head(tail: u64, flags: &mut impl PageFlags) -> Option<u64> {
    let limit = 1u64 << MAX_FOLIO_ORDER;
    let mut p = tail;
    for _ in 0..limit {
        p = p.checked_sub(1)?;
        if flags.has(p, KPF_COMPOUND_HEAD) {
            return Some(p);
        }
        if !flags.has(p, KPF_COMPOUND_TAIL) {
            return None;
        }
    }
    None
}

fn count_tails(head: u64, flags: &mut impl PageFlags) -> u64 {
    let limit = 1u64 << MAX_FOLIO_ORDER;
    let mut n = 0;
    while n < limit {
        let p = head + n + 1;
        if flags.has(p, KPF_COMPOUND_HEAD) || !flags.has(p, KPF_COMPOUND_TAIL) {
            break;
        }
        n += 1;
    }
    n
}

/// Every process with a `/proc` entry, ascending by pid.
pub fn all_pids() -> Result<Vec<u32>, CaptureError> {
    let dir = std::fs::read_dir("/proc").map_err(io("/proc"))?;
    let mut pids: Vec<u32> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    pids.sort_unstable();
    Ok(pids)
}

/// Captures `pids` (each restricted to `window` if given, see
/// [`process_frames`]): their frames, deduplicated across processes, as
/// folios. With `skip_missing`, a process that vanished or cannot be read
/// is counted as skipped (for `--all`); otherwise it is an error.
/// [`CaptureError::NeedRoot`] is always an error.
pub fn capture(
    pids: &[u32],
    window: Option<(u64, u64)>,
    skip_missing: bool,
) -> Result<Capture, CaptureError> {
    let mut stats = CaptureStats::default();
    let mut all = BTreeSet::new();
    let mut last_err = String::from("no pid given");
    for &pid in pids {
        match process_frames(pid, window) {
            Ok(f) => {
                stats.processes += 1;
                stats.present_pages += f.present;
                all.extend(f.pfns);
            }
            Err(e @ CaptureError::NeedRoot { .. }) => return Err(e),
            Err(e) if skip_missing => {
                stats.skipped += 1;
                last_err = e.to_string();
            }
            Err(e) => return Err(e),
        }
    }
    if stats.processes == 0 {
        return Err(CaptureError::Nothing(last_err));
    }
    let pfns: Vec<Pfn> = all.into_iter().collect();
    stats.frames = u64::try_from(pfns.len()).unwrap_or(u64::MAX);
    let mut flags = KPageFlags::open()?;
    let blocks = folios(&pfns, &mut flags, &mut stats);
    Ok(Capture {
        trace: Trace::from_blocks(blocks)?,
        stats,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_lines_parse() {
        let v = parse_maps_line(
            "7f12a000-7f12c000 r-xp 00001000 08:01 1234    /usr/lib/lib with space.so",
        )
        .unwrap();
        assert_eq!((v.start, v.end), (0x7f12_a000, 0x7f12_c000));
        assert_eq!(v.name, "/usr/lib/lib with space.so");
        let v = parse_maps_line("1000-2000 rw-p 00000000 00:00 0").unwrap();
        assert_eq!(v.name, "");
        assert!(parse_maps_line("zz").is_none());
    }

    const HEAD: u64 = 1 << KPF_COMPOUND_HEAD;
    const TAIL: u64 = 1 << KPF_COMPOUND_TAIL;

    fn blk(pfn: u64, order: u8) -> Block {
        Block::from_pfn(Pfn::new(pfn).unwrap(), Order::new(order)).unwrap()
    }

    /// Synthetic flags: a 2 MiB folio at 0x200, a 16 KiB folio at 0x1000,
    /// a "folio" of 3 pages at 0x2001 (misaligned once rounded), order-0
    /// pages elsewhere.
    fn table(pfn: u64) -> u64 {
        match pfn {
            0x200 | 0x1000 | 0x2001 => HEAD,
            0x201..0x400 | 0x1001..0x1004 | 0x2002..0x2004 => TAIL,
            _ => 0,
        }
    }

    #[test]
    fn folios_follow_heads_and_tails() {
        let mut st = CaptureStats::default();
        // 0x205 is a tail mapped without its head; 0x300 a later tail of the
        // same folio; 0x1002 a tail of the 16 KiB folio; 0x2001 the head of
        // a 3-page compound page (rounded to 4, misaligned: order-0).
        let pfns: Vec<Pfn> = [0x7, 0x205, 0x300, 0x400, 0x1002, 0x2001, 0x2003]
            .into_iter()
            .map(|p| Pfn::new(p).unwrap())
            .collect();
        let got = folios(&pfns, &mut table, &mut st);
        assert_eq!(
            got,
            [
                blk(0x7, 0),
                blk(0x200, 9),
                blk(0x400, 0),
                blk(0x1000, 2),
                blk(0x2001, 0),
                blk(0x2003, 0)
            ]
        );
        assert_eq!(st.irregular, 2);
        assert_eq!(st.compound_frames, 4);
    }

    /// The real kpageflags: the first compound head of this machine makes
    /// an aligned folio of order at least 1.
    #[test]
    fn a_real_compound_head_is_an_aligned_folio() {
        let Ok(mut f) = KPageFlags::open() else {
            return;
        };
        let Some(head) = (0..(1u64 << 22)).find(|&p| f.has(p, KPF_COMPOUND_HEAD)) else {
            return; // no large folio below 16 GiB: nothing to check
        };
        let mut st = CaptureStats::default();
        let pfns = [Pfn::new(head).unwrap(), Pfn::new(head + 1).unwrap()];
        let got = folios(&pfns, &mut f, &mut st);
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got[0].pfn().as_u64(), head);
        assert!(got[0].order().as_u8() >= 1);
        assert_eq!(st.irregular, 0);
    }

    /// As root (this machine's tests run as root): our own heap has present
    /// frames with real PFNs, and every block is a valid folio.
    #[test]
    fn capturing_this_process_finds_its_pages() {
        let me = std::process::id();
        let data = vec![7u8; 64 * 4096];
        let addr = data.as_ptr() as u64;
        let c = match capture(&[me], Some((addr, addr + 64 * 4096)), false) {
            Err(CaptureError::NeedRoot { .. }) => return, // not root: nothing to check
            r => r.unwrap(),
        };
        assert!(c.stats.frames >= 63, "{:?}", c.stats);
        assert!(c.trace.stats().pages >= c.stats.frames);
        assert_eq!(data[4096], 7);
    }
}
