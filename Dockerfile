# syntax=docker/dockerfile:1
# relay: a verified, durable relay for Clerk (Svix) webhooks.
#   docker build -t relay .
#   docker run -p 8000:8000 -v relay-data:/data \
#     -v "$PWD/rules.yaml:/app/rules.yaml:ro" -v "$PWD/templates:/app/templates:ro" \
#     -e CLERK_WEBHOOK_SIGNING_SECRET -e RESEND_API_KEY -e SLACK_WEBHOOK_URL relay

# --- build: dependencies first (a cached layer), then relay itself -------------------------
FROM python:3.11-slim AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
RUN python -m venv /venv
# The dependencies first, exactly as locked (versions and hashes: an image does not change with
# the day it is built), so code changes do not bust this layer. requirements.lock is made from
# pyproject.toml by `uv pip compile` (docs/development.md says how to update it).
COPY requirements.lock ./
RUN /venv/bin/pip install --require-hashes --no-deps -r requirements.lock
COPY pyproject.toml README.md ./
COPY relay ./relay
RUN /venv/bin/pip install --no-deps --no-build-isolation .

# --- runtime: the venv, the default config, a non-root user -------------------------------
FROM python:3.11-slim
RUN useradd --system --uid 10001 --home-dir /app relay \
    && mkdir -p /app /data && chown relay /data
COPY --from=build /venv /venv
WORKDIR /app
COPY rules.yaml ./rules.yaml
COPY templates ./templates
COPY samples ./samples
ENV PATH=/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    RELAY_HOST=0.0.0.0 \
    RELAY_PORT=8000 \
    RELAY_DATABASE_URL=sqlite:////data/relay.db \
    RELAY_LOG_FORMAT=json
USER 10001
VOLUME ["/data"]
EXPOSE 8000
# Asks /healthz where the entrypoint listens: `relay serve` on $RELAY_PORT, `relay worker` on 8001
# (or either's --port), read from PID 1's command line.
HEALTHCHECK --interval=30s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-m", "relay.healthcheck"]
# Docker kills 10 s after SIGTERM (stop_grace_period); relay's default grace
# (RELAY_SHUTDOWN_GRACE_S=8) ends before that. Raise both together.
STOPSIGNAL SIGTERM
ENTRYPOINT ["relay"]
CMD ["serve"]
