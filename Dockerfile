# xw-operator image: `docker build -t xw-operator .` (PyPI), or offline with a wheelhouse built on the host
# (hack/build-image.sh --wheelhouse). Works with BuildKit and with the classic builder.
#
# Build arguments:
#   BASE_IMAGE  any Debian-like image with python3 >= 3.11 and its venv module, used for both stages
#               (default: the official slim Python image)
#   WHEELHOUSE  path inside the build context of a directory holding the xw-operator wheel and every
#               dependency wheel (`pip wheel -w DIR .`); then nothing is downloaded. Empty: build the
#               project from source and install dependencies from the package index.
ARG BASE_IMAGE=python:3.11-slim

FROM ${BASE_IMAGE} AS builder
ARG WHEELHOUSE=
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
# .dockerignore keeps this to the package sources, pyproject.toml and the optional wheelhouse.
COPY . .
# One venv at the path it keeps in the final stage (venvs are not relocatable); pip compiles the .pyc files
# here, since the final root filesystem is read-only. pip/setuptools are removed: nothing installs at runtime.
RUN set -eu; \
    python3 -m venv /opt/xw; \
    if [ -n "${WHEELHOUSE}" ]; then \
      [ -d "${WHEELHOUSE}" ] || { echo "WHEELHOUSE=${WHEELHOUSE} is not a directory in the build context" >&2; exit 1; }; \
      /opt/xw/bin/pip install --no-index --find-links "${WHEELHOUSE}" xw-operator; \
    else \
      /opt/xw/bin/pip install .; \
    fi; \
    /opt/xw/bin/pip uninstall -y -q setuptools pip; \
    /opt/xw/bin/xw --version

FROM ${BASE_IMAGE}
LABEL org.opencontainers.image.title="xw-operator" \
      org.opencontainers.image.description="Runs LLM inference engines on any AI accelerator from ModelInstance resources" \
      org.opencontainers.image.licenses="Apache-2.0"
# A fixed numeric non-root user (65532, the distroless "nonroot" id) so Kubernetes' runAsNonRoot can verify it.
RUN echo 'xw:x:65532:65532:xw-operator:/nonexistent:/usr/sbin/nologin' >> /etc/passwd \
 && echo 'xw:x:65532:' >> /etc/group
COPY --from=builder /opt/xw /opt/xw
# HOME on /tmp: the only writable path in the chart's pod (an emptyDir), for anything that wants a home.
ENV PATH=/opt/xw/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    MALLOC_ARENA_MAX=2 \
    HOME=/tmp
USER 65532:65532
WORKDIR /tmp
ENTRYPOINT ["xw", "operator"]
