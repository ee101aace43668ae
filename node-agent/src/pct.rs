//! Percent-encoding of one URL path segment (RFC 3986 §2.1), for keys in `/kv/{key}`.
//!
//! A key may hold any character, including `?`, `#`, `%`, `/` and spaces, which mean
//! something in a URL. Whoever puts a key into a path encodes every byte outside the
//! unreserved set (`A–Z a–z 0–9 - . _ ~`) as `%XX`; the agent decodes the segment exactly
//! once. So `x?context` travels as `x%3Fcontext` and stays a key, never a query.

/// `segment` with every byte outside RFC 3986's unreserved set written as `%XX`.
pub fn encode(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for b in segment.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push('%');
            out.push(char::from(b"0123456789ABCDEF"[usize::from(b >> 4)]));
            out.push(char::from(b"0123456789ABCDEF"[usize::from(b & 15)]));
        }
    }
    out
}

/// Decode one percent-encoded segment. A `%` not followed by two hex digits, or bytes that
/// are not UTF-8 once decoded, are refused with the reason.
pub fn decode(segment: &str) -> Result<String, String> {
    let b = segment.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = |c: Option<&u8>| c.and_then(|c| (*c as char).to_digit(16));
            match (hex(b.get(i + 1)), hex(b.get(i + 2))) {
                (Some(h), Some(l)) => out.push((h * 16 + l) as u8),
                _ => {
                    return Err(format!(
                        "bad percent-encoding at byte {i} of {segment:?}: `%` must be followed by two hex digits (write a literal % as %25)"
                    ))
                }
            }
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| format!("{segment:?} decodes to bytes that are not UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_characters_round_trip() {
        for key in [
            "x?context",
            "a#b",
            "100%",
            "a/b",
            "with space",
            "plain-key_1.~",
            "ключ",
            "",
        ] {
            let e = encode(key);
            assert!(
                !e.contains(['?', '#', '/', ' ']),
                "{key:?} encoded as {e:?}"
            );
            assert_eq!(decode(&e).unwrap(), key);
        }
        assert_eq!(encode("x?context"), "x%3Fcontext");
        // Decoded once: an encoded `%` stays a `%`.
        assert_eq!(decode("a%2541").unwrap(), "a%41");
    }

    #[test]
    fn bad_encodings_are_refused() {
        for bad in ["%", "%4", "a%zz", "%FF"] {
            assert!(decode(bad).is_err(), "{bad:?}");
        }
    }
}
