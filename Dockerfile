FROM python:3.11-slim
RUN apt-get update && apt-get install -y --no-install-recommends xmlsec1 curl && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY pyproject.toml README.md ./
COPY domain domain
COPY adapters adapters
COPY keys keys
COPY routing routing
COPY gateway gateway
COPY simulators simulators
COPY bench bench
COPY schemas schemas
RUN pip install --no-cache-dir -e .
RUN useradd --system --home /var/lib/epix epix && mkdir -p /var/lib/epix && chown epix /var/lib/epix
USER epix
EXPOSE 8440
ENTRYPOINT ["epix"]
CMD ["serve", "--config", "/etc/epix/gateway.toml"]
