//! Identifiers and tokens: random, URL-safe, and for deliveries sortable by time.
//!
//! Delivery ids are ULIDs (48 bits of milliseconds, 80 random bits, Crockford
//! base32), so "newest first" is an index scan on the id and ids from one host
//! never collide. Receiver ids need no order and carry 100 random bits. The admin
//! token carries 256.

use std::time::{SystemTime, UNIX_EPOCH};

const CROCKFORD: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

fn random<const N: usize>() -> [u8; N] {
    let mut buf = [0u8; N];
    // The OS random source failing is not recoverable in any useful way.
    getrandom::fill(&mut buf).expect("the operating system's random source failed");
    buf
}

/// Encodes the low `bits` bits of `value` as base32, most significant first.
fn base32(value: u128, bits: u32, out: &mut String) {
    let mut shift = bits;
    while shift >= 5 {
        shift -= 5;
        out.push(CROCKFORD[((value >> shift) & 31) as usize] as char);
    }
}

pub fn now_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// `dlv_` + a ULID: sortable by creation time.
pub fn delivery_id() -> String {
    let millis = u128::try_from(now_millis()).unwrap_or(0) & ((1 << 48) - 1);
    let rand = u128::from_be_bytes({
        let mut b = [0u8; 16];
        b[6..].copy_from_slice(&random::<10>());
        b
    });
    let mut out = String::with_capacity(30);
    out.push_str("dlv_");
    base32(millis << 80 | rand, 130, &mut out);
    out
}

/// The smallest delivery id created at `millis`: ids at or after that time sort
/// at or after it.
pub fn delivery_id_at(millis: i64) -> String {
    let millis = u128::try_from(millis).unwrap_or(0) & ((1 << 48) - 1);
    let mut out = String::with_capacity(30);
    out.push_str("dlv_");
    base32(millis << 80, 130, &mut out);
    out
}

/// `rcv_` + 20 base32 characters (100 random bits).
pub fn receiver_id() -> String {
    let bytes = random::<13>();
    let mut b = [0u8; 16];
    b[3..].copy_from_slice(&bytes);
    let mut out = String::with_capacity(24);
    out.push_str("rcv_");
    base32(u128::from_be_bytes(b), 100, &mut out);
    out
}

/// A new admin token: `hg_` + 43 base64url characters (256 bits).
pub fn admin_token() -> String {
    use base64::Engine;
    format!(
        "hg_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random::<32>())
    )
}

/// A random fraction in [0, 1), for retry jitter.
pub fn jitter() -> f64 {
    let r = u64::from_be_bytes(random::<8>()) >> 11;
    r as f64 / (1u64 << 53) as f64
}

/// RFC 3339 in UTC with milliseconds, for API timestamps.
pub fn rfc3339(millis: i64) -> String {
    let secs = millis.div_euclid(1000);
    let ms = millis.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{ms:03}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delivery_ids_sort_by_time_and_differ() {
        let a = delivery_id();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = delivery_id();
        assert!(a < b, "{a} {b}");
        assert_eq!(a.len(), 4 + 26);
        let floor = delivery_id_at(now_millis() - 1000);
        assert!(floor < a && floor.len() == a.len(), "{floor} {a}");
        assert!(delivery_id_at(now_millis() + 1000) > b);
        assert_ne!(receiver_id(), receiver_id());
        assert_eq!(receiver_id().len(), 24);
        assert!(admin_token().starts_with("hg_"));
    }

    #[test]
    fn timestamps() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
        assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00.000Z");
    }
}
