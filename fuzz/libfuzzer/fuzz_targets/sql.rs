#![no_main]
//! libFuzzer entry for `lookback_fuzz::sql` (see that function for what it checks).
libfuzzer_sys::fuzz_target!(|data: &[u8]| lookback_fuzz::sql(data));
