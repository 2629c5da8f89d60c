FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md* ./
COPY pipeline ./pipeline
RUN pip install --no-cache-dir .
# the worker's HTTP API (GEO_WEB_PORT); bind it beyond loopback with GEO_WEB_HOST=0.0.0.0
EXPOSE 6066
CMD ["geo-pipeline", "worker"]
