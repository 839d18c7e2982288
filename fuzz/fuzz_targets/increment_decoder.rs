//! Arbitrary bytes fed to the increment decoder (`pgark_delta::IncrementReader`).
//!
//! The first input byte chooses, page by page, whether the page is read or skipped, so
//! both paths run. Properties checked: the decoder never panics and never allocates in
//! proportion to what a header claims (only the page buffer, at most 32 KiB); and an input
//! it accepts whole is exactly what the encoder writes for the same header and pages.

#![no_main]

use libfuzzer_sys::fuzz_target;
use pgark_delta::{IncrementReader, IncrementWriter};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, input)) = data.split_first() else {
        return;
    };
    let Ok(mut reader) = IncrementReader::new(input) else {
        return;
    };
    let header = *reader.header();
    let mut page = vec![0u8; header.block_size.bytes()];
    let mut pages: Vec<(u32, Vec<u8>)> = Vec::new();
    let mut skipped = false;
    let mut i = 0u32;
    loop {
        let block = match reader.peek_block() {
            Ok(Some(block)) => block,
            Ok(None) => break,
            Err(_) => return,
        };
        let skip = (mode >> (i % 8)) & 1 == 1;
        i = i.wrapping_add(1);
        if skip {
            skipped = true;
            match reader.skip_page() {
                Ok(b) => assert_eq!(b, block),
                Err(_) => return,
            }
        } else {
            match reader.read_page(&mut page) {
                Ok(b) => {
                    assert_eq!(b, block);
                    if let Some(&(last, _)) = pages.last() {
                        assert!(b > last, "blocks must ascend");
                    }
                    assert!(b < header.blocks);
                    pages.push((b, page.clone()));
                }
                Err(_) => return,
            }
        }
    }
    assert!(reader.is_finished());
    if skipped {
        return;
    }
    // Accepted whole: the encoder writes the same bytes.
    let mut writer = IncrementWriter::new(Vec::new(), header).expect("a decoded header encodes");
    for (block, image) in &pages {
        writer.push_page(*block, image).expect("decoded pages re-encode");
    }
    let encoded = writer.finish().expect("a decoded increment re-encodes");
    assert_eq!(encoded, input);
});
