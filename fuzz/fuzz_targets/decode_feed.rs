//! Feed decoding never panics; what decodes re-encodes to a feed that decodes the same, and
//! verifying it never panics.
#![no_main]

use blockend_kernel::Feed;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(feed) = Feed::decode(data) {
        let again = Feed::decode(&feed.encode()).expect("a decoded feed re-encodes");
        assert_eq!(again, feed);
        let _ = feed.verify();
    }
});
