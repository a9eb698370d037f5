//! Header hygiene between client and upstream: identity headers a client sends are dropped,
//! hop-by-hop headers stay on their hop, and the forwarding headers say where the request came from.

use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

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

/// Sets `X-Forwarded-For/-Proto/-Host`. Client-sent values are replaced, not extended: no proxy in
/// front of kube-iap is trusted unless configured, so a client cannot plant an address.
pub fn set_forwarding_headers(headers: &mut HeaderMap, client: IpAddr, tls: bool, host: &str) {
    headers.remove(FORWARDED);
    headers.insert(X_FORWARDED_FOR, address_value(client));
    headers.insert(
        X_FORWARDED_PROTO,
        HeaderValue::from_static(if tls { "https" } else { "http" }),
    );
    if let Ok(value) = HeaderValue::from_str(host) {
        headers.insert(X_FORWARDED_HOST, value);
    }
}

/// An address as a header value. IPv4 is written by hand: `Display` for addresses went through
/// the formatting machinery and was a tenth of the proxy's own work per request.
fn address_value(address: IpAddr) -> HeaderValue {
    let IpAddr::V4(v4) = address else {
        return HeaderValue::from_str(&address.to_string())
            .expect("an IP address is a valid header value");
    };
    let mut text = [0u8; 15];
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
    HeaderValue::from_bytes(&text[..len]).expect("digits and dots are a valid header value")
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
            assert_eq!(address_value(ip), ip.to_string().as_str(), "{address}");
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

    #[test]
    fn forwarding_headers_replace_what_the_client_claimed() {
        let mut map = headers(&[
            ("x-forwarded-for", "1.2.3.4"),
            ("forwarded", "for=1.2.3.4"),
            ("x-forwarded-proto", "https"),
        ]);
        set_forwarding_headers(
            &mut map,
            "127.0.0.9".parse().unwrap(),
            false,
            "app.example.com",
        );
        assert_eq!(map.get("x-forwarded-for").unwrap(), "127.0.0.9");
        assert_eq!(map.get("x-forwarded-proto").unwrap(), "http");
        assert_eq!(map.get("x-forwarded-host").unwrap(), "app.example.com");
        assert!(map.get("forwarded").is_none());
    }
}
