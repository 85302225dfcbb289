# syntax=docker/dockerfile:1
# Quarterdeck container image: `docker build -t your-registry/quarterdeck:0.1.0 .`
#
# Stage 1 builds wheels for Quarterdeck and all of its dependencies (compilers live only here);
# stage 2 installs the pinned Claude Code CLI from the npm registry (like `make deps`); stage 3
# installs those wheels offline into a clean slim image, adds the CLI, and runs as a non-root user.

ARG PYTHON_VERSION=3.11
ARG CLAUDE_CODE_VERSION=2.1.197

FROM python:${PYTHON_VERSION}-slim AS builder
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip wheel --wheel-dir /wheels .

# The CLI that claude-code agent types run. The npm package ships a native binary (its postinstall
# links the platform package's binary to bin/claude.exe) linked only against glibc, so the runtime
# image needs no Node. The platform package is removed after: bin/claude.exe is the same file,
# and copying both would store it twice.
FROM node:20-bookworm-slim AS claude-code
ARG CLAUDE_CODE_VERSION
RUN npm install --no-audit --no-fund --loglevel=error --prefix /opt/claude-code \
        @anthropic-ai/claude-code@${CLAUDE_CODE_VERSION} \
    && rm -rf /opt/claude-code/node_modules/@anthropic-ai/claude-code-* \
    && /opt/claude-code/node_modules/.bin/claude --version

FROM python:${PYTHON_VERSION}-slim AS runtime
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    QUARTERDECK_HTTP_HOST=0.0.0.0 \
    QUARTERDECK_HTTP_PORT=8080 \
    QUARTERDECK_METRICS_PORT=9090 \
    QUARTERDECK_DATA_DIR=/app/data \
    QUARTERDECK_CLAUDE_CODE_PATH=/opt/claude-code/node_modules/.bin/claude \
    MPLCONFIGDIR=/tmp/matplotlib \
    XDG_CACHE_HOME=/tmp/cache
# git: workspaces record their baseline and diffs with it. bubblewrap: run_command's strong
# sandbox (with util-linux's prlimit and setpriv, already in the base image); socat: the bridge
# from a sandboxed command to the egress proxy. pango, harfbuzz-subset, fontconfig and DejaVu:
# what WeasyPrint loads to print the monthly report as PDF (matplotlib's and fontconfig's caches
# go to /tmp, writable under the manifests' read-only root filesystem).
RUN apt-get update \
    && apt-get install -y --no-install-recommends git bubblewrap socat \
        libpango-1.0-0 libpangoft2-1.0-0 libharfbuzz-subset0 libfontconfig1 fonts-dejavu-core \
    && rm -rf /var/lib/apt/lists/*
RUN groupadd --system --gid 10001 quarterdeck \
    && useradd --system --uid 10001 --gid quarterdeck --home-dir /app --shell /usr/sbin/nologin quarterdeck \
    && mkdir -p /app/config /app/data /app/logs \
    && chown -R quarterdeck:quarterdeck /app
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    pip install --no-index --find-links /wheels quarterdeck
COPY --from=claude-code /opt/claude-code /opt/claude-code
WORKDIR /app
USER 10001:10001
EXPOSE 8080 9090
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('QUARTERDECK_HTTP_PORT', '8080'), timeout=4)"]
ENTRYPOINT ["quarterdeck"]
CMD ["up"]
