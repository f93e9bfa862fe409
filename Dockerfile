# syntax=docker/dockerfile:1
#
# Images of the operator and the node agent, built from one Cargo workspace in one builder.
#
#   docker build --target operator   -t ghcr.io/x0tta6bl4/operator:0.1.0 .
#   docker build --target node-agent -t ghcr.io/x0tta6bl4/node-agent:0.1.0 .
#
# Layer caching: the `planner` stage reduces the workspace to its manifests, Cargo.lock and
# stub sources, and the builder compiles every dependency from that skeleton first. Editing
# Rust sources rebuilds the workspace's own crates and nothing else; dependencies are rebuilt
# only when a manifest or Cargo.lock changes. The skeleton is found with `find`, not from a
# list of paths, so adding a workspace member needs no change here.

ARG RUST_IMAGE=rust:1-bookworm

FROM ${RUST_IMAGE} AS planner
WORKDIR /src
COPY . .
# The skeleton: Cargo.lock, every Cargo.toml, and every .rs file replaced by the same stub, so
# that all targets the manifests declare or cargo discovers exist. `fn main() {}` stands in for
# binaries, libraries, tests, benches and build scripts alike. Editing a source file leaves the
# skeleton unchanged; only adding, moving or removing one changes it. Cargo.lock is required:
# the builds below use --locked.
RUN set -eu; \
    mkdir -p /skeleton; \
    cp Cargo.lock /skeleton/; \
    find . \( -path ./target -o -path ./.cache -o -path ./.git \) -prune -o -name Cargo.toml -print | \
        while read -r manifest; do \
            mkdir -p "$(dirname "/skeleton/$manifest")"; \
            cp "$manifest" "/skeleton/$manifest"; \
        done; \
    find . \( -path ./target -o -path ./.cache -o -path ./.git \) -prune -o -name '*.rs' -print | \
        while read -r source; do \
            mkdir -p "$(dirname "/skeleton/$source")"; \
            echo '#![allow(dead_code)] fn main() {}' > "/skeleton/$source"; \
        done

FROM ${RUST_IMAGE} AS builder
# clang and llvm compile the eBPF programs (C, -target bpf) against libbpf's headers;
# cmake and libclang build liboqs (ML-KEM-768, ML-DSA-65) and generate its Rust bindings.
RUN apt-get update \
    && apt-get install -y --no-install-recommends clang llvm libclang-dev libbpf-dev cmake \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
ENV CARGO_TERM_COLOR=never

# 1. Dependencies only, from the skeleton: cached until a manifest or Cargo.lock changes.
COPY --from=planner /skeleton/ ./
RUN cargo build --release --locked -p x0tta6bl4-operator -p x0tta6bl4-node-agent

# 2. The real sources. COPY keeps the files' modification times, which can be older than the
# stub builds above; touching them makes cargo rebuild every workspace crate from source.
COPY . .
RUN find . \( -path ./target -o -path ./.cache \) -prune -o -name '*.rs' -exec touch {} + \
    && cargo build --release --locked -p x0tta6bl4-operator -p x0tta6bl4-node-agent \
    && install -D -m 0755 target/release/x0tta6bl4-operator /out/x0tta6bl4-operator \
    && install -D -m 0755 target/release/x0tta6bl4-node-agent /out/x0tta6bl4-node-agent

# The operator: a static-ish Rust binary on distroless (glibc, libgcc, CA certificates, no
# shell), as uid/gid 65532. It needs no capabilities and no writable root filesystem.
FROM gcr.io/distroless/cc-debian12:nonroot AS operator
COPY --from=builder /out/x0tta6bl4-operator /x0tta6bl4-operator
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/x0tta6bl4-operator"]
CMD ["run"]

# The node agent: runs as root on the host network (it loads eBPF programs and attaches them
# with tc), with iproute2 for inspecting and cleaning up tc state on the node.
FROM debian:bookworm-slim AS node-agent
RUN apt-get update \
    && apt-get install -y --no-install-recommends iproute2 ca-certificates \
    && rm -rf /var/lib/apt/lists/*
COPY --from=builder /out/x0tta6bl4-node-agent /usr/local/bin/x0tta6bl4-node-agent
ENTRYPOINT ["/usr/local/bin/x0tta6bl4-node-agent"]
CMD ["--config", "/etc/x0tta6bl4/agent.yaml"]
