//! Arbitrary bytes into the codec's `ObjectReader` with a data key: header
//! parsing, the encrypted/unencrypted switch, the decrypting stage and the
//! codecs behind it. Must never panic; an encrypted object must never
//! decode (that would be a forgery).

#![no_main]

use std::io::Read;

use libfuzzer_sys::fuzz_target;
use pgark_codec::ObjectReader;
use pgark_crypto::DataKey;

fuzz_target!(|data: &[u8]| {
    let key = DataKey::from_bytes(&[0x42; 32]);
    let Ok(mut r) = ObjectReader::new_with_key(data, Some(&key), "base/1/1259") else {
        return;
    };
    let encrypted = r.is_encrypted();
    let mut buf = [0u8; 4096];
    loop {
        match r.read(&mut buf) {
            Ok(0) => {
                assert!(!encrypted, "arbitrary bytes decoded as an encrypted object");
                break;
            }
            Ok(_) => {}
            Err(_) => break,
        }
    }
});
