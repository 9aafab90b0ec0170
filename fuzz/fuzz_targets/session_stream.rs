//! Fuzz target: whole request streams through a proxy on `memory://`; see
//! `prescient::fuzz_checks::SessionHarness::run` for the property checked.
#![no_main]

use std::sync::OnceLock;

use prescient::fuzz_checks::SessionHarness;

static HARNESS: OnceLock<SessionHarness> = OnceLock::new();

libfuzzer_sys::fuzz_target!(|data: &[u8]| HARNESS.get_or_init(SessionHarness::new).run(data));
