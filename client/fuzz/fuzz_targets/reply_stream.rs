#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| warmfork_fuzz::reply_stream(data));
