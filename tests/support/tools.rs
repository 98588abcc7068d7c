//! External tools the tests run, provided by the project's own scripts.

use std::process::Command;

/// The promtool that `scripts/promtool` provides (unpacking Debian's package into
/// `target/tools` when none is installed).
pub fn promtool() -> String {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/promtool");
    let out = Command::new(script)
        .output()
        .expect("scripts/promtool runs");
    assert!(
        out.status.success(),
        "scripts/promtool could not provide promtool: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}
