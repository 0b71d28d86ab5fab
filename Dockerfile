# One image for every zfarm service; compose.yaml picks the command.
FROM python:3.12-slim
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
COPY pyproject.toml setup.py README.md ./
COPY scripts scripts
COPY api api
COPY broker_config broker_config
COPY control control
COPY core core
COPY worker worker
COPY models models
COPY migrations migrations
COPY zfarm zfarm
# Everything a GPU host runs; an API-only image could install .[server] alone.
RUN pip install ".[worker]"
ENTRYPOINT ["zfarm"]
