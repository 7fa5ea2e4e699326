#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| warmfork_fuzz::server_request(data));
