FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY mcp_gateway ./mcp_gateway
RUN pip install --no-cache-dir . \
 && useradd --system --uid 10001 --home /app gateway \
 && mkdir -p /data && chown gateway /data
USER gateway
EXPOSE 8080
HEALTHCHECK --interval=15s --timeout=3s --retries=3 \
  CMD python -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2).status == 200 else 1)"
ENTRYPOINT ["mcp-gateway", "serve"]
CMD ["--config", "/config/gateway.toml"]
