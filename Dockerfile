# syntax=docker/dockerfile:1.7
#
# guard: OpenAI-compatible safety proxy in front of vLLM.
#
#   docker build -t guard:latest .
#   docker run --rm -p 8080:8080 -e GUARD_UPSTREAM=http://vllm:8000 guard:latest
#
# GUARD_UPSTREAM (the vLLM base URL) is required. The default risk model ships inside the wheel
# (guard/data/default_model.npz). Mount a policy at /etc/guard/guard.yaml and pass
# `serve --config /etc/guard/guard.yaml ...` to override the defaults.
# tests/deploy/test_dockerfile.py runs the same wheel build + install outside a container.

ARG PYTHON_IMAGE=python:3.11-slim

# ---- builder: a wheel of guard and of every dependency ------------------------------------------
FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY guard/ guard/
RUN pip wheel --wheel-dir /wheels .

# ---- runtime: only the installed wheels -------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="guard" \
      org.opencontainers.image.description="Inference-time safety guard for LLM serving (OpenAI-compatible proxy in front of vLLM)" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Install from the builder's wheels without copying them into a layer (no network needed here).
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    pip install --no-index --find-links /wheels guard \
    && groupadd --system --gid 10001 guard \
    && useradd --system --uid 10001 --gid 10001 --home-dir /home/guard --create-home \
       --shell /usr/sbin/nologin guard \
    && mkdir -p /etc/guard /var/log/guard \
    && chown guard:guard /var/log/guard

USER 10001:10001
WORKDIR /home/guard
EXPOSE 8080

HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8080/health', timeout=2).status == 200 else 1)"]

ENTRYPOINT ["guard"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8080"]
