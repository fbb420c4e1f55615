//! Ratios, the terminal table, JSON and the offline HTML report.

use std::fmt::Write as _;
use std::path::Path;

use comfy_table::{Cell as TCell, Table, presets::ASCII_MARKDOWN};
use plotters::prelude::*;
use serde::Serialize;

use kho_machine::Strategy;

use super::{BenchError, BenchReport, Cell};

/// Ours against one peer cell (a tracker under a strategy) on one workload
/// (ours / peer: below 1 is ours better).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Ratio {
    /// Workload.
    pub workload: String,
    /// Our strategy (`best` = the fastest of ours on this workload, named
    /// in `ours_strategy`).
    pub ours: String,
    /// The strategy behind `ours`.
    pub ours_strategy: String,
    /// The peer tracker.
    pub peer: String,
    /// The peer's strategy.
    pub peer_strategy: String,
    /// (walk + memblock) ours / peer.
    pub restore_ratio: f64,
    /// Next-boot init ours / peer.
    pub init_ratio: f64,
    /// Metadata bytes ours / peer.
    pub metadata_ratio: f64,
}

fn restore_ms(c: &Cell) -> f64 {
    c.walk_ms + c.memblock_ms
}

/// `tracker/strategy`.
fn pair(c: &Cell) -> String {
    format!("{}/{}", c.tracker, c.strategy)
}

/// Mainline or a step of its smallest fix (Linux's strategies, not ours).
fn linux_strategy(strategy: &str) -> bool {
    strategy
        .parse::<Strategy>()
        .is_ok_and(Strategy::is_mainline)
}

/// Fills every one of our cells' `restore_vs_peer` (by `tracker/strategy`)
/// and `metadata_vs_peer` (by tracker) from the peers' cells of the same
/// workload.
pub fn fill_cell_ratios(cells: &mut [Cell]) {
    let peers: Vec<(String, String, String, f64, u64)> = cells
        .iter()
        .filter(|c| c.tracker != "kho")
        .map(|c| {
            (
                c.workload.clone(),
                c.tracker.clone(),
                pair(c),
                restore_ms(c),
                c.metadata_bytes,
            )
        })
        .collect();
    for c in cells.iter_mut().filter(|c| c.tracker == "kho") {
        let ours = restore_ms(c);
        for (w, t, p, ms, md) in &peers {
            if *w == c.workload {
                c.restore_vs_peer.insert(p.clone(), ours / ms);
                c.metadata_vs_peer
                    .insert(t.clone(), c.metadata_bytes as f64 / (*md).max(1) as f64);
            }
        }
    }
}

/// The workloads of `cells`, in run order.
pub fn workloads(cells: &[Cell]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for c in cells {
        if !out.contains(&c.workload) {
            out.push(c.workload.clone());
        }
    }
    out
}

/// For each workload: ours (best, bulk, skip: our tree under our
/// strategies) / each peer cell (every other tracker under each strategy
/// it feeds).
pub fn ratios(cells: &[Cell]) -> Vec<Ratio> {
    let mut out = Vec::new();
    for w in workloads(cells) {
        let ours: Vec<&Cell> = cells
            .iter()
            .filter(|c| c.workload == w && c.tracker == "kho" && !linux_strategy(&c.strategy))
            .collect();
        let peers: Vec<&Cell> = cells
            .iter()
            .filter(|c| c.workload == w && c.tracker != "kho")
            .collect();
        let best = ours
            .iter()
            .min_by(|a, b| restore_ms(a).total_cmp(&restore_ms(b)));
        let mut picks: Vec<(&str, &Cell)> = Vec::new();
        if let Some(b) = best {
            picks.push(("best", b));
        }
        for s in ["bulk", "skip"] {
            if let Some(c) = ours.iter().find(|c| c.strategy == s) {
                picks.push((s, c));
            }
        }
        for (label, o) in picks {
            for p in &peers {
                out.push(Ratio {
                    workload: w.clone(),
                    ours: label.to_owned(),
                    ours_strategy: o.strategy.clone(),
                    peer: p.tracker.clone(),
                    peer_strategy: p.strategy.clone(),
                    restore_ratio: restore_ms(o) / restore_ms(p),
                    init_ratio: o.next_boot_init_ms / p.next_boot_init_ms,
                    metadata_ratio: o.metadata_bytes as f64 / p.metadata_bytes.max(1) as f64,
                });
            }
        }
    }
    out
}

fn f(x: f64, prec: usize) -> String {
    if x.is_nan() {
        "-".into()
    } else {
        format!("{x:.prec$}")
    }
}

/// The cells as a table.
pub fn cells_table(r: &BenchReport) -> Table {
    let mut t = Table::new();
    t.load_preset(ASCII_MARKDOWN);
    t.set_header(vec![
        "workload",
        "tracker",
        "strategy",
        "blocks",
        "pres ns/blk",
        "pres 2t",
        "prep ms",
        "md bytes",
        "bits/page",
        "walk ms",
        "memblock ms",
        "regions",
        "mm init ms",
        "init ms",
        "x baseline",
        "restore peak",
    ]);
    for c in &r.cells {
        t.add_row(vec![
            TCell::new(&c.workload),
            TCell::new(&c.tracker),
            TCell::new(&c.strategy),
            TCell::new(c.blocks),
            TCell::new(f(c.preserve_ns_per_block, 0)),
            TCell::new(f(c.preserve_ns_per_block_2t, 0)),
            TCell::new(f(c.prepare_ms, 3)),
            TCell::new(c.metadata_bytes),
            TCell::new(f(c.metadata_bits_per_page, 3)),
            TCell::new(f(c.walk_ms, 2)),
            TCell::new(f(c.memblock_ms, 2)),
            TCell::new(c.reserved_regions),
            TCell::new(f(c.mm_init_ms, 2)),
            TCell::new(f(c.next_boot_init_ms, 2)),
            TCell::new(f(c.init_vs_baseline, 2)),
            TCell::new(c.restore_peak_bytes),
        ]);
    }
    t
}

/// What a strategy column of [`pivot_table`] shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PivotValue {
    /// The memblock work, ms (what the strategy decides).
    Memblock,
    /// Restore = walk + memblock, ms.
    Restore,
    /// Next-boot init = walk + memblock + mm init, ms.
    Init,
}

impl PivotValue {
    /// What the columns hold, for a title.
    pub const fn describe(self) -> &'static str {
        match self {
            Self::Memblock => "memblock ms",
            Self::Restore => "restore (walk + memblock) ms",
            Self::Init => "next-boot init (walk + memblock + mm init) ms",
        }
    }

    fn of(self, c: &Cell) -> f64 {
        match self {
            Self::Memblock => c.memblock_ms,
            Self::Restore => restore_ms(c),
            Self::Init => c.next_boot_init_ms,
        }
    }
}

/// The strategies present in `cells`, in [`Strategy::ALL`] order.
fn strategies_of(cells: &[&Cell]) -> Vec<&'static str> {
    Strategy::NAMES
        .into_iter()
        .filter(|s| cells.iter().any(|c| c.strategy == *s))
        .collect()
}

/// The tracker x strategy table of workload `w`: one row per tracker with
/// its own costs (preserve ns/block with 1 and 2 threads, handover
/// preparation, metadata), one column per strategy holding `value` ("-":
/// the tracker's handover cannot feed it).
pub fn pivot_table(r: &BenchReport, w: &str, value: PivotValue) -> Table {
    let cells: Vec<&Cell> = r.cells.iter().filter(|c| c.workload == w).collect();
    let strategies = strategies_of(&cells);
    let mut t = Table::new();
    t.load_preset(ASCII_MARKDOWN);
    let mut header: Vec<String> = [
        "tracker",
        "pres ns/blk",
        "pres 2t",
        "prep ms",
        "md bytes",
        "bits/page",
    ]
    .map(String::from)
    .to_vec();
    header.extend(strategies.iter().map(|s| s.to_string()));
    t.set_header(header);
    let mut trackers: Vec<&str> = Vec::new();
    for c in &cells {
        if !trackers.contains(&c.tracker.as_str()) {
            trackers.push(&c.tracker);
        }
    }
    for tr in trackers {
        let row: Vec<&&Cell> = cells.iter().filter(|c| c.tracker == tr).collect();
        let Some(first) = row.first() else { continue };
        let mut out = vec![
            tr.to_owned(),
            f(first.preserve_ns_per_block, 0),
            f(first.preserve_ns_per_block_2t, 0),
            f(first.prepare_ms, 3),
            first.metadata_bytes.to_string(),
            f(first.metadata_bits_per_page, 3),
        ];
        for s in &strategies {
            out.push(
                row.iter()
                    .find(|c| c.strategy == *s)
                    .map_or("-".to_owned(), |c| f(value.of(c), 2)),
            );
        }
        t.add_row(out);
    }
    t
}

/// Ours / peers: one row per (workload, peer tracker, peer strategy); the
/// restore of ours (best, bulk, skip) over the peer's, and metadata.
pub fn ratios_table(r: &BenchReport) -> Table {
    let mut t = Table::new();
    t.load_preset(ASCII_MARKDOWN);
    t.set_header(vec![
        "workload",
        "peer tracker",
        "peer strategy",
        "best of ours",
        "restore best/peer",
        "restore bulk/peer",
        "restore skip/peer",
        "init best/peer",
        "md ours/peer",
    ]);
    let mut keys: Vec<(String, String, String)> = Vec::new();
    for x in &r.ratios {
        let k = (x.workload.clone(), x.peer.clone(), x.peer_strategy.clone());
        if !keys.contains(&k) {
            keys.push(k);
        }
    }
    for (w, p, ps) in keys {
        let find = |ours: &str| {
            r.ratios
                .iter()
                .find(|x| x.workload == w && x.peer == p && x.peer_strategy == ps && x.ours == ours)
        };
        let best = find("best");
        t.add_row(vec![
            w.clone(),
            p.clone(),
            ps.clone(),
            best.map_or("-".into(), |x| x.ours_strategy.clone()),
            best.map_or("-".into(), |x| f(x.restore_ratio, 4)),
            find("bulk").map_or("-".into(), |x| f(x.restore_ratio, 4)),
            find("skip").map_or("-".into(), |x| f(x.restore_ratio, 4)),
            best.map_or("-".into(), |x| f(x.init_ratio, 3)),
            best.map_or("-".into(), |x| f(x.metadata_ratio, 2)),
        ]);
    }
    t
}

fn mark(extrapolated: bool) -> &'static str {
    if extrapolated {
        " (extrapolated)"
    } else {
        " (measured)"
    }
}

/// One target the bench checks against its own run (or a figure it lists
/// beside them): `targets` in the JSON, one line of the table.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Target {
    /// What is measured.
    pub name: String,
    /// The measured value (`None`: the line lists several).
    pub value: Option<f64>,
    /// The target, e.g. `>= 10x` (`None`: informational).
    pub target: Option<String>,
    /// Whether this run meets it (`None`: informational).
    pub met: Option<bool>,
    /// The line the table prints.
    pub text: String,
}

impl Target {
    fn check(name: String, value: f64, target: &str, met: bool, text: String) -> Self {
        Self {
            name,
            value: Some(value),
            target: Some(target.to_owned()),
            met: Some(met),
            text,
        }
    }

    fn info(name: String, value: Option<f64>, text: String) -> Self {
        Self {
            name,
            value,
            target: None,
            met: None,
            text,
        }
    }
}

/// The issues' targets (6, 12 and 15), checked against this run's figures: one
/// line each, `met`, `NOT met` or `informational`; every figure says
/// whether it was measured or extrapolated.
pub fn targets(r: &BenchReport) -> Vec<Target> {
    let mut out: Vec<Target> = Vec::new();
    let find = |tracker: &str, strategy: &str| {
        r.scaling
            .iter()
            .find(|s| s.tracker == tracker && s.strategy == strategy)
    };
    let verdict = |ok: bool| if ok { "met" } else { "NOT met" };
    let mainline = find("radix-mainline", "per-block");
    let fix = find("radix-mainline", Strategy::MainlineFix.as_str());
    // 1. 100x at 2^20 against mainline per-block.
    if let Some(pb) = mainline.and_then(|s| s.ms_at_2_20.map(|m| (m, s.extrapolated))) {
        for ours in ["bulk", "skip"] {
            if let Some(o) =
                find("kho", ours).and_then(|s| s.ms_at_2_20.map(|m| (m, s.extrapolated)))
            {
                let x = pb.0 / o.0;
                out.push(Target::check(
                    format!("restore 2^20 scattered: per-block / {ours}"),
                    x,
                    ">= 100x",
                    x >= 100.0,
                    format!(
                    "restore of 2^20 scattered order-0 blocks: mainline per-block {:.0} ms{} / {ours} {:.1} ms{} = {x:.0}x{} (target >= 100x): {}",
                    pb.0,
                    mark(pb.1),
                    o.0,
                    mark(o.1),
                    if pb.1 || o.1 { ", from extrapolated figures" } else { "" },
                    verdict(x >= 100.0)
                ),
                ));
            }
        }
    }
    // Issue 12: bulk at 2^20 measured.
    if let Some(b) = find("kho", "bulk").filter(|s| !s.points.is_empty()) {
        out.push(match b.at(1 << 20) {
            Some(p) => Target::check(
                "bulk at 2^20 scattered, measured (ms)".to_owned(),
                p.ms,
                "<= 10 ms",
                p.ms <= 10.0,
                format!(
                    "bulk at 2^20 scattered order-0 blocks: {:.2} ms (measured; target <= 10 ms): {}",
                    p.ms,
                    verdict(p.ms <= 10.0)
                ),
            ),
            None => Target::info(
                "bulk at 2^20 scattered, measured (ms)".to_owned(),
                b.ms_at_2_20,
                format!(
                    "bulk at 2^20 scattered order-0 blocks: not measured in this run{}",
                    b.ms_at_2_20
                        .map(|m| format!(" (~{m:.1} ms extrapolated)"))
                        .unwrap_or_default()
                ),
            ),
        });
    }
    // Issue 15: the walk against the physical limit, preserve across threads.
    if let Some(l) = &r.limits {
        for (w, goal) in l.walks.iter().zip([2.0, 0.1]) {
            let met = w.ms <= goal;
            out.push(Target::check(
                format!("walk + coalesce, {} (ms)", w.case),
                w.ms,
                &format!("<= {goal} ms"),
                met,
                format!(
                    "walk + coalesce, {}: {:.3} ms (target <= {goal} ms); physical limit {:.3} ms ({} KiB of nodes read at {:.1} GB/s, measured over a buffer of that size; DRAM {:.1} GB/s), {:.1}x the limit: {}",
                    w.case,
                    w.ms,
                    w.limit_ms,
                    w.metadata_bytes >> 10,
                    w.bandwidth_gbs,
                    l.bandwidth_gbs,
                    w.ratio,
                    verdict(met)
                ),
            ));
        }
        for p in &l.preserve {
            let met = p.speedup >= 1.7;
            out.push(Target::check(
                format!("preserve 2 threads / 1 thread, {} order-0", p.case),
                p.speedup,
                ">= 1.7x",
                met,
                format!(
                    "preserve of 2^{} {} order-0 blocks: 1 thread {:.2} ms, 2 threads {:.2} ms = {:.2}x (target >= 1.7x; medians of interleaved runs): {}",
                    p.blocks.trailing_zeros(),
                    p.case,
                    p.one_thread_ms,
                    p.two_threads_ms,
                    p.speedup,
                    verdict(met)
                ),
            ));
        }
    }
    // Issue 15: the parallel next boot.
    if let Some(b) = r.limits.as_ref().and_then(|l| l.boot.as_ref()) {
        let m = super::harness::human(b.machine_bytes);
        let met = b.vs_single_baseline <= 0.6;
        out.push(Target::check(
            format!("{m} default, eager, 2 CPUs: next-boot init (bulk) / 1-CPU baseline"),
            b.vs_single_baseline,
            "<= 0.6x",
            met,
            format!(
                "{m} default scenario, eager memmap: next-boot init under bulk with 2 CPUs {:.1} ms / baseline with 1 CPU {:.1} ms = {:.2}x (target <= 0.6x): {}",
                b.init_2t_ms,
                b.baseline_1t_ms,
                b.vs_single_baseline,
                verdict(met)
            ),
        ));
        let met = b.kho_share <= 0.05;
        out.push(Target::check(
            format!("{m} default, eager, 2 CPUs: KHO share of next-boot init"),
            b.kho_share,
            "<= 5 %",
            met,
            format!(
                "{m} default scenario, 2 CPUs: KHO share = (next-boot init {:.1} ms - baseline {:.1} ms, same CPUs) / baseline = {:+.1} % (target <= 5 %; negative: the preserved memory is not freed to the buddy, which the baseline pays): {}",
                b.init_2t_ms,
                b.baseline_2t_ms,
                b.kho_share * 100.0,
                verdict(met)
            ),
        ));
    }
    // Issue 12: mainline-fix over the best of ours, at each measured power
    // of two from 2^16 (measured points only).
    if let Some(fix) = fix {
        for p in fix.points.iter().filter(|p| p.blocks >= 1 << 16) {
            let best = ["coalesced", "bulk", "skip"]
                .into_iter()
                .filter_map(|o| Some((o, find("kho", o)?.at(p.blocks)?.ms)))
                .min_by(|a, b| a.1.total_cmp(&b.1));
            if let Some((o, ms)) = best {
                let x = p.ms / ms;
                let text = format!(
                    "restore of 2^{} scattered order-0 blocks (measured): mainline-fix {:.2} ms / {o} {:.2} ms = {x:.1}x (goal >= 10x at 2^18): {}",
                    p.blocks.trailing_zeros(),
                    p.ms,
                    ms,
                    if p.blocks == 1 << 18 {
                        verdict(x >= 10.0)
                    } else {
                        "informational"
                    }
                );
                let name = format!(
                    "restore 2^{} scattered: mainline-fix / best of ours",
                    p.blocks.trailing_zeros()
                );
                out.push(if p.blocks == 1 << 18 {
                    Target::check(name, x, ">= 10x", x >= 10.0, text)
                } else {
                    Target::info(name, Some(x), text)
                });
            }
        }
    }
    // Issue 12: the same on every shipped real trace (matrix cells).
    for w in workloads(&r.cells)
        .iter()
        .filter(|w| w.starts_with("trace:"))
    {
        let cell = |tracker: &str, strategy: &str| {
            r.cells
                .iter()
                .find(|c| c.workload == *w && c.tracker == tracker && c.strategy == strategy)
        };
        let best = ["coalesced", "bulk", "skip"]
            .into_iter()
            .filter_map(|s| cell("kho", s))
            .min_by(|a, b| restore_ms(a).total_cmp(&restore_ms(b)));
        if let (Some(fx), Some(b)) = (cell("radix-mainline", Strategy::MainlineFix.as_str()), best)
        {
            let x = restore_ms(fx) / restore_ms(b);
            out.push(Target::check(
                format!("{w}: restore mainline-fix / best of ours"),
                x,
                ">= 10x",
                x >= 10.0,
                format!(
                    "{w}: restore mainline-fix {:.2} ms / best of ours ({}) {:.2} ms = {x:.1}x (goal >= 10x): {}",
                    restore_ms(fx),
                    b.strategy,
                    restore_ms(b),
                    verdict(x >= 10.0)
                ),
            ));
        }
    }
    for ours in ["bulk", "skip"] {
        if let Some(s) = find("kho", ours).filter(|s| s.points.len() >= 2) {
            out.push(Target::check(
                format!("growth exponent of {ours}"),
                s.exponent,
                "<= 1.1",
                s.exponent <= 1.1,
                format!(
                    "growth exponent of {ours}: {:.2} (target <= 1.1): {}",
                    s.exponent,
                    verdict(s.exponent <= 1.1)
                ),
            ));
        }
    }
    for (name, c) in [("per-block (mainline)", mainline), ("mainline-fix", fix)] {
        if let Some(s) = c.filter(|s| s.points.len() >= 2) {
            out.push(Target::info(
                format!("growth exponent of {name}"),
                Some(s.exponent),
                format!("growth exponent of {name}: {:.2}", s.exponent),
            ));
        }
    }
    // Metadata at the largest sweep point every tracker reached (under any
    // of its strategies: metadata is the tracker's).
    let reach = |tracker: &str| {
        r.scaling
            .iter()
            .filter(|s| s.tracker == tracker)
            .filter_map(|s| s.points.last().map(|p| p.blocks))
            .max()
    };
    if let Some(n) = r.scaling.iter().filter_map(|s| reach(&s.tracker)).min() {
        let mut seen: Vec<String> = Vec::new();
        let mut parts = Vec::new();
        for s in &r.scaling {
            if seen.contains(&s.tracker) {
                continue;
            }
            if let Some(p) = r
                .scaling
                .iter()
                .filter(|c| c.tracker == s.tracker)
                .find_map(|c| c.at(n))
            {
                seen.push(s.tracker.clone());
                parts.push(format!(
                    "{} {:.3}",
                    s.tracker,
                    p.metadata_bytes as f64 * 8.0 / n as f64
                ));
            }
        }
        out.push(Target::info(
            format!(
                "metadata bits per preserved page at 2^{}",
                n.trailing_zeros()
            ),
            None,
            format!(
                "metadata bits per preserved page, 2^{} scattered order-0 blocks (every other page): {}",
                n.trailing_zeros(),
                parts.join(", ")
            ),
        ));
    }
    // 2. Dense and VM: within 1.2x of maple restoring as its authors did
    // (one reservation per range: coalesced).
    for x in r.ratios.iter().filter(|x| {
        x.ours == "best"
            && x.peer == "maple"
            && x.peer_strategy == "coalesced"
            && (x.workload.starts_with("dense") || x.workload.starts_with("vm"))
    }) {
        out.push(Target::check(
            format!("{}: restore best of ours / maple coalesced", x.workload),
            x.restore_ratio,
            "<= 1.2x",
            x.restore_ratio <= 1.2,
            format!(
                "{}: restore best of ours ({}) / maple coalesced = {:.2}x (target <= 1.2x): {}",
                x.workload,
                x.ours_strategy,
                x.restore_ratio,
                verdict(x.restore_ratio <= 1.2)
            ),
        ));
    }
    // 3. Next-boot init within 1.1x of a boot with nothing preserved.
    let workloads = workloads(&r.cells);
    for w in &workloads {
        for ours in ["bulk", "skip"] {
            if let Some(c) = r
                .cells
                .iter()
                .find(|c| c.workload == *w && c.tracker == "kho" && c.strategy == ours)
            {
                out.push(Target::check(
                    format!("{w}: next-boot init with {ours} / baseline"),
                    c.init_vs_baseline,
                    "<= 1.1x",
                    c.init_vs_baseline <= 1.1,
                    format!(
                        "{w}: next-boot init with {ours} {:.2} ms / baseline {:.2} ms = {:.2}x (target <= 1.1x): {}",
                        c.next_boot_init_ms,
                        c.baseline_mm_init_ms,
                        c.init_vs_baseline,
                        verdict(c.init_vs_baseline <= 1.1)
                    ),
                ));
            }
        }
    }
    // 4. Metadata bits per page: ours = radix-mainline < xarray chunks.
    for w in &workloads {
        let bits = |tracker: &str| {
            r.cells
                .iter()
                .find(|c| c.workload == *w && c.tracker == tracker)
                .map(|c| c.metadata_bits_per_page)
        };
        if let (Some(k), Some(m), Some(x), Some(x5)) = (
            bits("kho"),
            bits("radix-mainline"),
            bits("xarray"),
            bits("xarray-512"),
        ) {
            let met = (k - m).abs() < 1e-9 && k < x.min(x5);
            out.push(Target::check(
                format!("{w}: metadata bits/page ours"),
                k,
                "= radix-mainline, < xarray",
                met,
                format!(
                    "{w}: metadata bits/page ours {k:.2}, radix-mainline {m:.2}, xarray {x:.2}, xarray-512 {x5:.2} (target: = mainline, < xarray): {}",
                    verdict(met)
                ),
            ));
        }
    }
    out
}

/// Why a curve stopped, or nothing.
fn stop_note(r: &BenchReport, s: &super::Scaling) -> String {
    let mut notes = Vec::new();
    if s.reference {
        notes.push(match r.reference_max_blocks {
            Some(n) => format!(
                "reference: measured to 2^{} whatever the cap",
                n.trailing_zeros()
            ),
            None => "reference".to_owned(),
        });
    }
    if let Some(st) = s.stop {
        notes.push(match st.predicted_ms {
            Some(ms) => format!(
                "cap hit: stopped after 2^{} (2^{} predicted {:.1} s > cap {} s)",
                st.after.trailing_zeros(),
                st.after.trailing_zeros() + 1,
                ms / 1e3,
                r.cap_seconds
            ),
            None => format!(
                "cap hit: stopped after 2^{} (over cap {} s)",
                st.after.trailing_zeros(),
                r.cap_seconds
            ),
        });
    }
    notes.join("; ")
}

/// The sweep: one row per (tracker, strategy), ms per size; the 2^20
/// column says whether it is measured or extrapolated.
pub fn scaling_table(r: &BenchReport) -> Table {
    let mut t = Table::new();
    t.load_preset(ASCII_MARKDOWN);
    let mut sizes: Vec<u64> = r
        .scaling
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.blocks))
        .collect();
    sizes.sort_unstable();
    sizes.dedup();
    let mut header = vec!["tracker".to_owned(), "strategy".to_owned()];
    header.extend(sizes.iter().map(|n| format!("2^{} ms", n.trailing_zeros())));
    header.extend(["exponent".into(), "2^20 ms".into(), "note".into()]);
    t.set_header(header);
    for s in &r.scaling {
        let mut row = vec![s.tracker.clone(), s.strategy.clone()];
        for n in &sizes {
            row.push(s.at(*n).map_or("-".into(), |p| f(p.ms, 2)));
        }
        row.push(f(s.exponent, 2));
        row.push(s.ms_at_2_20.map_or("-".into(), |x| {
            if s.extrapolated {
                format!("~{} (extrapolated)", f(x, 1))
            } else {
                format!("{} (measured)", f(x, 2))
            }
        }));
        row.push(stop_note(r, s));
        t.add_row(row);
    }
    t
}

/// The trackers' own costs in the sweep (the same for every strategy):
/// preserve and finalize ms and metadata, one row per (tracker, size) at
/// 2^16, 2^18, 2^20 and the largest size it reached.
pub fn tracker_scaling_table(r: &BenchReport) -> Table {
    let mut t = Table::new();
    t.load_preset(ASCII_MARKDOWN);
    t.set_header(vec![
        "tracker",
        "blocks",
        "preserve ms",
        "preserve ns/blk",
        "finalize ms",
        "md bytes",
        "bits/page",
    ]);
    let mut seen: Vec<&str> = Vec::new();
    for s in &r.scaling {
        if seen.contains(&s.tracker.as_str()) {
            continue;
        }
        seen.push(&s.tracker);
        // The tracker's longest curve carries every size it reached.
        let curve = r
            .scaling
            .iter()
            .filter(|c| c.tracker == s.tracker)
            .max_by_key(|c| c.points.len())
            .unwrap_or(s);
        let last = curve.points.last().map_or(0, |p| p.blocks);
        for p in curve
            .points
            .iter()
            .filter(|p| [1 << 16, 1 << 18, 1 << 20, last].contains(&p.blocks))
        {
            t.add_row(vec![
                s.tracker.clone(),
                format!("2^{}", p.blocks.trailing_zeros()),
                f(p.preserve_ms, 2),
                f(p.preserve_ms * 1e6 / p.blocks.max(1) as f64, 0),
                f(p.finalize_ms, 3),
                p.metadata_bytes.to_string(),
                f(p.metadata_bytes as f64 * 8.0 / p.blocks.max(1) as f64, 3),
            ]);
        }
    }
    t
}

/// The JSON document: `{"cells": [...], "ratios": [...], "scaling": [...],
/// "targets": [{name, value, target, met, text}]}`.
pub fn json(r: &BenchReport) -> Result<String, BenchError> {
    let mut v = serde_json::to_value(r)?;
    if let Some(o) = v.as_object_mut() {
        o.insert("targets".to_owned(), serde_json::to_value(targets(r))?);
    }
    Ok(serde_json::to_string_pretty(&v)?)
}

/// Distinct colours on white (matplotlib's tab20, dark shades first).
const PALETTE: [RGBColor; 20] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
    RGBColor(0, 0, 0),
    RGBColor(174, 199, 232),
    RGBColor(255, 187, 120),
    RGBColor(152, 223, 138),
    RGBColor(255, 152, 150),
    RGBColor(197, 176, 213),
    RGBColor(196, 156, 148),
    RGBColor(247, 182, 210),
    RGBColor(219, 219, 141),
    RGBColor(158, 218, 229),
];

/// The one colour of a series in every chart: a tracker (`xarray`) or a
/// tracker/strategy pair (`kho/bulk`), by its place in the canonical list
/// (every tracker, then every pair its handover feeds).
fn series_color(name: &str) -> RGBAColor {
    use crate::peers::SchemeKind;
    let mut names: Vec<String> = SchemeKind::ALL
        .iter()
        .map(|k| k.name().to_owned())
        .collect();
    let trackers = names.len();
    for k in SchemeKind::ALL {
        for s in k.strategies() {
            names.push(format!("{}/{}", k.name(), s));
        }
    }
    let i = match names.iter().position(|n| n == name) {
        // Pairs take the palette from its start, trackers alone from the
        // other end: a chart shows one kind or the other.
        Some(i) if i >= trackers => i - trackers,
        Some(i) => PALETTE.len() - 1 - i,
        None => name
            .bytes()
            .fold(0usize, |h, b| h.wrapping_mul(31).wrapping_add(b.into())),
    };
    PALETTE[i % PALETTE.len()].to_rgba()
}

/// Draws `entries` (label, colour, line or dot) as a legend in `area`,
/// beside the chart, never over its data.
fn draw_legend<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    entries: &[(String, RGBAColor, bool)],
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    let font = ("sans-serif", 13).into_font();
    for (i, (label, color, line)) in entries.iter().enumerate() {
        let y = 40 + 20 * i as i32;
        if *line {
            area.draw(&PathElement::new(
                vec![(4, y), (24, y)],
                color.stroke_width(2),
            ))?;
        } else {
            area.draw(&Circle::new((14, y), 4, color.filled()))?;
        }
        area.draw(&Text::new(label.clone(), (30, y - 7), font.clone()))?;
    }
    Ok(())
}

/// The curves the scaling plot draws: mainline and every step of its
/// smallest fix, our strategies on our tree, and the peers' trackers under
/// `bulk` (the table lists every curve).
pub fn plotted(s: &super::Scaling) -> bool {
    match s.tracker.as_str() {
        "radix-mainline" => true,
        "kho" => ["coalesced", "bulk", "skip"].contains(&s.strategy.as_str()),
        "maple" | "xarray" => s.strategy == "bulk",
        _ => false,
    }
}

fn svg_loglog(r: &BenchReport) -> Result<String, BenchError> {
    let curves: Vec<&super::Scaling> = r.scaling.iter().filter(|s| plotted(s)).collect();
    let mut buf = String::new();
    {
        let root = SVGBackend::with_string(&mut buf, (1300, 620)).into_drawing_area();
        root.fill(&WHITE)?;
        let (root, legend) = root.split_horizontally(900);
        let mut entries = Vec::new();
        // x: log2 of the blocks on a linear axis (ticks at powers of two);
        // y: ms on a log axis.
        let xy = |p: &super::Point| ((p.blocks.max(1) as f64).log2(), p.ms.max(1e-4));
        let pts: Vec<(f64, f64)> = curves
            .iter()
            .flat_map(|s| s.points.iter().map(xy))
            .collect();
        let (x0, x1) = pts
            .iter()
            .fold((f64::MAX, 1.0f64), |a, p| (a.0.min(p.0), a.1.max(p.0)));
        let (y0, y1) = pts
            .iter()
            .fold((f64::MAX, 1e-3f64), |a, p| (a.0.min(p.1), a.1.max(p.1)));
        let x0 = x0.min(x1 - 1.0);
        let y0 = y0.min(y1 / 10.0);
        let mut chart = ChartBuilder::on(&root)
            .caption(
                "restore (walk + memblock) vs scattered order-0 blocks, measured points",
                ("sans-serif", 18),
            )
            .margin(10)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(x0 - 0.3..x1 + 0.3, (y0 / 1.5..y1 * 2.0).log_scale())?;
        chart
            .configure_mesh()
            .x_desc("scattered order-0 blocks")
            .y_desc("ms")
            .x_labels(((x1 - x0).round() as usize + 1).max(2))
            .x_label_formatter(&|x| {
                if (x - x.round()).abs() < 1e-6 {
                    format!("2^{}", x.round())
                } else {
                    String::new()
                }
            })
            .y_label_formatter(&|y| {
                if *y >= 1.0 {
                    format!("{y:.0}")
                } else {
                    format!("{y}")
                }
            })
            .draw()?;
        for s in &curves {
            let color = series_color(&format!("{}/{}", s.tracker, s.strategy));
            let data: Vec<(f64, f64)> = s.points.iter().map(xy).collect();
            chart.draw_series(LineSeries::new(data.clone(), color.stroke_width(2)))?;
            entries.push((
                format!(
                    "{}/{} (exp {:.2}{})",
                    s.tracker,
                    s.strategy,
                    s.exponent,
                    if s.reference {
                        ", measured whatever the cap"
                    } else if s.stop.is_some() {
                        ", stopped at the cap"
                    } else {
                        ""
                    }
                ),
                color,
                true,
            ));
            chart.draw_series(data.into_iter().map(|p| Circle::new(p, 3, color.filled())))?;
        }
        draw_legend(&legend, &entries)?;
        root.present()?;
    }
    Ok(buf)
}

/// A points chart: one series per scheme (or scheme/strategy), x = the
/// workloads, y = `value` (log scale).
fn svg_by_workload(
    r: &BenchReport,
    title: &str,
    ylabel: &str,
    series_of: fn(&Cell) -> Option<String>,
    value: fn(&Cell) -> f64,
) -> Result<String, BenchError> {
    let mut workloads: Vec<String> = r.cells.iter().map(|c| c.workload.clone()).collect();
    workloads.dedup();
    let mut series: Vec<String> = r.cells.iter().filter_map(series_of).collect();
    series.sort();
    series.dedup();
    let vals: Vec<f64> = r.cells.iter().map(value).filter(|v| *v > 0.0).collect();
    let y1 = vals.iter().copied().fold(1e-3f64, f64::max) * 2.0;
    let y0 = vals.iter().copied().fold(f64::MAX, f64::min).min(y1 / 10.0) / 2.0;
    let mut buf = String::new();
    {
        let root = SVGBackend::with_string(&mut buf, (1150, 480)).into_drawing_area();
        root.fill(&WHITE)?;
        let (root, legend) = root.split_horizontally(880);
        let mut entries = Vec::new();
        let n = workloads.len().max(1) as f64;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 18))
            .margin(10)
            .x_label_area_size(70)
            .y_label_area_size(70)
            .build_cartesian_2d(-0.5f64..n - 0.5, (y0..y1).log_scale())?;
        let wl = workloads.clone();
        chart
            .configure_mesh()
            .x_labels(workloads.len().max(1))
            .x_label_formatter(&move |x| {
                let i = x.round();
                if (x - i).abs() < 1e-6 && i >= 0.0 {
                    wl.get(i as usize).cloned().unwrap_or_default()
                } else {
                    String::new()
                }
            })
            .y_desc(ylabel)
            .draw()?;
        let k = series.len().max(1) as f64;
        for (si, s) in series.iter().enumerate() {
            let color = series_color(s);
            let off = (si as f64 - (k - 1.0) / 2.0) * 0.6 / k;
            let pts: Vec<(f64, f64)> = r
                .cells
                .iter()
                .filter(|c| series_of(c).as_deref() == Some(s.as_str()))
                .filter_map(|c| {
                    let i = workloads.iter().position(|w| *w == c.workload)?;
                    let v = value(c);
                    (v > 0.0).then_some((i as f64 + off, v))
                })
                .collect();
            chart.draw_series(pts.into_iter().map(|p| Circle::new(p, 4, color.filled())))?;
            entries.push((s.clone(), color, false));
        }
        draw_legend(&legend, &entries)?;
        root.present()?;
    }
    Ok(buf)
}

/// A terminal table as an HTML table (header row, then one row per line;
/// text columns left, figures right).
fn html_table(t: &Table) -> String {
    let mut h = String::from("<table><tr>");
    if let Some(head) = t.header() {
        for c in head.cell_iter() {
            let _ = write!(h, "<th class=\"s\">{}</th>", esc(&c.content()));
        }
    }
    h.push_str("</tr>\n");
    for row in t.row_iter() {
        h.push_str("<tr>");
        for c in row.cell_iter() {
            let v = c.content();
            let numeric = v
                .chars()
                .next()
                .is_some_and(|ch| ch.is_ascii_digit() || ch == '-' || ch == '~');
            let style = if numeric {
                ""
            } else {
                " style=\"text-align:left\""
            };
            let _ = write!(h, "<td{style}>{}</td>", esc(&v));
        }
        h.push_str("</tr>\n");
    }
    h.push_str("</table>");
    h
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// [`pivot_table`] as an HTML table: each strategy cell holds the memblock
/// ms and, below it, the restore (walk + memblock) ms; the fastest restore
/// of the workload is bold.
fn pivot_html(r: &BenchReport, w: &str) -> String {
    let cells: Vec<&Cell> = r.cells.iter().filter(|c| c.workload == w).collect();
    let strategies = strategies_of(&cells);
    let best = cells
        .iter()
        .map(|c| restore_ms(c))
        .fold(f64::INFINITY, f64::min);
    let mut h = String::from(
        "<table><tr><th>tracker</th><th>preserve ns/blk</th><th>2 threads</th><th>prep ms</th><th>metadata bytes</th><th>bits/page</th>",
    );
    for s in &strategies {
        let _ = write!(h, "<th class=\"s\">{s}</th>");
    }
    h.push_str("</tr>\n");
    let mut trackers: Vec<&str> = Vec::new();
    for c in &cells {
        if !trackers.contains(&c.tracker.as_str()) {
            trackers.push(&c.tracker);
        }
    }
    for tr in trackers {
        let row: Vec<&&Cell> = cells.iter().filter(|c| c.tracker == tr).collect();
        let Some(first) = row.first() else { continue };
        let _ = write!(
            h,
            "<tr><th>{tr}</th><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>",
            f(first.preserve_ns_per_block, 0),
            f(first.preserve_ns_per_block_2t, 0),
            f(first.prepare_ms, 3),
            first.metadata_bytes,
            f(first.metadata_bits_per_page, 2)
        );
        for s in &strategies {
            match row.iter().find(|c| c.strategy == *s) {
                Some(c) => {
                    let b = if restore_ms(c) <= best {
                        " class=\"best\""
                    } else {
                        ""
                    };
                    let _ = write!(
                        h,
                        "<td{b}>{}<br><small>{}</small></td>",
                        f(c.memblock_ms, 2),
                        f(restore_ms(c), 2)
                    );
                }
                None => h.push_str("<td class=\"na\">-</td>"),
            }
        }
        h.push_str("</tr>\n");
    }
    h.push_str("</table>\n");
    h
}

/// The workloads in the report's order: memfd, fragmented and the real
/// traces first (the debate's cases), then the rest.
fn report_order(r: &BenchReport) -> Vec<String> {
    let all = workloads(&r.cells);
    let rank = |w: &str| {
        if w.starts_with("memfd") {
            0
        } else if w.starts_with("fragmented") {
            1
        } else if w.starts_with("trace:") {
            2
        } else {
            3
        }
    };
    let mut v = all.clone();
    v.sort_by_key(|w| rank(w));
    v
}

/// Writes `dir/index.html`: self-contained, inline SVG, no external
/// reference.
pub fn write_html(r: &BenchReport, dir: &Path) -> Result<(), BenchError> {
    let write_err = |source| BenchError::Write {
        path: dir.to_owned(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(write_err)?;
    let mut h = String::new();
    h.push_str("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>kho bench</title>\n<style>body{font-family:sans-serif;margin:2em;max-width:1300px}pre{font-size:11px;overflow-x:auto}table{border-collapse:collapse;font-size:13px;margin:0.3em 0 1em}td,th{border:1px solid #ccc;padding:2px 7px;text-align:right}th.s{background:#eef}td.best{font-weight:bold;background:#efe}td.na{color:#aaa;text-align:center}td small{color:#666}h3{margin:1em 0 0.2em}</style></head><body>\n<h1>kho bench</h1>\n");
    let _ = writeln!(
        h,
        "<p>{} cells (tracker x strategy x workload), median of {} repetitions after a warm-up; sweep cap {} s{}. Rows are trackers, with what the tracker decides (preserve, handover preparation, metadata); columns are restore strategies, with what the strategy decides: the next boot's memblock ms, and below it restore (walk + memblock) ms; bold: the fastest restore of the workload; -: the tracker's handover cannot feed the strategy. Every figure is measured except those marked <b>extrapolated</b>.</p>",
        r.cells.len(),
        r.reps,
        r.cap_seconds,
        r.reference_max_blocks
            .map(|n| format!(
                "; mainline per-block measured to 2^{} whatever the cap",
                n.trailing_zeros()
            ))
            .unwrap_or_default()
    );
    let targets = targets(r);
    // The headline: issue 12's question (how much of ours does the small
    // mainline patch get), then the rest folded.
    let headline: Vec<&Target> = targets
        .iter()
        .filter(|t| t.text.contains("mainline-fix") || t.name.starts_with("bulk at 2^20"))
        .collect();
    let checked: Vec<&Target> = targets.iter().filter(|t| t.met.is_some()).collect();
    let met = checked.iter().filter(|t| t.met == Some(true)).count();
    if !headline.is_empty() {
        let _ = writeln!(
            h,
            "<div style=\"border:2px solid #446;padding:0.5em 1em;background:#f6f6ff\"><h2>Mainline's smallest fix against ours</h2>\n<p><b>{met} of {} targets met</b> in this run (every target: below).</p>\n<ul>",
            checked.len()
        );
        for t in &headline {
            let _ = writeln!(h, "<li>{}</li>", esc(&t.text));
        }
        h.push_str("</ul></div>\n");
    }
    if !r.cells.is_empty() {
        h.push_str("<h2>Tracker x strategy, per workload</h2>\n");
        for w in report_order(r) {
            let _ = writeln!(h, "<h3>{}</h3>", esc(&w));
            h.push_str(&pivot_html(r, &w));
        }
    }
    if !r.scaling.is_empty() {
        h.push_str("<h2>Restore time vs scattered blocks (log-log)</h2>\n");
        h.push_str(&svg_loglog(r)?);
        let _ = writeln!(
            h,
            "<p>Every tracker x strategy pair; the plot draws mainline and the steps of its fix, ours, and the peers under bulk, measured points only. A curve stops where the cap says (note column); a 2^20 figure not measured is marked extrapolated.</p>\n{}",
            html_table(&scaling_table(r))
        );
        let _ = writeln!(
            h,
            "<h3>The trackers' own costs in the sweep</h3>\n{}",
            html_table(&tracker_scaling_table(r))
        );
    }
    if !targets.is_empty() {
        let _ = writeln!(
            h,
            "<h2>Every target, checked against this run</h2>\n<details><summary>{} lines</summary><ul>",
            targets.len()
        );
        for t in &targets {
            let color = match t.met {
                Some(true) => "#060",
                Some(false) => "#a00",
                None => "#444",
            };
            let _ = writeln!(h, "<li style=\"color:{color}\">{}</li>", esc(&t.text));
        }
        h.push_str("</ul></details>\n");
    }
    if !r.cells.is_empty() {
        h.push_str("<h2>Metadata bytes per tracker per workload</h2>\n");
        h.push_str(&svg_by_workload(
            r,
            "metadata bytes",
            "bytes",
            // One point per tracker: its first strategy's cell.
            |c| {
                crate::peers::SchemeKind::from_name(&c.tracker)
                    .filter(|k| k.strategies().first().map(|s| s.as_str()) == Some(&c.strategy))
                    .map(|_| c.tracker.clone())
            },
            |c| c.metadata_bytes as f64,
        )?);
        let _ = writeln!(
            h,
            "<h2>Ours / peers</h2>\n<details><summary>{} rows</summary>{}</details>",
            r.ratios.len() / 3,
            html_table(&ratios_table(r))
        );
        let _ = writeln!(
            h,
            "<h2>Every cell</h2>\n<details><summary>{} cells</summary>{}</details>",
            r.cells.len(),
            html_table(&cells_table(r))
        );
    }
    h.push_str("</body></html>\n");
    // The SVG backend writes its namespace as an attribute value; that is
    // an identifier, not a fetched asset, but keep the file free of any
    // URL so that "opens offline" is checkable.
    let h = h.replace(" xmlns=\"http://www.w3.org/2000/svg\"", "");
    std::fs::write(dir.join("index.html"), h).map_err(write_err)
}
