#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| vendpay_fuzz::check_device_auth(data));
