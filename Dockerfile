# syntax=docker/dockerfile:1
# stripe-ledger: one image with the three binaries (ingest, projector, replay) and the migrations.
# The command chooses the binary: `docker run IMAGE ingest`, `... projector`, `... replay migrate`.
# Build: docker build -t stripe-ledger .     Compose for local testing: docker-compose.yml.

FROM rust:1.95-bookworm AS build
WORKDIR /src
# Builds read the committed query metadata (.sqlx/), never a live database.
ENV SQLX_OFFLINE=true
COPY . .
# The same release build as scripts/run-local (`cargo build --release --bins`), with the registry
# and the target directory in BuildKit caches so dependencies are rebuilt only when Cargo.lock
# changes.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bins \
 && mkdir -p /out \
 && cp target/release/ingest target/release/projector target/release/replay /out/

FROM debian:bookworm-slim AS runtime
# ca-certificates: outbound TLS (Stripe, the provisioner, SMTP); curl: the health check.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /app --create-home ledger
WORKDIR /app
COPY --from=build /out/ /usr/local/bin/
COPY migrations/ /app/migrations/
COPY catalog.example.toml /app/catalog.example.toml
USER ledger
# In a container the services listen on every interface; HEALTH_PORT is the one /healthz answers
# on (3005 ingest, 3006 projector). The admin listeners (/metrics, the console) listen on 3008 and
# 3007: publish those only to the operators' network, never beside the public ports.
ENV INGEST_ADDR=0.0.0.0:3005 \
    PROJECTOR_ADDR=0.0.0.0:3006 \
    INGEST_ADMIN_ADDR=0.0.0.0:3008 \
    PROJECTOR_ADMIN_ADDR=0.0.0.0:3007 \
    LOG_FORMAT=json \
    HEALTH_PORT=3005
EXPOSE 3005 3006 3007 3008
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
  CMD curl -fsS "http://127.0.0.1:${HEALTH_PORT}/healthz" || exit 1
CMD ["ingest"]
