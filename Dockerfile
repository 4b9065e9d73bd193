# The operator's image: the operator package and its console scripts; the lab stays out.
# Build: docker build -t gelu-rollout:0.1.0 .
FROM python:3.11-slim

WORKDIR /app
COPY pyproject.toml README.md ./
COPY operator/gelu_rollout ./operator/gelu_rollout
RUN pip install --no-cache-dir . && useradd --uid 10001 --no-create-home gelu

USER 10001
EXPOSE 8080 8081
ENTRYPOINT ["gelu-rollout", "run"]
CMD ["--prometheus-url", "http://prometheus-operated.monitoring.svc:9090"]
