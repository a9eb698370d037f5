//! `kube-iap tunnel`: carries local TCP connections (or stdin/stdout, for `ssh -o ProxyCommand`)
//! over WebSockets to `/_iap/tunnel` with a bearer ID token, and explains close codes with the
//! error-code table.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

use crate::error_codes::TABLE;

/// Where the token comes from.
#[derive(Clone, Debug)]
pub enum TokenSource {
    File(PathBuf),
    Value(String),
    /// A shell command that prints a fresh token; run for every new connection.
    Command(String),
    /// The sign-in `kube-iap login` cached.
    Cache(PathBuf),
}

impl TokenSource {
    pub async fn token(&self) -> Result<String, TunnelError> {
        let token = match self {
            TokenSource::Value(token) => token.clone(),
            TokenSource::File(path) => tokio::fs::read_to_string(path)
                .await
                .map_err(|error| TunnelError::Token(format!("{}: {error}", path.display())))?,
            TokenSource::Cache(path) => crate::login_client::cached_token(path)
                .await
                .map_err(TunnelError::Token)?,
            TokenSource::Command(command) => {
                let output = tokio::process::Command::new("sh")
                    .args(["-c", command])
                    .output()
                    .await
                    .map_err(|error| TunnelError::Token(format!("{command}: {error}")))?;
                if !output.status.success() {
                    return Err(TunnelError::Token(format!(
                        "{command} exited with {}",
                        output.status
                    )));
                }
                String::from_utf8_lossy(&output.stdout).into_owned()
            }
        };
        let token = token.trim().to_string();
        if token.is_empty() {
            return Err(TunnelError::Token("the token is empty".into()));
        }
        Ok(token)
    }
}

pub struct TunnelOptions {
    /// `https://HOST[:PORT]` (or `http://` for a plain listener).
    pub url: url::Url,
    pub port: u16,
    pub token: TokenSource,
    /// Extra certificate authorities (PEM) for a proxy with a private CA.
    pub ca_file: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum TunnelError {
    #[error("cannot read the token: {0}")]
    Token(String),
    #[error("cannot reach {0}")]
    Connect(String),
    #[error("the proxy refused the tunnel: {0}")]
    Refused(String),
    /// The proxy closed the tunnel with a kube-iap close code.
    #[error("{}", describe_close(*code, reason))]
    Closed { code: u16, reason: String },
}

/// `4033: Not authorized ... (reason). What to do: ...`, from the one error-code table.
pub fn describe_close(code: u16, reason: &str) -> String {
    match TABLE.iter().find(|row| row.number == u32::from(code)) {
        Some(row) => format!(
            "tunnel closed with code {code}: {} ({reason}). What to do: {}",
            row.title, row.remedy
        ),
        None => format!("tunnel closed with code {code} ({reason})"),
    }
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

type Socket = WebSocketStream<Box<dyn Io>>;

/// Opens one tunnel WebSocket.
async fn open(
    options: &TunnelOptions,
    tls: &Option<Arc<rustls::ClientConfig>>,
) -> Result<Socket, TunnelError> {
    let token = options.token.token().await?;
    let host = options
        .url
        .host_str()
        .ok_or_else(|| TunnelError::Connect("the URL has no host".into()))?
        .to_string();
    let secure = options.url.scheme() == "https";
    let port = options.url.port().unwrap_or(if secure { 443 } else { 80 });
    let authority = match options.url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.clone(),
    };
    let target = format!(
        "{}://{authority}/_iap/tunnel?port={}",
        if secure { "wss" } else { "ws" },
        options.port
    );
    let tcp = TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|error| TunnelError::Connect(format!("{host}:{port}: {error}")))?;
    let _ = tcp.set_nodelay(true);
    let stream: Box<dyn Io> = match (secure, tls) {
        (true, Some(config)) => {
            let name = rustls_pki_types::ServerName::try_from(host.clone())
                .map_err(|error| TunnelError::Connect(format!("{host}: {error}")))?;
            let connector = tokio_rustls::TlsConnector::from(config.clone());
            Box::new(
                connector
                    .connect(name, tcp)
                    .await
                    .map_err(|error| TunnelError::Connect(format!("TLS with {host}: {error}")))?,
            )
        }
        _ => Box::new(tcp),
    };
    let mut request = target
        .into_client_request()
        .map_err(|error| TunnelError::Connect(error.to_string()))?;
    request.headers_mut().insert(
        "authorization",
        HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|_| TunnelError::Token("the token is not header-safe".into()))?,
    );
    match tokio_tungstenite::client_async(request, stream).await {
        Ok((socket, _)) => Ok(socket),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            let body = response
                .body()
                .as_ref()
                .map(|body| String::from_utf8_lossy(body).into_owned())
                .unwrap_or_default();
            Err(TunnelError::Refused(format!(
                "HTTP {}: {}",
                response.status(),
                body.trim()
            )))
        }
        Err(error) => Err(TunnelError::Refused(error.to_string())),
    }
}

/// The most one tunnel message carries: larger messages mean fewer frames and syscalls per byte.
const MESSAGE_SIZE: usize = 256 * 1024;

/// Relays `reader`/`writer` over one tunnel until either side ends.
async fn pipe(
    socket: Socket,
    mut reader: impl AsyncRead + Unpin,
    mut writer: impl AsyncWrite + Unpin,
) -> Result<(), TunnelError> {
    let (mut sink, mut stream) = socket.split();
    let mut buffer = bytes::BytesMut::with_capacity(MESSAGE_SIZE);
    let (mut local_done, mut remote_done) = (false, false);
    loop {
        if local_done && remote_done {
            let _ = sink.send(Message::Close(None)).await;
            return Ok(());
        }
        tokio::select! {
            read = reader.read_buf(&mut buffer), if !local_done => match read {
                Ok(0) | Err(_) => {
                    // Half-close: an empty message says this side has finished sending.
                    local_done = true;
                    if sink.send(Message::binary(Vec::new())).await.is_err() {
                        return Ok(());
                    }
                }
                Ok(_) => {
                    // The bytes read become the message as they are, without a copy.
                    let message = Message::binary(buffer.split().freeze());
                    buffer.reserve(MESSAGE_SIZE);
                    if sink.send(message).await.is_err() {
                        return Ok(());
                    }
                }
            },
            message = stream.next() => match message {
                Some(Ok(Message::Binary(bytes))) if bytes.is_empty() => {
                    remote_done = true;
                    let _ = writer.shutdown().await;
                }
                Some(Ok(Message::Binary(bytes))) => {
                    if writer.write_all(&bytes).await.is_err() {
                        return Ok(());
                    }
                    let _ = writer.flush().await;
                }
                Some(Ok(Message::Close(Some(frame)))) if u16::from(frame.code) >= 4000 => {
                    return Err(TunnelError::Closed { code: frame.code.into(), reason: frame.reason.to_string() });
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => {
                    let _ = writer.shutdown().await;
                    return Ok(());
                }
                Some(Ok(_)) => {}
            },
        }
    }
}

fn tls_config(options: &TunnelOptions) -> Result<Option<Arc<rustls::ClientConfig>>, TunnelError> {
    if options.url.scheme() != "https" {
        return Ok(None);
    }
    let mut roots = rustls::RootCertStore::empty();
    for certificate in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(certificate);
    }
    if let Some(path) = &options.ca_file {
        use rustls_pki_types::pem::PemObject;
        let certificates = rustls_pki_types::CertificateDer::pem_file_iter(path)
            .map_err(|error| TunnelError::Connect(format!("{}: {error}", path.display())))?;
        for certificate in certificates {
            let certificate = certificate
                .map_err(|error| TunnelError::Connect(format!("{}: {error}", path.display())))?;
            roots
                .add(certificate)
                .map_err(|error| TunnelError::Connect(format!("{}: {error}", path.display())))?;
        }
    }
    Ok(Some(Arc::new(
        rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )))
}

/// One connection on stdin/stdout, for `ssh -o ProxyCommand`.
pub async fn stdio(options: TunnelOptions) -> Result<(), TunnelError> {
    let tls = tls_config(&options)?;
    let socket = open(&options, &tls).await?;
    pipe(socket, tokio::io::stdin(), tokio::io::stdout()).await
}

/// Accepts local connections on `listen`, each carried by its own tunnel. Prints the bound
/// address on stdout once listening.
pub async fn listen(options: TunnelOptions, listen: SocketAddr) -> Result<(), TunnelError> {
    let tls = tls_config(&options)?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|error| TunnelError::Connect(format!("cannot listen on {listen}: {error}")))?;
    let bound = listener
        .local_addr()
        .map_err(|error| TunnelError::Connect(error.to_string()))?;
    println!("listening on {bound}");
    let options = Arc::new(options);
    loop {
        let (local, peer) = listener
            .accept()
            .await
            .map_err(|error| TunnelError::Connect(error.to_string()))?;
        let (options, tls) = (options.clone(), tls.clone());
        tokio::spawn(async move {
            let result = match open(&options, &tls).await {
                Ok(socket) => {
                    let (reader, writer) = local.into_split();
                    pipe(socket, reader, writer).await
                }
                Err(error) => Err(error),
            };
            if let Err(error) = result {
                eprintln!("{peer}: {error}");
            }
        });
    }
}
