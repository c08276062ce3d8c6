# syntax=docker/dockerfile:1.7
# Tickwire dedicated server image.
#   docker build -t tickwire .
#   docker run --rm -p 7777:7777/udp -p 7777:7777/tcp -p 9464:9464 tickwire
# io_uring is blocked by Docker 25+/containerd 2.0 default seccomp profiles; the server then logs
# why and uses epoll. To allow it: --security-opt seccomp=config/docker/seccomp-io-uring.json

ARG RUST_VERSION=1.95

# 1. cargo-chef computes a dependency-only recipe so dependencies are cached in their own layer.
FROM rust:${RUST_VERSION}-slim-bookworm AS chef
WORKDIR /src
RUN cargo install cargo-chef --locked --version 0.1.78

FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

# 2. Build dependencies (cached until Cargo.toml/Cargo.lock change), then the binary.
FROM chef AS build
COPY --from=planner /src/recipe.json recipe.json
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    cargo chef cook --release --locked --recipe-path recipe.json --bin tickwire
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    cargo build --release --locked --bin tickwire \
    && install -D -m 0755 target/release/tickwire /out/usr/local/bin/tickwire \
    && install -D -m 0644 config/server.toml /out/etc/tickwire/server.toml \
    && install -d -m 0700 /out/var/lib/tickwire

# 3. Runtime: distroless glibc image of the same Debian release as the builder, non-root.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/usr/local/bin/tickwire /usr/local/bin/tickwire
COPY --from=build /out/etc/tickwire /etc/tickwire
COPY --from=build --chown=65532:65532 /out/var/lib/tickwire /var/lib/tickwire
# The key file (tickwire.key) is created here on first start; mount a volume or a secret to keep
# it, and give the same key to whatever mints connect tokens.
WORKDIR /var/lib/tickwire
USER 65532:65532
EXPOSE 7777/udp 7777/tcp 9464/tcp
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
    CMD ["/usr/local/bin/tickwire", "healthcheck", "--addr", "127.0.0.1:9464"]
ENTRYPOINT ["/usr/local/bin/tickwire"]
CMD ["serve", "--config", "/etc/tickwire/server.toml", "--bind", "0.0.0.0:7777", "--metrics-bind", "0.0.0.0:9464"]
