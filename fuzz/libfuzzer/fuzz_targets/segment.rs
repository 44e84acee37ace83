#![no_main]
//! libFuzzer entry for `lookback_fuzz::segment` (see that function for what it checks).
libfuzzer_sys::fuzz_target!(|data: &[u8]| lookback_fuzz::segment(data));
