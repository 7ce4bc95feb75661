# syntax=docker/dockerfile:1
# Bakes your own kxform plugin package into the kxform image. Run it with your plugin project as
# the build context (the directory with its pyproject.toml, which registers the plugin in the
# `kxform.transformers` entry-point group):
#
#   docker build -f /path/to/kxform/docker/plugin.Dockerfile \
#       --build-arg KXFORM_IMAGE=registry.example.com/kxform:0.1.0 \
#       -t registry.example.com/kxform-myplugin:0.1.0 path/to/my-plugin
#
# The plugin is installed with the versions kxform pins; the build fails if it pulls in torch.

ARG KXFORM_IMAGE=kxform:0.1.0
ARG PYTHON_IMAGE=python:3.11-slim-bookworm
# checkov:skip=CKV_DOCKER_7: the FROMs are the pinned ARG defaults above; checkov does not expand ARGs
# checkov:skip=CKV_DOCKER_2: the final stage inherits the kxform image's HEALTHCHECK (docker/Dockerfile)

FROM ${PYTHON_IMAGE} AS plugin-wheel
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY . .
RUN python -m pip wheel --no-deps --wheel-dir /wheels .

FROM ${KXFORM_IMAGE}
COPY --from=plugin-wheel /wheels /tmp/plugin-wheels
# The venv belongs to root, as in the base image; install as root, then drop back to the runtime user.
USER 0:0
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN /opt/kxform/install-wheels.sh /tmp/plugin-wheels \
    && rm -rf /tmp/plugin-wheels
USER 10001:10001
