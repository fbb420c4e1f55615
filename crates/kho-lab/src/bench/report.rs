//! Ratios, the terminal table, JSON and the offline HTML report.

use std::fmt::Write as _;
use std::path::Path;

use comfy_table::{Cell as TCell, Table, presets::ASCII_MARKDOWN};
use plotters::prelude::*;
use serde::Serialize;

use kho_machine::Strategy;

use super::{BenchError, BenchReport, Cell};

/// Ours against one peer on one workload (ours / peer: below 1 is ours
/// better).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Ratio {
    /// Workload.
    pub workload: String,
    /// Our strategy (`best` = the fastest of ours on this workload, named
    /// in `ours_strategy`).
    pub ours: String,
    /// The strategy behind `ours`.
    pub ours_strategy: String,
    /// The peer scheme.
    pub peer: String,
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

/// Fills every one of our cells' `restore_vs_peer` and `metadata_vs_peer`
/// from the peers' cells of the same workload.
pub fn fill_cell_ratios(cells: &mut [Cell]) {
    let peers: Vec<(String, String, f64, u64)> = cells
        .iter()
        .filter(|c| c.scheme != "kho")
        .map(|c| {
            (
                c.workload.clone(),
                c.scheme.clone(),
                restore_ms(c),
                c.metadata_bytes,
            )
        })
        .collect();
    for c in cells.iter_mut().filter(|c| c.scheme == "kho") {
        let ours = restore_ms(c);
        for (w, p, ms, md) in &peers {
            if *w == c.workload {
                c.restore_vs_peer.insert(p.clone(), ours / ms);
                c.metadata_vs_peer
                    .insert(p.clone(), c.metadata_bytes as f64 / (*md).max(1) as f64);
            }
        }
    }
}

/// For each workload: ours (best, bulk, skip) / each peer.
pub fn ratios(cells: &[Cell]) -> Vec<Ratio> {
    let mut out = Vec::new();
    let mut workloads: Vec<&str> = cells.iter().map(|c| c.workload.as_str()).collect();
    workloads.dedup();
    for w in workloads {
        // Ours are our tree under our strategies; mainline's strategies
        // (per-block and the mainline-fix steps) on our tree are Linux's,
        // so mainline-fix counts as a peer (named by its strategy).
        let linux = |c: &Cell| {
            c.strategy
                .parse::<Strategy>()
                .is_ok_and(Strategy::is_mainline)
        };
        let ours: Vec<&Cell> = cells
            .iter()
            .filter(|c| c.workload == w && c.scheme == "kho" && !linux(c))
            .collect();
        let peers: Vec<&Cell> = cells
            .iter()
            .filter(|c| {
                c.workload == w
                    && (c.scheme != "kho" || c.strategy == Strategy::MainlineFix.as_str())
            })
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
                    workload: w.to_owned(),
                    ours: label.to_owned(),
                    ours_strategy: o.strategy.clone(),
                    peer: if p.scheme == "kho" {
                        p.strategy.clone()
                    } else {
                        p.scheme.clone()
                    },
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
        "scheme",
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
            TCell::new(&c.scheme),
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

/// Ours / peers, per workload: one row per (workload, ours), two columns
/// per peer (restore and metadata, ours / peer).
pub fn ratios_table(r: &BenchReport) -> Table {
    let mut t = Table::new();
    t.load_preset(ASCII_MARKDOWN);
    let mut peers: Vec<String> = r.ratios.iter().map(|x| x.peer.clone()).collect();
    peers.sort();
    peers.dedup();
    let mut header = vec!["workload".to_owned(), "ours".to_owned()];
    for p in &peers {
        header.push(format!("restore vs {p}"));
        header.push(format!("md vs {p}"));
    }
    t.set_header(header);
    let mut keys: Vec<(String, String)> = r
        .ratios
        .iter()
        .map(|x| (x.workload.clone(), x.ours.clone()))
        .collect();
    keys.dedup();
    for (w, o) in keys {
        let rows: Vec<&Ratio> = r
            .ratios
            .iter()
            .filter(|x| x.workload == w && x.ours == o)
            .collect();
        let label = match rows.first() {
            Some(x) if o == "best" => format!("best ({})", x.ours_strategy),
            _ => o.clone(),
        };
        let mut row = vec![w.clone(), label];
        for p in &peers {
            match rows.iter().find(|x| &x.peer == p) {
                Some(x) => {
                    row.push(f(x.restore_ratio, 4));
                    row.push(f(x.metadata_ratio, 2));
                }
                None => row.extend(["-".to_owned(), "-".to_owned()]),
            }
        }
        t.add_row(row);
    }
    t
}

/// The targets, checked against this run's figures: one line each,
/// `met`, `NOT met` or `n/a` (not measured in this run).
pub fn targets(r: &BenchReport) -> Vec<String> {
    let mut out = Vec::new();
    let find = |scheme: &str, strategy: &str| {
        r.scaling
            .iter()
            .find(|s| s.scheme == scheme && s.strategy == strategy)
    };
    let verdict = |ok: bool| if ok { "met" } else { "NOT met" };
    // 1. 100x at 2^20 against mainline per-block.
    if let Some(pb) =
        find("kho", "per-block").and_then(|s| s.ms_at_2_20.map(|m| (m, s.extrapolated)))
    {
        for ours in ["bulk", "skip"] {
            if let Some(o) =
                find("kho", ours).and_then(|s| s.ms_at_2_20.map(|m| (m, s.extrapolated)))
            {
                let x = pb.0 / o.0;
                out.push(format!(
                    "restore of 2^20 scattered order-0 blocks: per-block {:.0} ms{} / {ours} {:.1} ms{} = {x:.0}x (target >= 100x): {}",
                    pb.0,
                    if pb.1 { " (extrapolated)" } else { "" },
                    o.0,
                    if o.1 { " (extrapolated)" } else { "" },
                    verdict(x >= 100.0)
                ));
            }
        }
    }
    // Issue 12: ours (best of bulk and skip) over the smallest mainline fix,
    // at each measured power of two from 2^16 (measured points only).
    if let Some(fix) = find("kho", Strategy::MainlineFix.as_str()) {
        for p in fix.points.iter().filter(|p| p.blocks >= 1 << 16) {
            let best = ["bulk", "skip"]
                .into_iter()
                .filter_map(|o| {
                    find("kho", o)?
                        .points
                        .iter()
                        .find(|q| q.blocks == p.blocks)
                        .map(|q| (o, q.ms))
                })
                .min_by(|a, b| a.1.total_cmp(&b.1));
            if let Some((o, ms)) = best {
                let x = p.ms / ms;
                out.push(format!(
                    "restore of 2^{} scattered order-0 blocks (measured): mainline-fix {:.2} ms / {o} {:.2} ms = {x:.1}x (goal >= 10x at 2^18): {}",
                    p.blocks.trailing_zeros(),
                    p.ms,
                    ms,
                    if p.blocks == 1 << 18 {
                        verdict(x >= 10.0)
                    } else {
                        "informational"
                    }
                ));
            }
        }
    }
    for ours in ["bulk", "skip"] {
        if let Some(s) = find("kho", ours).filter(|s| s.points.len() >= 2) {
            out.push(format!(
                "growth exponent of {ours}: {:.2} (target <= 1.1): {}",
                s.exponent,
                verdict(s.exponent <= 1.1)
            ));
        }
    }
    if let Some(s) = find("kho", "per-block").filter(|s| s.points.len() >= 2) {
        out.push(format!(
            "growth exponent of per-block (mainline): {:.2}",
            s.exponent
        ));
    }
    // Metadata at the largest sweep point every scheme reached.
    if let Some(n) = r
        .scaling
        .iter()
        .filter_map(|s| s.points.last().map(|p| p.blocks))
        .min()
    {
        let mut seen: Vec<String> = Vec::new();
        let mut parts = Vec::new();
        for s in &r.scaling {
            if seen.contains(&s.scheme) {
                continue;
            }
            if let Some(p) = s.points.iter().find(|p| p.blocks == n) {
                seen.push(s.scheme.clone());
                parts.push(format!(
                    "{} {:.3}",
                    s.scheme,
                    p.metadata_bytes as f64 * 8.0 / n as f64
                ));
            }
        }
        out.push(format!(
            "metadata bits per preserved page, 2^{} scattered order-0 blocks (every other page): {}",
            n.trailing_zeros(),
            parts.join(", ")
        ));
    }
    // 2. Dense and VM: within 1.2x of maple.
    for x in r.ratios.iter().filter(|x| {
        x.ours == "best"
            && x.peer == "maple"
            && (x.workload.starts_with("dense") || x.workload.starts_with("vm"))
    }) {
        out.push(format!(
            "{}: restore best of ours ({}) / maple = {:.2}x (target <= 1.2x): {}",
            x.workload,
            x.ours_strategy,
            x.restore_ratio,
            verdict(x.restore_ratio <= 1.2)
        ));
    }
    // 3. Next-boot init within 1.1x of a boot with nothing preserved.
    let mut workloads: Vec<&str> = r.cells.iter().map(|c| c.workload.as_str()).collect();
    workloads.dedup();
    for w in &workloads {
        for ours in ["bulk", "skip"] {
            if let Some(c) = r
                .cells
                .iter()
                .find(|c| c.workload == *w && c.scheme == "kho" && c.strategy == ours)
            {
                out.push(format!(
                    "{w}: next-boot init with {ours} {:.2} ms / baseline {:.2} ms = {:.2}x (target <= 1.1x): {}",
                    c.next_boot_init_ms,
                    c.baseline_mm_init_ms,
                    c.init_vs_baseline,
                    verdict(c.init_vs_baseline <= 1.1)
                ));
            }
        }
    }
    // 4. Metadata bits per page: ours = radix-mainline < xarray chunks.
    for w in &workloads {
        let bits = |scheme: &str| {
            r.cells
                .iter()
                .find(|c| c.workload == *w && c.scheme == scheme)
                .map(|c| c.metadata_bits_per_page)
        };
        if let (Some(k), Some(m), Some(x), Some(x5)) = (
            bits("kho"),
            bits("radix-mainline"),
            bits("xarray"),
            bits("xarray-512"),
        ) {
            out.push(format!(
                "{w}: metadata bits/page ours {k:.2}, radix-mainline {m:.2}, xarray {x:.2}, xarray-512 {x5:.2} (target: = mainline, < xarray): {}",
                verdict((k - m).abs() < 1e-9 && k < x.min(x5))
            ));
        }
    }
    out
}

/// The sweep.
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
    let mut header = vec!["scheme".to_owned(), "strategy".to_owned()];
    header.extend(sizes.iter().map(|n| format!("2^{} ms", n.trailing_zeros())));
    header.extend(["exponent".into(), "2^20 ms".into(), "note".into()]);
    t.set_header(header);
    for s in &r.scaling {
        let mut row = vec![s.scheme.clone(), s.strategy.clone()];
        for n in &sizes {
            row.push(
                s.points
                    .iter()
                    .find(|p| p.blocks == *n)
                    .map_or("-".into(), |p| f(p.ms, 2)),
            );
        }
        row.push(f(s.exponent, 2));
        row.push(s.ms_at_2_20.map_or("-".into(), |x| {
            if s.extrapolated {
                format!("~{} (extrapolated)", f(x, 1))
            } else {
                f(x, 2)
            }
        }));
        row.push(match s.capped_after {
            Some(n) => format!(
                "stopped after 2^{}: over cap ({} s)",
                n.trailing_zeros(),
                r.cap_seconds
            ),
            None => String::new(),
        });
        t.add_row(row);
    }
    t
}

/// The JSON document: `{"cells": [...], "ratios": [...], "scaling": [...]}`.
pub fn json(r: &BenchReport) -> Result<String, BenchError> {
    Ok(serde_json::to_string_pretty(r)?)
}

fn svg_loglog(r: &BenchReport) -> Result<String, BenchError> {
    let mut buf = String::new();
    {
        let root = SVGBackend::with_string(&mut buf, (900, 560)).into_drawing_area();
        root.fill(&WHITE)?;
        let pts: Vec<(f64, f64)> = r
            .scaling
            .iter()
            .flat_map(|s| s.points.iter().map(|p| (p.blocks as f64, p.ms.max(1e-4))))
            .collect();
        let (x0, x1) = pts
            .iter()
            .fold((f64::MAX, 1.0f64), |a, p| (a.0.min(p.0), a.1.max(p.0)));
        let (y0, y1) = pts
            .iter()
            .fold((f64::MAX, 1e-3f64), |a, p| (a.0.min(p.1), a.1.max(p.1)));
        let (x0, y0) = (x0.min(x1 / 2.0), y0.min(y1 / 10.0));
        let mut chart = ChartBuilder::on(&root)
            .caption(
                "restore (walk + memblock) vs scattered order-0 blocks",
                ("sans-serif", 18),
            )
            .margin(10)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .right_y_label_area_size(10)
            .build_cartesian_2d((x0..x1 * 1.5).log_scale(), (y0..y1 * 2.0).log_scale())?;
        chart
            .configure_mesh()
            .x_desc("blocks")
            .y_desc("ms")
            .draw()?;
        for (i, s) in r.scaling.iter().enumerate() {
            let color = Palette99::pick(i).to_rgba();
            let data: Vec<(f64, f64)> = s
                .points
                .iter()
                .map(|p| (p.blocks as f64, p.ms.max(1e-4)))
                .collect();
            chart
                .draw_series(LineSeries::new(data.clone(), color.stroke_width(2)))?
                .label(format!(
                    "{} {} (exp {:.2})",
                    s.scheme, s.strategy, s.exponent
                ))
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color));
            chart.draw_series(data.into_iter().map(|p| Circle::new(p, 3, color.filled())))?;
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .position(SeriesLabelPosition::UpperLeft)
            .draw()?;
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
        let root = SVGBackend::with_string(&mut buf, (900, 480)).into_drawing_area();
        root.fill(&WHITE)?;
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
            let color = Palette99::pick(si).to_rgba();
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
            chart
                .draw_series(pts.into_iter().map(|p| Circle::new(p, 4, color.filled())))?
                .label(s.clone())
                .legend(move |(x, y)| Circle::new((x + 8, y), 4, color.filled()));
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .position(SeriesLabelPosition::UpperRight)
            .draw()?;
        root.present()?;
    }
    Ok(buf)
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
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
    h.push_str("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>kho bench</title>\n<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;font-size:12px}td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}pre{font-size:12px}</style></head><body>\n<h1>kho bench</h1>\n");
    let _ = writeln!(
        h,
        "<p>{} cells, median of {} repetitions after a warm-up; sweep cap {} s.</p>",
        r.cells.len(),
        r.reps,
        r.cap_seconds
    );
    if !r.scaling.is_empty() {
        h.push_str("<h2>Restore time vs blocks (log-log)</h2>\n");
        h.push_str(&svg_loglog(r)?);
        let _ = writeln!(h, "<pre>{}</pre>", esc(&scaling_table(r).to_string()));
    }
    if !r.cells.is_empty() {
        h.push_str("<h2>Metadata bytes per scheme per workload</h2>\n");
        h.push_str(&svg_by_workload(
            r,
            "metadata bytes",
            "bytes",
            |c| (c.strategy == "coalesced" || c.scheme != "kho").then(|| c.scheme.clone()),
            |c| c.metadata_bytes as f64,
        )?);
        h.push_str("<h2>Next-boot memory init per scheme and strategy</h2>\n");
        h.push_str(&svg_by_workload(
            r,
            "next-boot init (walk + memblock + mm init), ms",
            "ms",
            |c| Some(format!("{} {}", c.scheme, c.strategy)),
            |c| c.next_boot_init_ms,
        )?);
        let _ = writeln!(
            h,
            "<h2>Cells</h2>\n<pre>{}</pre>",
            esc(&cells_table(r).to_string())
        );
        let _ = writeln!(
            h,
            "<h2>Ours / peers</h2>\n<pre>{}</pre>",
            esc(&ratios_table(r).to_string())
        );
    }
    h.push_str("</body></html>\n");
    // The SVG backend writes its namespace as an attribute value; that is
    // an identifier, not a fetched asset, but keep the file free of any
    // URL so that "opens offline" is checkable.
    let h = h.replace(" xmlns=\"http://www.w3.org/2000/svg\"", "");
    std::fs::write(dir.join("index.html"), h).map_err(write_err)
}
