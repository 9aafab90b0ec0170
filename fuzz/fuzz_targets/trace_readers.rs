//! Fuzz target: see `prescient::fuzz_checks::trace_readers` for the property checked.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| prescient::fuzz_checks::trace_readers(data));
