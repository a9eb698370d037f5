//! Header hygiene between client and upstream: identity headers a client sends are dropped,
//! hop-by-hop headers stay on their hop, and the forwarding headers say where the request came from.

use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use super::identity::IdentityFields;
use super::request_id::X_REQUEST_ID;

/// Prefix of the identity headers kube-iap asserts to backends.
pub const IDENTITY_PREFIX: &str = "x-kube-iap-";
/// Prefixes of the Google IAP headers a backend written for Google IAP trusts.
const GOOGLE_IDENTITY_PREFIXES: [&str; 2] = ["x-goog-authenticated-user-", "x-goog-iap-"];

/// Header names are case-insensitive and the `http` crate stores them lower-case, so a prefix test
/// catches every spelling, and `remove` drops every duplicate. Underscores count as dashes:
/// CGI-style servers (PHP, WSGI, nginx with `underscores_in_headers`) read `x_kube_iap_...` as
/// the same header.
pub fn strip_identity_headers(headers: &mut HeaderMap) {
    let spoofed: Vec<HeaderName> = headers
        .keys()
        .filter(|name| {
            let name = name.as_str();
            let matches = |name: &str| {
                name.starts_with(IDENTITY_PREFIX)
                    || GOOGLE_IDENTITY_PREFIXES.iter().any(|p| name.starts_with(p))
            };
            matches(name) || (name.contains('_') && matches(&name.replace('_', "-")))
        })
        .cloned()
        .collect();
    for name in spoofed {
        headers.remove(name);
    }
}

/// Headers that describe one connection, never forwarded (RFC 9110 §7.6.1).
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
];

/// Removes hop-by-hop headers, including those the `Connection` header names. `Upgrade` is kept
/// only for an upgrade being passed through, with `Connection: upgrade` restored.
pub fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    // One pass over the names present, so the usual request (none of these) costs no lookups.
    let mut doomed: Vec<HeaderName> = headers
        .keys()
        .filter(|name| HOP_BY_HOP.contains(name) || (!keep_upgrade && *name == header::UPGRADE))
        .cloned()
        .collect();
    if doomed.contains(&header::CONNECTION) {
        doomed.extend(
            connection_tokens(headers)
                .filter_map(|token| HeaderName::from_bytes(token.as_bytes()).ok())
                .filter(|name| !(keep_upgrade && *name == header::UPGRADE)),
        );
    }
    for name in doomed {
        headers.remove(name);
    }
    if keep_upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

/// Whether the client's `TE` accepts trailers (gRPC clients send `te: trailers`).
pub fn accepts_trailers(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::TE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|token| token.trim().eq_ignore_ascii_case("trailers"))
}

/// Whether the client asks to switch protocols (WebSocket) on an HTTP/1.1 request.
pub fn is_upgrade_request(headers: &HeaderMap) -> bool {
    // Upgrade first: absent on nearly every request, and then the Connection options are not read.
    headers.contains_key(header::UPGRADE)
        && connection_tokens(headers).any(|token| token.eq_ignore_ascii_case("upgrade"))
}

/// The comma-separated options of every `Connection` header, trimmed.
fn connection_tokens(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
}

/// The client's address for policy decisions: the connection's peer, unless the peer is a trusted
/// proxy, in which case `X-Forwarded-For` is read right to left, skipping trusted proxies, and the
/// first untrusted address is the client. By default nothing is trusted, so a client cannot
/// choose its own address.
pub fn client_address(peer: IpAddr, headers: &HeaderMap, trusted: &[ipnet::IpNet]) -> IpAddr {
    let is_trusted = |address: &IpAddr| is_trusted_proxy(address, trusted);
    if !is_trusted(&peer) {
        return peer;
    }
    let hops: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .collect();
    let mut client = peer;
    for hop in hops.iter().rev() {
        match hop.parse::<IpAddr>() {
            Ok(address) => {
                client = address;
                if !is_trusted(&address) {
                    break;
                }
            }
            // An unparsable hop ends the chain we can believe.
            Err(_) => break,
        }
    }
    client
}

/// Whether the client reached kube-iap over TLS: this connection is TLS, or a trusted proxy
/// (one that terminated TLS in front of kube-iap) says so in `X-Forwarded-Proto`. It decides
/// the scheme of the sign-in `redirect_uri` and whether cookies are `Secure`; a client that is
/// not a trusted proxy cannot choose it.
pub fn client_used_tls(
    connection_tls: bool,
    peer: IpAddr,
    headers: &HeaderMap,
    trusted: &[ipnet::IpNet],
) -> bool {
    if connection_tls {
        return true;
    }
    if !is_trusted_proxy(&peer, trusted) {
        return false;
    }
    // The nearest proxy's word is the last value.
    headers
        .get_all("x-forwarded-proto")
        .iter()
        .next_back()
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.rsplit(',').next())
        .is_some_and(|proto| proto.trim().eq_ignore_ascii_case("https"))
}

fn is_trusted_proxy(address: &IpAddr, trusted: &[ipnet::IpNet]) -> bool {
    trusted.iter().any(|net| net.contains(address))
}

const FORWARDED: HeaderName = HeaderName::from_static("forwarded");
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// The fields kube-iap sets on every request it forwards. Those the client sent are dropped, not
/// extended: no proxy in front of kube-iap is trusted unless configured, so a client cannot plant
/// an address. `Forwarded` is dropped too: it would contradict them.
pub struct ForwardingFields<'a> {
    pub client: IpAddr,
    pub tls: bool,
    pub host: &'a str,
    pub request_id: &'a HeaderValue,
    /// Who is calling, when someone signed in.
    pub identity: Option<&'a IdentityFields<'a>>,
}

const REPLACED: [HeaderName; 5] = [
    FORWARDED,
    X_FORWARDED_FOR,
    X_FORWARDED_PROTO,
    X_FORWARDED_HOST,
    X_REQUEST_ID,
];

impl ForwardingFields<'_> {
    /// Whether a field the client sent is one of those these replace.
    pub fn replaces(name: &HeaderName) -> bool {
        REPLACED.contains(name)
    }

    /// About how many bytes they take in a request head, so that the lean client allocates the
    /// head once instead of regrowing it as they are written.
    pub fn size(&self) -> usize {
        const NAMES_AND_ADDRESS: usize = 160;
        NAMES_AND_ADDRESS + self.host.len() + self.identity.map_or(0, IdentityFields::size)
    }

    /// Each field's name and value, in the order they are sent.
    pub fn for_each(&self, mut field: impl FnMut(&HeaderName, &[u8])) {
        field(&X_FORWARDED_FOR, AddressText::new(self.client).as_bytes());
        field(
            &X_FORWARDED_PROTO,
            if self.tls { b"https" } else { b"http" },
        );
        if is_field_value(self.host.as_bytes()) {
            field(&X_FORWARDED_HOST, self.host.as_bytes());
        }
        field(&X_REQUEST_ID, self.request_id.as_bytes());
        if let Some(identity) = self.identity {
            identity.for_each(field);
        }
    }

    /// Sets them in `headers`, for requests that go through hyper's client. The lean client
    /// writes them straight into the request head instead: inserting into the map cost about a
    /// twentieth of a small request's instructions.
    pub fn set(&self, headers: &mut HeaderMap) {
        for name in REPLACED {
            headers.remove(name);
        }
        self.for_each(|name, value| {
            if let Ok(value) = HeaderValue::from_bytes(value) {
                headers.append(name.clone(), value);
            }
        });
    }
}

/// Whether `bytes` may be a header field value, by the rule `HeaderValue` applies.
pub fn is_field_value(bytes: &[u8]) -> bool {
    bytes
        .iter()
        .all(|&byte| byte == b'\t' || (byte >= b' ' && byte != 0x7f))
}

/// An address as header text, on the stack. IPv4 is written by hand: `Display` for addresses
/// went through the formatting machinery and was a tenth of the proxy's own work per request.
struct AddressText {
    text: [u8; 45],
    len: usize,
}

impl AddressText {
    fn new(address: IpAddr) -> Self {
        let mut text = [0u8; 45];
        let IpAddr::V4(v4) = address else {
            let mut rest = &mut text[..];
            use std::io::Write as _;
            write!(rest, "{address}").expect("an IPv6 address fits in 45 bytes");
            let len = 45 - rest.len();
            return AddressText { text, len };
        };
        let mut len = 0;
        for (i, octet) in v4.octets().into_iter().enumerate() {
            if i > 0 {
                text[len] = b'.';
                len += 1;
            }
            if octet >= 100 {
                text[len] = b'0' + octet / 100;
                len += 1;
            }
            if octet >= 10 {
                text[len] = b'0' + octet / 10 % 10;
                len += 1;
            }
            text[len] = b'0' + octet % 10;
            len += 1;
        }
        AddressText { text, len }
    }

    fn as_bytes(&self) -> &[u8] {
        &self.text[..self.len]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    #[test]
    fn addresses_are_written_as_display_writes_them() {
        for address in [
            "0.0.0.0",
            "127.0.0.1",
            "10.20.30.40",
            "255.255.255.255",
            "192.168.100.9",
            "::1",
            "2001:db8::8a2e:370:7334",
            "::ffff:10.0.0.1",
        ] {
            let ip: IpAddr = address.parse().unwrap();
            assert_eq!(
                AddressText::new(ip).as_bytes(),
                ip.to_string().as_bytes(),
                "{address}"
            );
        }
    }

    #[test]
    fn identity_headers_in_any_case_and_any_number_are_removed() {
        let mut map = headers(&[
            ("X-Kube-Iap-Authenticated-User-Email", "ceo@example.com"),
            ("x-kube-iap-authenticated-user-email", "second@example.com"),
            ("X-KUBE-IAP-JWT-ASSERTION", "forged"),
            (
                "x-goog-authenticated-user-email",
                "accounts.google.com:ceo@example.com",
            ),
            ("x-goog-iap-jwt-assertion", "forged"),
            ("x_kube_iap_authenticated_user_email", "ceo@example.com"),
            ("X_Goog_Authenticated_User_Id", "forged"),
            ("x-goog-api-client", "kept"),
            ("accept", "text/html"),
        ]);
        strip_identity_headers(&mut map);
        let mut left: Vec<&str> = map.keys().map(HeaderName::as_str).collect();
        left.sort_unstable();
        assert_eq!(left, ["accept", "x-goog-api-client"]);
    }

    #[test]
    fn forwarded_proto_is_believed_only_from_trusted_proxies() {
        let trusted: Vec<ipnet::IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let proxy: IpAddr = "10.1.1.1".parse().unwrap();
        let stranger: IpAddr = "203.0.113.9".parse().unwrap();
        let with = |values: &[&str]| {
            let mut headers = HeaderMap::new();
            for value in values {
                headers.append("x-forwarded-proto", HeaderValue::from_str(value).unwrap());
            }
            headers
        };
        let cases = [
            (false, proxy, with(&["https"]), true),
            (false, proxy, with(&["HTTPS"]), true),
            (false, proxy, with(&["http, https"]), true),
            (false, proxy, with(&["https", "http"]), false),
            (false, proxy, with(&[]), false),
            (false, stranger, with(&["https"]), false),
            (true, stranger, with(&["http"]), true),
        ];
        for (tls, peer, headers, expected) in cases {
            assert_eq!(
                client_used_tls(tls, peer, &headers, &trusted),
                expected,
                "{tls} {peer} {headers:?}"
            );
        }
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies_right_to_left() {
        let trusted: Vec<ipnet::IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let spoofing = headers(&[("x-forwarded-for", "203.0.113.9, 10.0.0.5")]);
        let peer = |ip: &str| ip.parse::<IpAddr>().unwrap();
        let cases: &[(&str, &HeaderMap, &[ipnet::IpNet], &str)] = &[
            // Nothing trusted: the peer, whatever the header says.
            ("192.0.2.1", &spoofing, &[], "192.0.2.1"),
            ("10.0.0.1", &spoofing, &[], "10.0.0.1"),
            // An untrusted peer cannot plant an address either.
            ("192.0.2.1", &spoofing, &trusted, "192.0.2.1"),
            // A trusted proxy: walk right to left past trusted hops.
            ("10.0.0.1", &spoofing, &trusted, "203.0.113.9"),
        ];
        for (from, map, trust, want) in cases {
            assert_eq!(
                client_address(peer(from), map, trust),
                peer(want),
                "{from} trusting {trust:?}"
            );
        }
        // The client's own left-most claim is ignored once an untrusted hop is found.
        let chain = headers(&[("x-forwarded-for", "1.1.1.1, 198.51.100.7, 10.0.0.5")]);
        assert_eq!(
            client_address(peer("10.0.0.1"), &chain, &trusted),
            peer("198.51.100.7")
        );
        let garbage = headers(&[("x-forwarded-for", "1.1.1.1, not-an-ip")]);
        assert_eq!(
            client_address(peer("10.0.0.1"), &garbage, &trusted),
            peer("10.0.0.1")
        );
    }

    #[test]
    fn hop_by_hop_headers_and_those_named_by_connection_are_removed() {
        let mut map = headers(&[
            ("connection", "keep-alive, x-secret-hop"),
            ("keep-alive", "timeout=5"),
            ("x-secret-hop", "1"),
            ("te", "trailers"),
            ("proxy-authorization", "Bearer abc"),
            ("upgrade", "websocket"),
            ("accept", "*/*"),
        ]);
        strip_hop_by_hop(&mut map, false);
        let left: Vec<&str> = map.keys().map(HeaderName::as_str).collect();
        assert_eq!(left, ["accept"]);
    }

    #[test]
    fn an_upgrade_keeps_upgrade_and_connection_upgrade() {
        let mut map = headers(&[
            ("connection", "Upgrade"),
            ("upgrade", "websocket"),
            ("sec-websocket-key", "k"),
        ]);
        assert!(is_upgrade_request(&map));
        strip_hop_by_hop(&mut map, true);
        assert_eq!(map.get("upgrade").unwrap(), "websocket");
        assert_eq!(map.get("connection").unwrap(), "upgrade");
        assert_eq!(map.get("sec-websocket-key").unwrap(), "k");
    }

    fn forwarding<'a>(
        client: &str,
        tls: bool,
        host: &'a str,
        request_id: &'a HeaderValue,
    ) -> ForwardingFields<'a> {
        ForwardingFields {
            client: client.parse().unwrap(),
            tls,
            host,
            request_id,
            identity: None,
        }
    }

    #[test]
    fn forwarding_headers_replace_what_the_client_claimed() {
        let mut map = headers(&[
            ("x-forwarded-for", "1.2.3.4"),
            ("forwarded", "for=1.2.3.4"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "evil.example"),
            ("x-forwarded-host", "evil2.example"),
            ("x-request-id", "chosen-by-the-client"),
            ("accept", "*/*"),
        ]);
        let request_id = HeaderValue::from_static("abc-1");
        let fields = forwarding("127.0.0.9", false, "app.example.com", &request_id);
        // What the lean client writes: the client's fields but the replaced ones, then ours.
        let mut written = Vec::new();
        for (name, value) in &map {
            if !ForwardingFields::replaces(name) {
                written.push((name.to_string(), value.to_str().unwrap().to_string()));
            }
        }
        fields.for_each(|name, value| {
            written.push((name.to_string(), String::from_utf8(value.to_vec()).unwrap()));
        });
        fields.set(&mut map);
        let expected = [
            ("accept", "*/*"),
            ("x-forwarded-for", "127.0.0.9"),
            ("x-forwarded-proto", "http"),
            ("x-forwarded-host", "app.example.com"),
            ("x-request-id", "abc-1"),
        ];
        let expected: Vec<(String, String)> = expected
            .iter()
            .map(|(name, value)| (name.to_string(), value.to_string()))
            .collect();
        assert_eq!(written, expected, "written into the head");
        let mut in_map: Vec<(String, String)> = map
            .iter()
            .map(|(name, value)| (name.to_string(), value.to_str().unwrap().to_string()))
            .collect();
        in_map.sort();
        let mut expected = expected;
        expected.sort();
        assert_eq!(in_map, expected, "set in the map");
    }

    #[test]
    fn a_host_that_cannot_be_a_field_value_is_left_out_and_the_clients_still_dropped() {
        let mut map = headers(&[("x-forwarded-host", "evil.example")]);
        let request_id = HeaderValue::from_static("abc-1");
        let fields = forwarding("::1", true, "bad\u{7f}host", &request_id);
        fields.set(&mut map);
        assert!(map.get("x-forwarded-host").is_none());
        assert_eq!(map.get("x-forwarded-for").unwrap(), "::1");
        assert_eq!(map.get("x-forwarded-proto").unwrap(), "https");
    }
}
