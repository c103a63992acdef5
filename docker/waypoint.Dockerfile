# waypoint: the L7 proxy (waypoints, and `waypoint controller`, which provisions them). Build
# from the repository root:
#   docker build -f docker/waypoint.Dockerfile -t ghcr.io/ambit-mesh/waypoint:0.1.0 .
FROM docker.io/library/rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p waypoint \
 && install -D target/release/waypoint /out/waypoint

# Distroless: glibc and nothing else; a waypoint needs no tools and no privileges.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/waypoint /waypoint
USER nonroot
ENTRYPOINT ["/waypoint"]
