FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md* ./
COPY pipeline ./pipeline
RUN pip install --no-cache-dir .
CMD ["geo-pipeline", "worker"]
