#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| hydracache_protocol_fuzz::roundtrip(data));
