# syntax=docker/dockerfile:1.7
#
# One image with every Ymera binary; the container command picks the program:
#   ymera                  CLI (`ymera migrate`, client commands)
#   ymera-communication    ymera-config    ymera-drafting
#   ymera-code-analysis    ymera-security
#
#   docker build -t ymera:local .
#   docker run --rm ymera:local ymera --help
#
# Stages: chef (toolchain + cargo-chef) -> planner (dependency recipe from the
# manifests) -> builder (dependencies cooked in their own layer, then the
# workspace) -> runtime (distroless, no shell, no package manager, non-root).
# Edits to sources rebuild only the last builder layer; the dependency layer
# is reused until Cargo.toml/Cargo.lock change.

# Must be >= workspace.package.rust-version (Cargo.toml). Builder and runtime
# are both Debian 12 (bookworm) so the glibc the binaries link against exists
# at run time.
ARG RUST_VERSION=1.95
ARG DEBIAN_SUITE=bookworm

FROM rust:${RUST_VERSION}-slim-${DEBIAN_SUITE} AS chef
# g++ and pkg-config only for -sys/C crates (tree-sitter grammars build C
# with the `cc` crate). TLS is rustls everywhere: no OpenSSL headers needed.
RUN apt-get update \
 && apt-get install -y --no-install-recommends g++ pkg-config \
 && rm -rf /var/lib/apt/lists/*
RUN cargo install cargo-chef --locked --version ^0.1
WORKDIR /src

FROM chef AS planner
COPY . .
# recipe.json holds only what affects dependency builds (manifests, lockfile,
# targets), so it is byte-identical across source-only changes.
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS builder
ENV CARGO_TERM_COLOR=never \
    CARGO_INCREMENTAL=0
COPY --from=planner /src/recipe.json recipe.json
# Dependency layer. The registry is a BuildKit cache mount shared by both
# cargo runs; the compiled dependencies land in target/ inside this layer.
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    cargo chef cook --release --locked --recipe-path recipe.json
COPY . .
# The binaries named explicitly: a missing one fails the build. Migrations are
# embedded in `ymera` and the services at compile time (sqlx::migrate!).
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    cargo build --release --locked \
      --bin ymera \
      --bin ymera-communication \
      --bin ymera-config \
      --bin ymera-drafting \
      --bin ymera-code-analysis \
      --bin ymera-security \
      --bin ymera-gateway \
 && mkdir -p /out \
 && for bin in ymera ymera-communication ymera-config ymera-drafting ymera-code-analysis ymera-security ymera-gateway; do \
      install -m 0755 "target/release/$bin" "/out/$bin"; \
    done

# Runtime: glibc + libgcc + CA certificates + tzdata, nothing else (no shell,
# no package manager, no compilers). The :nonroot tag runs as uid/gid 65532.
FROM gcr.io/distroless/cc-debian12:nonroot AS runtime
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="ymera" \
      org.opencontainers.image.description="Ymera agent microservices and CLI" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=builder /out/ /usr/local/bin/
# Container defaults; every setting can be overridden by the orchestrator
# (deploy/ENVIRONMENT.md lists them all).
ENV YMERA_HTTP_ADDR=0.0.0.0:8080 \
    YMERA_LOG_FORMAT=json
# /health (liveness), /ready (readiness), /metrics (Prometheus).
EXPOSE 8080
# Numeric so Kubernetes can verify runAsNonRoot without resolving names.
USER 65532:65532
# No HEALTHCHECK: the image has no shell or HTTP client on purpose. Kubernetes
# probes /health and /ready over HTTP; compose relies on depends_on ordering
# and restart policies (see docker-compose.yml).
# The services handle SIGTERM themselves (drain NATS subscriptions, then exit).
STOPSIGNAL SIGTERM
CMD ["ymera", "--help"]
