FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml constraints.txt README.md* ./
COPY pipeline ./pipeline
# the tested set of versions (constraints.txt): Faust/aiokafka internals are hooked, so no drift
RUN pip install --no-cache-dir -c constraints.txt .
# an unprivileged user that owns only its state: the code stays root's, so the worker cannot rewrite it;
# an anonymous volume mounted at /data (docker-compose.yml) takes this directory's owner
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin geo \
    && mkdir -p /data && chown geo:geo /data
ENV GEO_DATA_DIR=/data
USER geo
# the worker's HTTP API (GEO_WEB_PORT); bind it beyond loopback with GEO_WEB_HOST=0.0.0.0
EXPOSE 6066
CMD ["geo-pipeline", "worker"]
