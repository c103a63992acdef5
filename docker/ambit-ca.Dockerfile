# ambit-ca: the mesh CA. Build from the repository root:
#   docker build -f docker/ambit-ca.Dockerfile -t ghcr.io/ambit-mesh/ambit-ca:0.1.0 .
FROM docker.io/library/rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p ambit-ca \
 && install -D target/release/ambit-ca /out/ambit-ca

# Distroless: glibc and nothing else; runs as the image's non-root user.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/ambit-ca /ambit-ca
USER nonroot
ENTRYPOINT ["/ambit-ca"]
