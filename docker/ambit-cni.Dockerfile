# ambit-cni: the CNI plugin and its node installer. Build from the repository root:
#   docker build -f docker/ambit-cni.Dockerfile -t ghcr.io/ambit-mesh/ambit-cni:0.1.0 .
# The installer copies the binary onto the node, where the kubelet's container runtime runs it
# with the host's libraries, so it is linked statically (musl) to run on any node OS.
FROM docker.io/library/rust:1.95-bookworm AS build
RUN rustup target add x86_64-unknown-linux-musl \
 && apt-get update && apt-get install -y --no-install-recommends musl-tools \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p ambit-cni --target x86_64-unknown-linux-musl \
 && install -D target/x86_64-unknown-linux-musl/release/ambit-cni /out/ambit-cni

FROM gcr.io/distroless/static-debian12
COPY --from=build /out/ambit-cni /ambit-cni
ENTRYPOINT ["/ambit-cni"]
