//! Where a user lands after signing in. The target is the path and query they first asked for on
//! this host; anything that could leave the host (`//evil`, `/\evil`, encoded or nested variants,
//! control characters) lands on `/` instead.

/// Longer targets are not worth the risk of carrying them through the sign-in round trip.
const MAX_TARGET_LEN: usize = 4096;

/// The path and query to redirect to after sign-in, or `/` when `target` is not a plain relative
/// path on this host. Never returns a fragment.
pub fn safe_return_path(target: &str) -> &str {
    if is_safe(target) { target } else { "/" }
}

fn is_safe(target: &str) -> bool {
    if target.len() > MAX_TARGET_LEN
        || target.contains('#')
        || target.chars().any(char::is_whitespace)
    {
        return false;
    }
    // Check the text as sent and as a server or browser might decode it, up to three times, so
    // `/%2F%2Fevil` and `/%252F%252Fevil` fail like `//evil`.
    let mut candidate = target.to_string();
    for _ in 0..4 {
        if !looks_local(&candidate) {
            return false;
        }
        let decoded = percent_encoding::percent_decode_str(&candidate)
            .decode_utf8_lossy()
            .into_owned();
        if decoded == candidate {
            return true;
        }
        candidate = decoded;
    }
    // Still changing after several rounds of decoding: nobody needs that.
    false
}

/// Starts with one `/` not followed by `/` or `\`, and has no control characters (browsers drop
/// tabs and newlines, turning `/\t/evil` into `//evil`).
fn looks_local(path: &str) -> bool {
    let mut chars = path.chars();
    chars.next() == Some('/')
        && !matches!(chars.next(), Some('/') | Some('\\'))
        && !path.chars().any(char::is_control)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_paths_and_queries_are_kept() {
        for target in [
            "/",
            "/app",
            "/app/page?x=1&y=two",
            "/a%20b",
            "/search?q=%2Fetc",
            "/café",
        ] {
            assert_eq!(safe_return_path(target), target);
        }
    }

    #[test]
    fn anything_that_could_leave_the_host_lands_on_root() {
        for target in [
            "//evil.example",
            "/\\evil.example",
            "/%2F%2Fevil.example",
            "/%2f/evil.example",
            "/%5Cevil.example",
            "/%252F%252Fevil.example",
            "/%25252F%25252Fevil.example",
            "https:evil.example",
            "https://evil.example/",
            "http://app.example/next",
            "/%09/evil.example",
            "/\t/evil.example",
            "/\n/evil.example",
            "/%0d%0a/evil.example",
            "evil.example",
            "",
            "/page#fragment",
            "javascript:alert(1)",
        ] {
            assert_eq!(safe_return_path(target), "/", "{target:?} must not survive");
        }
        assert_eq!(safe_return_path(&format!("/{}", "a".repeat(5000))), "/");
    }
}
