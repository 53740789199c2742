# The kit's services (capture, router, HTTP API) for docker-compose.yaml; not the embedded stack.
# Build context: the repository (see .dockerignore). The command is chosen by compose.
FROM python:3.11.14-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
# The package (editable, so it finds data/) and its dependencies at the pinned versions;
# the notebook stack and test tools of requirements.txt are left out.
COPY requirements.txt pyproject.toml README.md ./
COPY cdc_kit ./cdc_kit
COPY data ./data
RUN pip install --constraint requirements.txt --editable .

# An unprivileged user; its home keeps the capture's heartbeat file.
RUN useradd --create-home --uid 1000 cdckit
USER cdckit
ENV CDC_KIT_MODE=docker \
    CDC_KIT_HOME=/home/cdckit/state

CMD ["python", "-m", "cdc_kit", "status"]
