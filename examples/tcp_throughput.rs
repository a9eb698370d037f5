//! Loopback TCP throughput for the tunnel benchmark.
//!
//! `tcp_throughput sink ADDR`: accepts connections, reads each to its end, then answers `ok`.
//! `tcp_throughput push ADDR MEGABYTES`: sends that much, half-closes, waits for `ok`, and prints
//! megabytes per second (delivery included).
//! `tcp_throughput relay LISTEN TARGET`: copies each accepted connection to TARGET and back, with
//! nothing else: the tunnel's two relay hops (client and proxy) at no cost of their own, so the
//! benchmark can show what a relayed path can reach on this machine at all.

use std::time::Instant;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

const RELAY_BUFFER: usize = 256 * 1024;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        [mode, addr] if mode == "sink" => {
            let listener = tokio::net::TcpListener::bind(addr).await?;
            loop {
                let (mut stream, _) = listener.accept().await?;
                tokio::spawn(async move {
                    let mut buffer = vec![0u8; 256 * 1024];
                    while let Ok(read) = stream.read(&mut buffer).await {
                        if read == 0 {
                            break;
                        }
                    }
                    let _ = stream.write_all(b"ok").await;
                });
            }
        }
        [mode, addr, megabytes] if mode == "push" => {
            let megabytes: usize = megabytes.parse()?;
            let chunk = vec![0x5au8; 1024 * 1024];
            let mut stream = tokio::net::TcpStream::connect(addr).await?;
            stream.set_nodelay(true)?;
            let started = Instant::now();
            for _ in 0..megabytes {
                stream.write_all(&chunk).await?;
            }
            stream.shutdown().await?;
            let mut answer = Vec::new();
            stream.read_to_end(&mut answer).await?;
            anyhow::ensure!(answer == b"ok", "the sink did not confirm");
            println!("{:.0}", megabytes as f64 / started.elapsed().as_secs_f64());
            Ok(())
        }
        [mode, listen, target] if mode == "relay" => {
            let listener = tokio::net::TcpListener::bind(listen).await?;
            loop {
                let (mut inbound, _) = listener.accept().await?;
                let target = target.clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await else {
                        return;
                    };
                    let _ = outbound.set_nodelay(true);
                    // The same buffer size the tunnel relays with.
                    let _ = tokio::io::copy_bidirectional_with_sizes(
                        &mut inbound,
                        &mut outbound,
                        RELAY_BUFFER,
                        RELAY_BUFFER,
                    )
                    .await;
                });
            }
        }
        _ => anyhow::bail!(
            "usage: tcp_throughput sink ADDR | push ADDR MEGABYTES | relay LISTEN TARGET"
        ),
    }
}
