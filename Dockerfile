# syntax=docker/dockerfile:1.7
#
# The ferry container image: one static (musl) binary on distroless/static, running as the
# non-root user 65532, with the cache on a volume at /var/lib/ferry.
#
#   docker build -t ferry:dev .
#   docker run --rm -p 5000:5000 -v ferry-data:/var/lib/ferry ferry:dev
#   docker run --rm -p 5000:5000 -v ferry-data:/var/lib/ferry \
#       -v $PWD/ferry.yaml:/etc/ferry/ferry.yaml:ro ferry:dev          # your own config
#
# Needs BuildKit (the default builder of Docker 23+, and of buildah/podman build) for the cache
# mounts below. See docs/operations.md, "Container image".

# Rust version: the workspace's rust-version (Cargo.toml); every locked dependency builds with it.
ARG RUST_VERSION=1.91

# ---- build: Alpine's Rust targets musl natively, so the binary is statically linked ----------
FROM docker.io/library/rust:${RUST_VERSION}-alpine AS build

# C toolchain for aws-lc-sys (rustls' crypto provider) and ring; nothing else links C.
# hadolint ignore=DL3018
RUN apk add --no-cache musl-dev gcc g++ make cmake perl linux-headers binutils

WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY crates ./crates
COPY src ./src

# The registry, git and target directories are BuildKit caches, so a rebuild after a source
# change recompiles only ferry's own crates. The binary leaves the cached target dir in the same
# step. --locked: exactly the dependency versions the project tested.
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked --bin ferry \
 && install -D -m 0755 target/release/ferry /out/usr/local/bin/ferry

# Fail the build if the binary is not static (no NEEDED entries: no libc to load at run time).
RUN readelf -d /out/usr/local/bin/ferry > /tmp/dynamic \
 && if grep NEEDED /tmp/dynamic; then echo "ferry is dynamically linked"; exit 1; fi \
 && /out/usr/local/bin/ferry --version

# The default configuration (deploy/systemd/ferry.yaml: the public registries, cache on the
# volume, the same paths as a systemd install), checked by the binary itself, and the data
# directory the non-root user owns (distroless has no shell to create it later).
COPY deploy/systemd/ferry.yaml /out/etc/ferry/ferry.yaml
RUN mkdir -p /out/var/lib/ferry \
 && /out/usr/local/bin/ferry check-config /out/etc/ferry/ferry.yaml

# ---- runtime: no shell, no package manager; CA certificates for upstream TLS, tzdata --------
FROM gcr.io/distroless/static-debian12:nonroot

LABEL org.opencontainers.image.title="ferry" \
      org.opencontainers.image.description="A container registry mirror: proxies, caches, pre-syncs and copies OCI images" \
      org.opencontainers.image.licenses="Apache-2.0"

COPY --from=build /out/usr/local/bin/ferry /usr/local/bin/ferry
COPY --from=build /out/etc/ferry/ferry.yaml /etc/ferry/ferry.yaml
COPY --from=build --chown=65532:65532 /out/var/lib/ferry /var/lib/ferry

# A relative storage root in a mounted config (the default is ./ferry-data) lands on the volume.
WORKDIR /var/lib/ferry
VOLUME ["/var/lib/ferry"]
# Numeric, so Kubernetes' runAsNonRoot can verify it without /etc/passwd.
USER 65532:65532
EXPOSE 5000
# SIGTERM drains: in-flight responses get server.shutdown_timeout (30s) to finish. Give the
# container runtime at least that much (docker stop -t 35, terminationGracePeriodSeconds: 40).
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/ferry"]
CMD ["serve", "--config", "/etc/ferry/ferry.yaml"]
