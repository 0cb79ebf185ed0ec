# cloudpki: the portal and forwarder in one image. Runs against a managed PostgreSQL
# (DATABASE_URL) — the embedded database is for single-machine use, not for containers.
#
#   docker build -t cloudpki .
#   docker run -e DATABASE_URL=postgres://… -e CLOUDPKI_MASTER_KEY=… -p 8080:8080 cloudpki
#   docker run … cloudpki worker          # forwarder-only processes, as many as needed

# --- build -----------------------------------------------------------------------------
FROM rust:1-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends libssl-dev pkg-config make zlib1g-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock build.rs ./
COPY src ./src
COPY migrations ./migrations
COPY templates ./templates
COPY static ./static
COPY benches ./benches
# The query macros compile from the committed offline data, with no database at build time.
COPY .cargo ./.cargo
COPY .sqlx ./.sqlx
RUN cargo build --release --locked --bin cloudpki

# --- run -------------------------------------------------------------------------------
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates libssl3 zlib1g \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /nonexistent --shell /usr/sbin/nologin cloudpki
COPY --from=build /src/target/release/cloudpki /usr/local/bin/cloudpki
# Templates are compiled in; static files are served from the path they were built at.
COPY --from=build /src/static /src/static
USER 10001:10001
ENV CLOUDPKI_LISTEN=0.0.0.0:8080 \
    CLOUDPKI_LOG_FORMAT=json \
    CLOUDPKI_DATA_DIR=/tmp/cloudpki
EXPOSE 8080
# Probes: GET /healthz (alive) and /readyz (database reachable).
ENTRYPOINT ["/usr/local/bin/cloudpki"]
CMD ["serve"]
