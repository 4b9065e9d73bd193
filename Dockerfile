# The operator's image: the operator package and its console scripts in a virtual environment,
# built in one stage and copied into a slim one; the lab (operator/gelu_lab) stays out.
# Build: docker build -t gelu-rollout:0.1.0 .
ARG PYTHON_IMAGE=python:3.11-slim

# Both stages start from the same image, so the venv's interpreter link stays valid.
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
WORKDIR /src
# The top-level pyproject.toml packages gelu_rollout* only: the lab is its own distribution.
COPY pyproject.toml README.md ./
COPY operator/gelu_rollout ./operator/gelu_rollout
# A plain (not editable) install, compiled to bytecode here: the root file system is read-only
# at run time.
RUN /opt/venv/bin/pip install . && /opt/venv/bin/pip uninstall --yes pip

FROM ${PYTHON_IMAGE}
RUN groupadd --gid 10001 gelu \
    && useradd --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin gelu
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
# Numeric, so a pod's runAsNonRoot can check it without reading /etc/passwd.
USER 10001:10001
# The operator's metrics and Kopf's /healthz (--metrics-port, --liveness-port).
EXPOSE 8080 8081
ENTRYPOINT ["gelu-rollout", "run"]
CMD ["--prometheus-url", "http://prometheus-operated.monitoring.svc:9090"]
