//! Block decoding never panics, and what decodes encodes back to the same bytes' meaning.
#![no_main]

use blockend_kernel::Block;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(block) = Block::decode(data) {
        let again = Block::decode(&block.encode()).expect("a decoded block re-encodes");
        assert_eq!(again, block);
        assert_eq!(block.encoded_len(), block.encode().len());
        // The structural rules hold for whatever the decoder admits.
        assert!(block.check_structure().is_ok());
        let _ = block.verify();
    }
});
