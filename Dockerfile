# The gateway on a slim Python base, as a non-root user.
#   docker build -t gateway . && docker run -p 8080:8080 -v gateway-data:/srv/gateway/data gateway
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    GATEWAY_HOST=0.0.0.0
WORKDIR /srv/gateway

COPY pyproject.toml README.md ./
COPY gateway ./gateway
RUN pip install . && useradd --system --home /srv/gateway --uid 10001 gateway \
    && mkdir -p data && chown gateway data
COPY config ./config

USER gateway
EXPOSE 8080
VOLUME ["/srv/gateway/data"]
HEALTHCHECK --interval=30s --timeout=3s --start-period=20s --retries=3 \
  CMD python -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2)" || exit 1
ENTRYPOINT ["gateway"]
CMD ["serve", "--config", "config/gateway.yaml"]
