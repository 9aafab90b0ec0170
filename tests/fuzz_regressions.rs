//! Every input the fuzz targets keep (fuzz/corpus/<target>/, their seeds and what they grew,
//! minimized) and every crash they found (fuzz/regressions/<target>/) runs through the same
//! check as its target (`prescient::fuzz_checks`), under a plain `cargo test` on stable.

use std::path::Path;

use prescient::fuzz_checks;

/// The saved inputs of `target`, from both folders; the count is checked so that a moved
/// folder cannot turn these tests into ones that check nothing.
fn inputs(target: &str) -> Vec<(String, Vec<u8>)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut out = Vec::new();
    for dir in ["corpus", "regressions"] {
        let Ok(rd) = std::fs::read_dir(root.join(dir).join(target)) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_file() {
                let data = std::fs::read(&p).expect("readable input");
                out.push((p.display().to_string(), data));
            }
        }
    }
    out.sort();
    assert!(out.len() >= 2, "{target}: no saved inputs found");
    out
}

fn run_all(target: &str, check: impl Fn(&[u8])) {
    for (name, data) in inputs(target) {
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check(&data)));
        assert!(r.is_ok(), "{target}: {name} fails its check");
    }
}

#[test]
fn request_parser() {
    run_all("request_parser", fuzz_checks::request_parser);
}

#[test]
fn reply_scanner() {
    run_all("reply_scanner", fuzz_checks::reply_scanner);
}

#[test]
fn envelope() {
    run_all("envelope", fuzz_checks::envelope);
}

#[test]
fn trace_readers() {
    run_all("trace_readers", fuzz_checks::trace_readers);
}

#[test]
fn config_loader() {
    run_all("config_loader", fuzz_checks::config_loader);
}

#[test]
fn session_stream() {
    let h = fuzz_checks::SessionHarness::new();
    run_all("session_stream", |d| h.run(d));
}
