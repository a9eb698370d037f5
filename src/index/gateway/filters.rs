//! A rule's filters, translated: header edits, a URL rewrite or a redirect, and the IapPolicy an
//! `ExtensionRef` names. A filter kube-iap does not implement makes the rule invalid (it answers
//! 500) rather than being skipped: a rule is never served with part of its meaning dropped.

use http::header::{HeaderName, HeaderValue};

use crate::api::gateway::{self, HttpRouteFilter, PathModifier};
use crate::index::{Index, ObjectKey};
use crate::model::{HeaderEdits, PathRewrite, Redirect, Rewrite, RouteFilters};

/// What a rule's filters amount to.
#[derive(Default)]
pub struct Translated {
    pub filters: RouteFilters,
    /// A redirect, without the listener's port (known when the rule is attached).
    pub redirect: Option<Redirect>,
    pub extension_policy: Option<ObjectKey>,
}

/// Identity headers are the proxy's alone: a filter setting one could hand a backend an
/// identity nobody proved.
fn is_identity_header(name: &HeaderName) -> bool {
    let name = name.as_str();
    name.starts_with("x-kube-iap-") || name.starts_with("x-goog-")
}

pub fn translate(
    index: &Index,
    route: &ObjectKey,
    filters: &[HttpRouteFilter],
    has_exact_match: bool,
) -> Result<Translated, String> {
    let mut translated = Translated::default();
    for filter in filters {
        match filter.type_.as_str() {
            "RequestHeaderModifier" => {
                let edits = header_edits(filter.request_header_modifier.as_ref())?;
                if let Some(name) = edits
                    .set
                    .iter()
                    .chain(&edits.add)
                    .map(|(name, _)| name)
                    .find(|name| is_identity_header(name))
                {
                    return Err(format!(
                        "RequestHeaderModifier may not set {name}: identity headers are kube-iap's"
                    ));
                }
                once(
                    &mut translated.filters.request_headers,
                    edits,
                    "RequestHeaderModifier",
                )?;
            }
            "ResponseHeaderModifier" => {
                let edits = header_edits(filter.response_header_modifier.as_ref())?;
                once(
                    &mut translated.filters.response_headers,
                    edits,
                    "ResponseHeaderModifier",
                )?;
            }
            "URLRewrite" => {
                let rewrite = filter
                    .url_rewrite
                    .as_ref()
                    .ok_or("URLRewrite without urlRewrite")?;
                let hostname = rewrite
                    .hostname
                    .as_deref()
                    .map(|host| {
                        HeaderValue::from_str(host)
                            .map_err(|_| format!("URLRewrite hostname {host:?} is not valid"))
                    })
                    .transpose()?;
                let path = path_rewrite(rewrite.path.as_ref(), has_exact_match)?;
                once(
                    &mut translated.filters.rewrite,
                    Rewrite { hostname, path },
                    "URLRewrite",
                )?;
            }
            "RequestRedirect" => {
                let redirect = filter
                    .request_redirect
                    .as_ref()
                    .ok_or("RequestRedirect without requestRedirect")?;
                let redirect = translate_redirect(redirect, has_exact_match)?;
                once(&mut translated.redirect, redirect, "RequestRedirect")?;
            }
            "ExtensionRef" => {
                let reference = filter
                    .extension_ref
                    .as_ref()
                    .ok_or("ExtensionRef without extensionRef")?;
                let is_policy = reference.group.as_deref() == Some(crate::api::GROUP)
                    && reference.kind.as_deref() == Some("IapPolicy");
                if !is_policy {
                    return Err(format!(
                        "ExtensionRef {:?}/{:?} {} is not an IapPolicy",
                        reference.group.as_deref().unwrap_or(""),
                        reference.kind.as_deref().unwrap_or(""),
                        reference.name
                    ));
                }
                let policy = ObjectKey::new(&route.namespace, &reference.name);
                if !index.policies.contains_key(&policy) {
                    return Err(format!(
                        "the ExtensionRef IapPolicy {policy} does not exist"
                    ));
                }
                translated.extension_policy = Some(policy);
            }
            other => return Err(format!("filter {other} is not served yet")),
        }
    }
    if translated.redirect.is_some() && translated.filters.rewrite.is_some() {
        return Err("RequestRedirect and URLRewrite cannot be used together".to_string());
    }
    Ok(translated)
}

/// The spec allows each of these filters once per rule.
fn once<T>(slot: &mut Option<T>, value: T, name: &str) -> Result<(), String> {
    if slot.replace(value).is_some() {
        return Err(format!("{name} is given more than once"));
    }
    Ok(())
}

fn header_edits(modifier: Option<&gateway::HeaderModifier>) -> Result<HeaderEdits, String> {
    let modifier = modifier.ok_or("a header modifier filter without its settings")?;
    let name = |text: &str| {
        HeaderName::from_bytes(text.to_ascii_lowercase().as_bytes())
            .map_err(|_| format!("header name {text:?} is not valid"))
    };
    let pair = |entry: &gateway::HeaderValue| -> Result<(HeaderName, HeaderValue), String> {
        let value = HeaderValue::from_str(&entry.value)
            .map_err(|_| format!("the value of header {} is not valid", entry.name))?;
        Ok((name(&entry.name)?, value))
    };
    Ok(HeaderEdits {
        set: modifier.set.iter().map(pair).collect::<Result<_, _>>()?,
        add: modifier.add.iter().map(pair).collect::<Result<_, _>>()?,
        remove: modifier
            .remove
            .iter()
            .map(|n| name(n))
            .collect::<Result<_, _>>()?,
    })
}

fn path_rewrite(
    path: Option<&PathModifier>,
    has_exact_match: bool,
) -> Result<Option<PathRewrite>, String> {
    let Some(path) = path else {
        return Ok(None);
    };
    let normalized = |raw: &str| {
        crate::model::path::normalize(raw).map_err(|error| format!("path {raw:?}: {error}"))
    };
    match (
        path.type_.as_str(),
        &path.replace_full_path,
        &path.replace_prefix_match,
    ) {
        ("ReplaceFullPath", Some(full), _) => Ok(Some(PathRewrite::Full(normalized(full)?))),
        ("ReplacePrefixMatch", _, Some(prefix)) if has_exact_match => Err(format!(
            "ReplacePrefixMatch {prefix:?} needs PathPrefix matches, and the rule has an Exact one"
        )),
        ("ReplacePrefixMatch", _, Some(prefix)) => {
            Ok(Some(PathRewrite::Prefix(normalized(prefix)?)))
        }
        (other, _, _) => Err(format!("path modifier {other} lacks its value")),
    }
}

fn translate_redirect(
    redirect: &gateway::RequestRedirect,
    has_exact_match: bool,
) -> Result<Redirect, String> {
    let scheme = match redirect.scheme.as_deref() {
        None => None,
        Some(scheme @ ("http" | "https")) => Some(scheme.to_string()),
        Some(other) => return Err(format!("redirect scheme {other:?} is not http or https")),
    };
    let port = redirect
        .port
        .map(|port| u16::try_from(port).map_err(|_| format!("redirect port {port} is not a port")))
        .transpose()?;
    let status = match redirect.status_code.unwrap_or(302) {
        code @ (301 | 302 | 303 | 307 | 308) => code as u16,
        other => {
            return Err(format!(
                "redirect status {other} is not 301, 302, 303, 307 or 308"
            ));
        }
    };
    if let Some(hostname) = &redirect.hostname {
        if !super::hostname_is_valid(&hostname.to_ascii_lowercase()) || hostname.starts_with('*') {
            return Err(format!("redirect hostname {hostname:?} is not a host name"));
        }
    }
    Ok(Redirect {
        scheme,
        hostname: redirect.hostname.as_ref().map(|h| h.to_ascii_lowercase()),
        port,
        path: path_rewrite(redirect.path.as_ref(), has_exact_match)?,
        status,
        listener_port: 0,
    })
}
