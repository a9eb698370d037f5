//! Loopback TCP throughput for the tunnel benchmark.
//!
//! `tcp_throughput sink ADDR`: accepts connections, reads each to its end, then answers `ok`.
//! `tcp_throughput push ADDR MEGABYTES`: sends that much, half-closes, waits for `ok`, and prints
//! megabytes per second (delivery included).

use std::time::Instant;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

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
        _ => anyhow::bail!("usage: tcp_throughput sink ADDR | push ADDR MEGABYTES"),
    }
}
