# syntax=docker/dockerfile:1
# mcp-gateway: a slim image that runs as a non-root user and works with a read-only root filesystem.
# The only place it writes is /data (the SQLite audit log when [audit] url is not set): mount a volume there.
#
#   docker build -t mcp-gateway .
#   docker run --read-only -v mcp-gateway-data:/data -v "$PWD/config:/config:ro" -p 8080:8080 mcp-gateway
#
# The configuration is read from /config/gateway.toml (bind-mount it, or a Kubernetes ConfigMap); set
# `host = "0.0.0.0"` there so the gateway is reachable from outside its container.

ARG PYTHON_IMAGE=python:3.11-slim

# --- build: resolve and install the project and its dependencies into a self-contained venv ------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
WORKDIR /src
COPY pyproject.toml README.md ./
COPY mcp_gateway ./mcp_gateway
RUN /opt/venv/bin/pip install --no-compile . \
 # Byte-compile once, here: the runtime's root filesystem is read-only, so Python cannot cache .pyc there.
 && /opt/venv/bin/python -m compileall -q /opt/venv

# --- runtime: the venv, the example upstream for the compose demo, nothing else ------------------------
FROM ${PYTHON_IMAGE} AS runtime
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
RUN groupadd --system --gid 10001 gateway \
 && useradd --system --uid 10001 --gid gateway --home-dir /data --no-create-home --shell /usr/sbin/nologin gateway \
 && mkdir -p /data /config \
 && chown gateway:gateway /data
COPY --from=build /opt/venv /opt/venv
# The example upstream (`python /app/examples/everything_server.py`), used by deploy/compose.yaml.
COPY examples/everything_server.py /app/examples/everything_server.py
WORKDIR /data
VOLUME ["/data"]
USER 10001:10001
EXPOSE 8080
# /healthz answers 200 while the process serves; python, because slim images have no curl. Another port:
# set MCP_GATEWAY_HEALTH_URL.
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
  CMD ["python", "-c", "import os, sys, urllib.request; url = os.environ.get('MCP_GATEWAY_HEALTH_URL', 'http://127.0.0.1:8080/healthz'); sys.exit(0 if urllib.request.urlopen(url, timeout=2).status == 200 else 1)"]
ENTRYPOINT ["mcp-gateway"]
CMD ["serve", "--config", "/config/gateway.toml"]
