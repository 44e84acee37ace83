#![no_main]
//! libFuzzer entry for `lookback_fuzz::pgwire` (see that function for what it checks).
libfuzzer_sys::fuzz_target!(|data: &[u8]| lookback_fuzz::pgwire(data));
