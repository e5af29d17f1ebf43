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
COPY pyproject.toml README.md ./
# Install only the dependencies (from pyproject.toml), so code changes do not bust this layer.
RUN python - <<'PY' > /tmp/requirements.txt
import tomllib
print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]))
PY
RUN /venv/bin/pip install -r /tmp/requirements.txt
COPY relay ./relay
RUN /venv/bin/pip install --no-deps .

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
USER relay
VOLUME ["/data"]
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2).status == 200 else 1)"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["relay"]
CMD ["serve"]
