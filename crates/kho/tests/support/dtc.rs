// The one rule for tests that run `dtc` (Debian package device-tree-compiler),
// shared by `kho` (src/fdt/tests.rs) and `kho-lab` (tests/inspect.rs) through
// `include!`, so it holds no inner attributes and names everything by `std::`.
//
// When spawning `dtc` fails because it is not installed, the check is skipped
// with a loud SKIPPED line on stderr, so that the README's test command passes
// on a machine that has only Rust. With `KHO_REQUIRE_DTC=1` in the environment
// (`.ci/run` installs dtc and sets it) a missing dtc fails the test instead: a
// skipped check never counts as a pass in CI.

/// The environment variable that turns a missing `dtc` into a failure.
const KHO_REQUIRE_DTC: &str = "KHO_REQUIRE_DTC";

/// Whether `test` should return early because spawning `dtc` failed with
/// `err`: true (after a SKIPPED line on stderr) when dtc is not installed
/// and `KHO_REQUIRE_DTC` is unset, empty or `0`; false for any other spawn
/// error, which the caller reports. Panics when dtc is not installed but
/// `KHO_REQUIRE_DTC` requires it.
fn skip_without_dtc(test: &str, err: &std::io::Error) -> bool {
    if err.kind() != std::io::ErrorKind::NotFound {
        return false;
    }
    let required = std::env::var_os(KHO_REQUIRE_DTC).is_some_and(|v| !v.is_empty() && v != "0");
    assert!(
        !required,
        "{test}: `dtc` not found ({err}) but {KHO_REQUIRE_DTC} is set: install \
         device-tree-compiler (`apt-get install -y device-tree-compiler`), or unset \
         {KHO_REQUIRE_DTC} to skip this check"
    );
    // Straight to stderr, not `eprintln!`: the test harness captures the
    // output of passing tests, and this line must be seen.
    let line = std::format!(
        "!!!!!!!! SKIPPED {test}: `dtc` not found ({err}); install device-tree-compiler \
         to run this check (set {KHO_REQUIRE_DTC}=1 to make a missing dtc fail, as .ci/run does) \
         !!!!!!!!\n"
    );
    // A failed write to stderr leaves nothing better to report it to.
    let _ = std::io::Write::write_all(&mut std::io::stderr(), line.as_bytes());
    true
}
