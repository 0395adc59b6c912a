# The gateway on a slim Python base, as a non-root user.
#   docker build -t gateway . && docker run -p 8080:8080 -v gateway-data:/srv/gateway/data gateway
# Another port: -e GATEWAY_PORT=9000 -p 9000:9000; another config: mount it and set
# GATEWAY_CONFIG to its path. The health check asks the gateway those settings make.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    GATEWAY_HOST=0.0.0.0 GATEWAY_CONFIG=config/gateway.yaml
WORKDIR /srv/gateway

COPY pyproject.toml README.md ./
COPY gateway ./gateway
RUN pip install . && useradd --system --home /srv/gateway --uid 10001 gateway \
    && mkdir -p data && chown gateway data
COPY config ./config

USER gateway
EXPOSE 8080
VOLUME ["/srv/gateway/data"]
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
  CMD ["gateway", "health", "--timeout", "2"]
ENTRYPOINT ["gateway"]
CMD ["serve"]
