//! Sync-message decoding never panics under the default limits, and a decoded message
//! re-encodes to itself.
#![no_main]

use blockend_kernel::sync::{Limits, Message};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limits = Limits::default();
    if let Ok(message) = Message::decode(data, &limits) {
        let bytes = message.encode();
        assert_eq!(message.encoded_len(), bytes.len());
        let again = Message::decode(&bytes, &limits).expect("a decoded message re-encodes");
        assert_eq!(again, message);
    }
});
