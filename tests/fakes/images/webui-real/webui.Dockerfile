# The REAL Open WebUI (PyPI `open-webui`, version pinned in tests/fakes/webui_real.py), on the
# debootstrap base from tests/fakes/images.py. Not named `Dockerfile` on purpose: images.py
# builds every folder with a Dockerfile from that folder alone, and this one needs a context
# that tests/fakes/webui_real.py assembles under /var/cache: this file plus `site-packages/`,
# the result of `pip install --target` on the host (containers here cannot reach PyPI).
ARG BASE
FROM ${BASE}

COPY site-packages /opt/open-webui/site-packages
COPY open-webui /usr/local/bin/open-webui

# Like the official image: data in /app/backend/data, port 8080, no telemetry. OFFLINE_MODE
# and HF_HUB_OFFLINE keep it from downloading embedding models at start (there is no internet).
ENV PYTHONPATH=/opt/open-webui/site-packages \
    PYTHONUNBUFFERED=1 \
    ENV=prod \
    PORT=8080 \
    DATA_DIR=/app/backend/data \
    HF_HOME=/app/backend/data/cache/embedding/models \
    OFFLINE_MODE=true \
    HF_HUB_OFFLINE=1 \
    SCARF_NO_ANALYTICS=true \
    DO_NOT_TRACK=true \
    ANONYMIZED_TELEMETRY=false

WORKDIR /app/backend
EXPOSE 8080
# Same probe as the official image (which pipes to jq; the base has no jq).
HEALTHCHECK --interval=5s --timeout=5s --retries=60 \
    CMD curl --silent --fail http://localhost:${PORT:-8080}/health || exit 1
# `open-webui serve` is what `pip install open-webui` documents; the official image runs
# uvicorn open_webui.main:app itself (start.sh), which serve() also ends in.
CMD ["open-webui", "serve", "--host", "0.0.0.0", "--port", "8080"]
