//! The sample app behind the demo: a small web page that shows what the backend receives, so a
//! person can see which headers kube-iap adds and which it strips.
//!
//! `cargo run --example sample_app -- 127.0.0.1:3000`

use std::net::SocketAddr;

use bytes::Bytes;
use http::{Request, Response, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let addr: SocketAddr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:3000".into())
        .parse()?;
    let listener = TcpListener::bind(addr).await?;
    eprintln!("sample app listening on http://{addr}");
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service_fn(page))
                .await;
        });
    }
}

async fn page(
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
    if request.uri().path() == "/plain" {
        // A tiny fixed answer, for benchmarks.
        return Ok(Response::new(Full::new(Bytes::from_static(
            b"hello from the sample app\n",
        ))));
    }
    let mut rows = String::new();
    for (name, value) in request.headers() {
        let value = value.to_str().unwrap_or("(binary)");
        rows.push_str(&format!(
            "<tr><td>{}</td><td>{}</td></tr>",
            escape(name.as_str()),
            escape(value)
        ));
    }
    let body = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>Sample app</title>\
<style>body{{font-family:system-ui,sans-serif;margin:2rem}}td{{padding:.2rem .6rem;border-bottom:1px solid #ddd;font-family:monospace}}</style>\
</head><body><h1>Hello from the sample app</h1>\
<p>You reached <code>{} {}</code> through kube-iap. These are the headers the app received:</p>\
<table>{rows}</table></body></html>\n",
        escape(request.method().as_str()),
        escape(&request.uri().to_string()),
    );
    let mut response = Response::new(Full::new(Bytes::from(body)));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        "text/html; charset=utf-8".parse().expect("valid"),
    );
    Ok(response)
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
