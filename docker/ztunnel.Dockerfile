# ztunnel: the node agent. Build from the repository root:
#   docker build -f docker/ztunnel.Dockerfile -t ghcr.io/ambit-mesh/ztunnel:0.1.0 .
FROM docker.io/library/rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p ztunnel \
 && install -D target/release/ztunnel /out/ztunnel

# Not distroless: when ztunnel captures a pod itself (a namespace labelled after its pods
# started, or a restart) it installs the redirect rules with nft or iptables, so those tools
# ship with it. Nothing else is added.
FROM docker.io/library/debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends nftables iptables ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /out/ztunnel /usr/local/bin/ztunnel
ENTRYPOINT ["/usr/local/bin/ztunnel"]
