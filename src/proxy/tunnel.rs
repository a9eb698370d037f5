//! The TCP forwarding relay: `/_iap/tunnel?port=N` upgrades to a WebSocket whose binary
//! messages carry the bytes of one TCP connection to the policy's Service on port N. Failures
//! after the upgrade are close frames with the codes the tunnel client explains: 4033 not
//! authorized, 4047 no such target, 4003 backend unreachable, 4004 token expired.
//!
//! An empty binary message means "this side has finished sending" (TCP half-close), since a
//! WebSocket close frame ends both directions at once; the tunnel closes when both sides are done.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use super::request_body::RequestBody;
use futures_util::{SinkExt, StreamExt};
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role};
use tokio_tungstenite::tungstenite::{Message, handshake::derive_accept_key};

use super::pages::{self, Answer};
use super::{Proxy, ProxyBody, SharedTable};
use crate::auth::session::unix_now;
use crate::error_codes::ErrorCode;
use crate::model::{Identity, TunnelRefusal, Upstream};

pub const TUNNEL_PATH: &str = "/_iap/tunnel";
/// A tunnel with no traffic either way for this long is closed.
const IDLE_TIMEOUT: Duration = Duration::from_secs(3600);
/// The most one tunnel message carries: larger messages mean fewer frames and syscalls per byte.
const READ_BUFFER: usize = 256 * 1024;

/// Who opened the tunnel, to where, and until when.
pub(super) struct TunnelRequest {
    pub host: String,
    pub port: u16,
    pub identity: Arc<Identity>,
    pub expires_at: u64,
    pub client: IpAddr,
}

impl Proxy {
    /// Answers the upgrade (101) and relays on a task of its own.
    pub(super) fn open_tunnel(
        &self,
        mut request: Request<RequestBody>,
        tunnel: TunnelRequest,
        request_id: &HeaderValue,
    ) -> Result<Response<ProxyBody>, Answer> {
        let is_websocket = request
            .headers()
            .get(header::UPGRADE)
            .and_then(|value| value.to_str().ok())
            .is_some_and(|value| value.eq_ignore_ascii_case("websocket"));
        let key = request.headers().get(header::SEC_WEBSOCKET_KEY).cloned();
        let (true, Some(key)) = (is_websocket, key) else {
            return Err(Answer::BadPath(
                "the tunnel endpoint takes WebSocket upgrades; use `kube-iap tunnel`".into(),
            ));
        };
        let on_upgrade = hyper::upgrade::on(&mut request);
        let table = self.table.clone();
        let connect_timeout = self.config.connect_timeout;
        let metrics = self.metrics.clone();
        tracing::info!(request_id = request_id.to_str().unwrap_or("-"), host = %tunnel.host, port = tunnel.port, subject = %tunnel.identity.subject, client = %tunnel.client, "tunnel opening");
        tokio::spawn(async move {
            match on_upgrade.await {
                Ok(upgraded) => {
                    let socket = WebSocketStream::from_raw_socket(
                        TokioIo::new(upgraded),
                        Role::Server,
                        None,
                    )
                    .await;
                    metrics.tunnels_open.inc();
                    let code = relay(socket, table, tunnel, connect_timeout, &metrics).await;
                    metrics.tunnels_open.dec();
                    metrics
                        .tunnel_closes
                        .with_label_values(&[code.to_string().as_str()])
                        .inc();
                }
                Err(error) => tracing::debug!(%error, "tunnel upgrade failed"),
            }
        });
        let mut response = pages::generated(
            StatusCode::SWITCHING_PROTOCOLS,
            "text/plain; charset=utf-8",
            String::new(),
            request_id,
        );
        let headers = response.headers_mut();
        headers.remove(header::CONTENT_TYPE);
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        headers.insert(
            header::SEC_WEBSOCKET_ACCEPT,
            HeaderValue::from_str(&derive_accept_key(key.as_bytes()))
                .expect("base64 is header-safe"),
        );
        Ok(response)
    }
}

/// What the live table says about this tunnel now.
fn decide(table: &SharedTable, tunnel: &TunnelRequest) -> Result<Vec<Upstream>, TunnelRefusal> {
    let table = table.load();
    let grant = table
        .host_routes(&tunnel.host)
        .iter()
        .find_map(|route| route.tunnel.clone())
        .ok_or_else(|| TunnelRefusal {
            code: ErrorCode::TunnelNotAuthorized,
            reason: format!("{} allows no TCP forwarding", tunnel.host),
        })?;
    grant
        .decide(&tunnel.identity, tunnel.port)
        .map(<[Upstream]>::to_vec)
}

type Socket = WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;

/// A normal end of a tunnel, in the close-code metric.
const NORMAL_CLOSE: u32 = 1000;

async fn close(socket: &mut Socket, code: ErrorCode, reason: &str) -> u32 {
    tracing::info!(code = code.number(), reason, "tunnel closed");
    let frame = CloseFrame {
        code: CloseCode::from(u16::try_from(code.number()).unwrap_or(1011)),
        reason: reason.chars().take(120).collect::<String>().into(),
    };
    let _ = socket.close(Some(frame)).await;
    code.number()
}

/// Relays until the tunnel ends; returns the close code it ended with.
async fn relay(
    mut socket: Socket,
    table: SharedTable,
    tunnel: TunnelRequest,
    connect_timeout: Duration,
    metrics: &crate::metrics::Metrics,
) -> u32 {
    let to_backend_bytes = metrics.tunnel_bytes.with_label_values(&["to_backend"]);
    let to_client_bytes = metrics.tunnel_bytes.with_label_values(&["to_client"]);
    let upstreams = match decide(&table, &tunnel) {
        Ok(upstreams) => upstreams,
        Err(refusal) => return close(&mut socket, refusal.code, &refusal.reason).await,
    };
    let mut connected = None;
    for upstream in &upstreams {
        let attempt = tokio::time::timeout(
            connect_timeout,
            TcpStream::connect(upstream.authority.as_str()),
        );
        if let Ok(Ok(stream)) = attempt.await {
            connected = Some(stream);
            break;
        }
    }
    let Some(stream) = connected else {
        let reason = format!("no endpoint accepted a connection on port {}", tunnel.port);
        return close(&mut socket, ErrorCode::TunnelBackendUnreachable, &reason).await;
    };
    let _ = stream.set_nodelay(true);
    let (mut from_backend, mut to_backend) = stream.into_split();
    let mut buffer = bytes::BytesMut::with_capacity(READ_BUFFER);
    let expiry = Duration::from_secs(tunnel.expires_at.saturating_sub(unix_now()));
    let expired = tokio::time::sleep(expiry);
    tokio::pin!(expired);
    let mut recheck = tokio::time::interval(Duration::from_secs(1));
    let idle = tokio::time::sleep(IDLE_TIMEOUT);
    tokio::pin!(idle);
    let (mut client_done, mut backend_done) = (false, false);
    loop {
        if client_done && backend_done {
            let _ = socket.close(None).await;
            return NORMAL_CLOSE;
        }
        tokio::select! {
            message = socket.next(), if !client_done => match message {
                Some(Ok(Message::Binary(bytes))) if bytes.is_empty() => {
                    // The client is done sending: half-close towards the backend, keep reading.
                    client_done = true;
                    let _ = to_backend.shutdown().await;
                }
                Some(Ok(Message::Binary(bytes))) => {
                    idle.as_mut().reset(tokio::time::Instant::now() + IDLE_TIMEOUT);
                    // Awaiting the write before reading more is the backpressure.
                    to_backend_bytes.inc_by(bytes.len() as u64);
                    if to_backend.write_all(&bytes).await.is_err() {
                        return close(&mut socket, ErrorCode::TunnelBackendUnreachable, "the backend closed the connection").await;
                    }
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return NORMAL_CLOSE,
                Some(Ok(_)) => {}
            },
            read = from_backend.read_buf(&mut buffer), if !backend_done => match read {
                Ok(0) | Err(_) => {
                    // The backend is done sending: say so with an empty message, keep relaying
                    // what the client still sends.
                    backend_done = true;
                    if socket.send(Message::binary(Vec::new())).await.is_err() {
                        return NORMAL_CLOSE;
                    }
                }
                Ok(read) => {
                    idle.as_mut().reset(tokio::time::Instant::now() + IDLE_TIMEOUT);
                    to_client_bytes.inc_by(read as u64);
                    // The bytes read become the message as they are, without a copy.
                    let message = Message::binary(buffer.split().freeze());
                    buffer.reserve(READ_BUFFER);
                    if socket.send(message).await.is_err() {
                        return NORMAL_CLOSE;
                    }
                }
            },
            _ = &mut expired => {
                return close(&mut socket, ErrorCode::TunnelReauthenticate, "the token expired").await;
            }
            _ = recheck.tick() => {
                if let Err(refusal) = decide(&table, &tunnel) {
                    return close(&mut socket, refusal.code, &refusal.reason).await;
                }
            }
            _ = &mut idle => {
                let _ = socket.close(None).await;
                return NORMAL_CLOSE;
            }
        }
    }
}

/// The `port` query parameter.
pub(super) fn requested_port(query: &str) -> Result<u16, Answer> {
    url::form_urlencoded::parse(query.as_bytes())
        .find(|(name, _)| name == "port")
        .and_then(|(_, value)| value.parse::<u16>().ok())
        .filter(|port| *port > 0)
        .ok_or_else(|| Answer::BadPath("the tunnel needs ?port=N (1-65535)".into()))
}
