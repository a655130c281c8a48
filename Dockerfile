# slagate on a CUDA machine: the gateway on vLLM's own CUDA image.
#   docker compose up --build        (see docker-compose.yml and README "Operations")
# The base image brings CUDA, torch and a matching vLLM; the `cuda` extra's `vllm`
# requirement is already met there, so pip only adds the gateway's own dependencies.
ARG VLLM_IMAGE=vllm/vllm-openai:v0.26.0
FROM ${VLLM_IMAGE}

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_BREAK_SYSTEM_PACKAGES=1 \
    HF_HUB_OFFLINE=1

WORKDIR /opt/slagate
COPY pyproject.toml README.md ./
COPY gateway ./gateway
COPY scheduler ./scheduler
COPY engines ./engines
COPY loadtest ./loadtest
RUN python3 -m pip install ".[cuda]"

# The default config; compose mounts deploy/gateway.yaml over it.
COPY deploy/gateway.yaml /etc/slagate/gateway.yaml

EXPOSE 8000
# Liveness only: readiness (/health/ready) stays 503 through engine start and warmup,
# which can take minutes on a large model.
HEALTHCHECK --interval=15s --timeout=3s --start-period=60s --retries=3 \
    CMD ["python3", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/health/live', timeout=2).status != 200)"]
# SIGTERM drains in-flight requests (server.drain_timeout_s) before exiting 0.
STOPSIGNAL SIGTERM
# The base image's entrypoint is vLLM's own server: replace it.
ENTRYPOINT ["python3", "-m", "gateway"]
CMD ["--config", "/etc/slagate/gateway.yaml", "--host", "0.0.0.0"]
