FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml constraints.txt README.md* ./
COPY pipeline ./pipeline
# the tested set of versions (constraints.txt): Faust/aiokafka internals are hooked, so no drift
RUN pip install --no-cache-dir -c constraints.txt .
# the worker's HTTP API (GEO_WEB_PORT); bind it beyond loopback with GEO_WEB_HOST=0.0.0.0
EXPOSE 6066
CMD ["geo-pipeline", "worker"]
