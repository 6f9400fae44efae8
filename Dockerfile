# pullguard container image: a static binary on distroless, running as UID 65532.
#
#   docker build -t pullguard:0.1.0 .           # the tag deploy/base uses
#   docker run --rm -p 8443:8443 -p 8080:8080 pullguard:0.1.0
#       (`serve` without --tls-cert/--tls-key: a generated certificate for localhost)
#
# Why a static musl binary (and not glibc + distroless/cc):
# - pullguard's TLS is rustls with ring: pure Rust plus a little C/asm that only needs a C
#   compiler at build time (musl-gcc from musl-tools). Nothing links OpenSSL or any other
#   system library, so the binary can be fully static.
# - A static binary does not depend on the runtime image's libc: no coupling between the
#   builder's glibc and the runtime's glibc (a glibc build made on a newer Debian fails to
#   start on an older distroless/cc), no NSS modules, and it also runs on `scratch`.
# - The libc that is linked in is Rust's self-contained musl (1.2.4 or later), whose resolver
#   falls back to TCP for large DNS answers and honours the pod's search domains.
# - Mozilla's root certificates are compiled in (webpki-roots), so the image needs no CA bundle
#   (distroless/static ships one anyway).
# The build runs on the architecture it builds for: `uname -m` picks the Rust target
# (x86_64-unknown-linux-musl on amd64, aarch64-unknown-linux-musl on arm64, e.g. with
# `docker buildx build --platform linux/arm64`); these steps were run on amd64.

FROM rust:1.95.0-slim-trixie AS build

# musl-gcc compiles ring's C code for the musl target. The pin is Debian trixie's current
# version; when a point release replaces it, look it up with `apt-cache policy musl-tools`
# in the builder image, or pass --build-arg MUSL_TOOLS_VERSION=...
ARG MUSL_TOOLS_VERSION=1.2.5-3.1~deb13u1
RUN apt-get update \
    && apt-get install -y --no-install-recommends "musl-tools=${MUSL_TOOLS_VERSION}" \
    && rm -rf /var/lib/apt/lists/*

# TARGET_CC: the C compiler cc-rs uses for the (cross) target; build scripts still use gcc.
# Symbols are stripped from the release binary: it is not debugged inside the image.
ENV TARGET_CC=musl-gcc \
    CARGO_PROFILE_RELEASE_STRIP=symbols \
    CARGO_TERM_COLOR=never
RUN rustup target add "$(uname -m)-unknown-linux-musl"

WORKDIR /src

# Dependency layer: the manifests, the lock file and stub sources only. This layer (every
# compiled dependency) is rebuilt only when a Cargo.toml or Cargo.lock changes, not when
# pullguard's own sources do (its core crate included). `tests` and `bench` are workspace members, so their manifests (and
# stub sources) must exist for Cargo to load the workspace; pullguard depends on neither.
COPY Cargo.toml Cargo.lock ./
COPY webhook/Cargo.toml webhook/Cargo.toml
COPY webhook/core/Cargo.toml webhook/core/Cargo.toml
COPY tests/Cargo.toml tests/Cargo.toml
COPY bench/Cargo.toml bench/Cargo.toml
RUN mkdir -p webhook/src webhook/core/src tests/src bench/src \
    && echo 'fn main() {}' > webhook/src/main.rs \
    && : > webhook/src/lib.rs \
    && : > webhook/core/src/lib.rs \
    && : > tests/src/lib.rs \
    && echo 'fn main() {}' > bench/src/main.rs \
    && cargo build --release --locked -p pullguard --target "$(uname -m)-unknown-linux-musl"

# The real sources. COPY keeps the files' own modification times, which can be older than the
# stubs built above: touch them so that Cargo rebuilds the pullguard crate for certain.
COPY webhook/src webhook/src
COPY webhook/core/src webhook/core/src
RUN find webhook/src webhook/core/src -type f -exec touch {} + \
    && cargo build --release --locked -p pullguard --target "$(uname -m)-unknown-linux-musl" \
    && mkdir -p /out \
    && cp "target/$(uname -m)-unknown-linux-musl/release/pullguard" /out/pullguard \
    && /out/pullguard --version

# Runtime: no shell, no package manager; the `nonroot` variant's user is 65532:65532 and its
# working directory /home/nonroot (where `serve` without --tls-cert writes pullguard-ca.pem).
# Kubernetes probes /livez and /readyz (see deploy/); a Docker HEALTHCHECK would need a shell or
# curl, which distroless does not have, and Kubernetes ignores it anyway.
#checkov:skip=CKV_DOCKER_2:Kubernetes liveness and readiness probes on the admin port replace HEALTHCHECK
FROM gcr.io/distroless/static-debian12:nonroot

LABEL org.opencontainers.image.title="pullguard" \
      org.opencontainers.image.description="Kubernetes validating admission webhook that stops unpullable container images" \
      org.opencontainers.image.licenses="Apache-2.0"

COPY --from=build /out/pullguard /pullguard

USER 65532:65532
WORKDIR /home/nonroot
# 8443: HTTPS, POST /validate. 8080: plain HTTP, /livez, /readyz, /metrics.
EXPOSE 8443 8080
ENTRYPOINT ["/pullguard"]
CMD ["serve"]
