//! Hex and base64, as signatures, secrets and the edge's wire format spell bytes.
//!
//! Config (secret encodings, the body hash), verification (signatures) and the
//! forwarded event all need the same few conversions, so they sit here, below
//! every one of them, rather than inside any: a module that only reads config must
//! not have to import the verifiers to decode a key. Decoding is lenient where
//! providers differ (hex in either case, base64 padded or not) and answers `None`
//! rather than an error, because each caller words its own reason.

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};

/// Lowercase hex.
pub fn encode_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 0xf)] as char);
    }
    out
}

/// Hex in either case; `None` when odd-length or not hex.
pub fn decode_hex(text: &str) -> Option<Vec<u8>> {
    let bytes = text.as_bytes();
    if !bytes.len().is_multiple_of(2) {
        return None;
    }
    bytes
        .chunks_exact(2)
        .map(|pair| {
            let hi = (pair[0] as char).to_digit(16)?;
            let lo = (pair[1] as char).to_digit(16)?;
            u8::try_from(hi << 4 | lo).ok()
        })
        .collect()
}

/// Standard base64, padded.
pub fn encode_base64(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

/// Standard base64, padded or not.
pub fn decode_base64(text: &str) -> Option<Vec<u8>> {
    STANDARD
        .decode(text)
        .or_else(|_| STANDARD_NO_PAD.decode(text))
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip() {
        assert_eq!(encode_hex(&[0, 0xab, 0xff]), "00abff");
        assert_eq!(decode_hex("00ABff"), Some(vec![0, 0xab, 0xff]));
        assert_eq!(decode_hex("abc"), None);
        assert_eq!(decode_hex("zz"), None);
        assert_eq!(decode_hex("é1"), None);
    }

    #[test]
    fn base64_padded_or_not() {
        assert_eq!(encode_base64(&[0xff, 0x00]), "/wA=");
        assert_eq!(decode_base64("/wA="), Some(vec![0xff, 0x00]));
        assert_eq!(decode_base64("/wA"), Some(vec![0xff, 0x00]));
        assert_eq!(decode_base64("-_"), None);
    }
}
