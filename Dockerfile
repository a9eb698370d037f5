# kube-iap container image: a release build on the pinned toolchain, run as a non-root user from a
# small Debian image with CA certificates (identity providers are reached over HTTPS).
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
COPY examples ./examples
COPY bench/support ./bench/support
RUN cargo build --release --locked --bin kube-iap

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 65532 --no-create-home --shell /usr/sbin/nologin kube-iap
COPY --from=build /src/target/release/kube-iap /usr/local/bin/kube-iap
USER 65532:65532
EXPOSE 8080 8443 9090
ENTRYPOINT ["/usr/local/bin/kube-iap"]
CMD ["--help"]
