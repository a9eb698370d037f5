//! Request path normalisation. The normalised path is both what policy matches and exactly what is
//! sent upstream, so no encoding trick can make the proxy decide on one path and the backend serve
//! another.

use std::fmt::Write;

/// Why a request path was refused (HTTP 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("the request path must start with '/'")]
    NotAbsolute,
    #[error("the request path has an invalid percent-encoding")]
    BadEncoding,
    #[error("the request path contains a control character")]
    ControlCharacter,
}

/// Normalises a raw request path (without the query):
/// - percent-encoded unreserved characters, `/` (`%2F`) and `\` (`%5C`) are decoded, other
///   escapes are kept with upper-case hex, so `%2e%2e` and `%2F` cannot hide a dot-segment or a
///   separator from the decision;
/// - `\` is a separator, as browsers treat it;
/// - empty segments (`//`) are merged, `.` is dropped, `..` removes the previous segment and never
///   climbs above the root;
/// - a trailing `/` is kept, since backends may distinguish `/dir/` from `/dir`.
pub fn normalize(raw: &str) -> Result<String, PathError> {
    if !raw.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    if is_canonical(raw) {
        return Ok(raw.to_string());
    }
    let decoded = decode_safe(raw)?;
    let ends_with_separator =
        decoded.ends_with('/') || decoded.ends_with("/.") || decoded.ends_with("/..");
    let mut segments: Vec<&str> = Vec::new();
    for segment in decoded.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            other => segments.push(other),
        }
    }
    let mut out = String::with_capacity(decoded.len());
    for segment in &segments {
        out.push('/');
        out.push_str(segment);
    }
    if out.is_empty() || ends_with_separator {
        out.push('/');
    }
    Ok(out)
}

/// The common case: nothing to decode, merge or resolve. One pass over the segments: every
/// request pays for this check.
fn is_canonical(raw: &str) -> bool {
    let plain = raw
        .bytes()
        .all(|b| b > 0x20 && b != 0x7f && b != b'%' && b != b'\\');
    if !plain {
        return false;
    }
    // `raw` starts with `/`; what follows are the segments, of which only the last (a trailing
    // slash) may be empty, and none may be `.` or `..`.
    let mut segments = raw[1..].split('/').peekable();
    while let Some(segment) = segments.next() {
        let last = segments.peek().is_none();
        if segment == "." || segment == ".." || (segment.is_empty() && !last) {
            return false;
        }
    }
    true
}

/// Decodes the escapes that must not differ between proxy and backend, maps `\` to `/`, and
/// rejects control characters and broken escapes.
fn decode_safe(raw: &str) -> Result<String, PathError> {
    let bytes = raw.as_bytes();
    let mut out = String::with_capacity(raw.len());
    let mut i = 0;
    while i < bytes.len() {
        let byte = bytes[i];
        if byte == b'%' {
            let hex = bytes.get(i + 1..i + 3).ok_or(PathError::BadEncoding)?;
            let value = hex_value(hex[0])
                .zip(hex_value(hex[1]))
                .map(|(high, low)| high << 4 | low)
                .ok_or(PathError::BadEncoding)?;
            match value {
                b'/' | b'\\' => out.push('/'),
                v if v.is_ascii_alphanumeric() || matches!(v, b'-' | b'.' | b'_' | b'~') => {
                    out.push(v as char)
                }
                v if v < 0x20 || v == 0x7f => return Err(PathError::ControlCharacter),
                v => write!(out, "%{v:02X}").expect("writing to a String cannot fail"),
            }
            i += 3;
            continue;
        }
        if byte < 0x20 || byte == 0x7f {
            return Err(PathError::ControlCharacter);
        }
        out.push(if byte == b'\\' { '/' } else { byte as char });
        i += 1;
    }
    Ok(out)
}

fn hex_value(byte: u8) -> Option<u8> {
    (byte as char).to_digit(16).map(|digit| digit as u8)
}

/// Whether `path` lies under `prefix`, comparing whole segments: `/api` covers `/api` and
/// `/api/v1` but not `/apis`. A segment's `;parameters` are ignored when comparing, because
/// servlet containers route `/admin;x` as `/admin`; so a prefix covers it too.
pub fn has_prefix(path: &str, prefix: &str) -> bool {
    let prefix = prefix.trim_end_matches('/');
    if prefix.is_empty() {
        return true;
    }
    let mut path_segments = path.split('/').skip(1);
    for wanted in prefix.split('/').skip(1) {
        match path_segments.next() {
            Some(segment) if strip_parameters(segment) == wanted => {}
            _ => return false,
        }
    }
    true
}

fn strip_parameters(segment: &str) -> &str {
    segment.split(';').next().unwrap_or(segment)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalisation_table() {
        let cases: &[(&str, &str)] = &[
            ("/", "/"),
            ("/a/b", "/a/b"),
            ("/a/b/", "/a/b/"),
            ("/a/../b", "/b"),
            ("/a/./b", "/a/b"),
            ("/../../etc/passwd", "/etc/passwd"),
            ("//a//b", "/a/b"),
            ("/a%2Fb", "/a/b"),
            ("/a%2fb", "/a/b"),
            ("/a%5C..%5Cb", "/b"),
            ("/a\\..\\b", "/b"),
            ("/public/%2e%2e/admin", "/admin"),
            ("/public/%2E%2E/admin", "/admin"),
            ("/public/.%2e/admin", "/admin"),
            ("/public%2F..%2Fadmin", "/admin"),
            ("/a;x=1/b", "/a;x=1/b"),
            ("/%7Euser", "/~user"),
            ("/caf%c3%a9", "/caf%C3%A9"),
            ("/a%23b", "/a%23b"),
            ("/a%252Fb", "/a%252Fb"),
            ("/a/..", "/"),
            ("/a/b/..", "/a/"),
            ("/a/b/.", "/a/b/"),
        ];
        for (raw, want) in cases {
            assert_eq!(normalize(raw).as_deref(), Ok(*want), "normalize({raw:?})");
        }
    }

    #[test]
    fn the_fast_path_takes_only_paths_the_full_normalisation_leaves_alone() {
        let segments = ["", ".", "..", "...", "a", ".a", "a.", "%2e", "b\\c", "x y"];
        for first in segments {
            for second in segments {
                for third in ["", "c", "."] {
                    let raw = format!("/{first}/{second}/{third}");
                    if !is_canonical(&raw) {
                        continue;
                    }
                    // What normalisation gives when the fast path is not taken.
                    let decoded = decode_safe(&raw).unwrap();
                    assert_eq!(decoded, raw, "{raw:?}");
                    assert!(
                        !raw.contains("//") && !raw.contains("/./") && !raw.contains("/../"),
                        "{raw:?} needs resolving"
                    );
                    assert!(!raw.ends_with("/.") && !raw.ends_with("/.."), "{raw:?}");
                }
            }
        }
        for plain in ["/", "/a/", "/a/.a/...", "/api/v1/items"] {
            assert!(is_canonical(plain), "{plain:?} takes the fast path");
        }
    }

    #[test]
    fn broken_paths_are_refused() {
        assert_eq!(normalize("a/b"), Err(PathError::NotAbsolute));
        assert_eq!(normalize("*"), Err(PathError::NotAbsolute));
        assert_eq!(normalize("/a%zzb"), Err(PathError::BadEncoding));
        assert_eq!(normalize("/a%2"), Err(PathError::BadEncoding));
        assert_eq!(normalize("/a%00b"), Err(PathError::ControlCharacter));
        assert_eq!(normalize("/a%0Ab"), Err(PathError::ControlCharacter));
    }

    #[test]
    fn prefixes_match_whole_segments() {
        let cases: &[(&str, &str, bool)] = &[
            ("/", "/", true),
            ("/anything", "/", true),
            ("/api", "/api", true),
            ("/api/", "/api", true),
            ("/api/v1", "/api", true),
            ("/api/v1", "/api/", true),
            ("/apis", "/api", false),
            ("/ap", "/api", false),
            ("/api;jsessionid=1/x", "/api", true),
            ("/admin;x", "/admin", true),
            ("/other/api", "/api", false),
            ("/api/v1/x", "/api/v1", true),
            ("/api/v2", "/api/v1", false),
        ];
        for (path, prefix, want) in cases {
            assert_eq!(
                has_prefix(path, prefix),
                *want,
                "has_prefix({path:?}, {prefix:?})"
            );
        }
    }
}
