//! `kho`: run, bench, capture, inspect, report.

fn main() -> anyhow::Result<()> {
    println!("kho: the live update scenario is being built (issue 3)");
    Ok(())
}
