#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| vendpay_fuzz::check_alipay_xml(data));
