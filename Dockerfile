# One image for every zfarm service; compose.yaml picks the command.
FROM python:3.12-slim
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY api api
COPY broker_config broker_config
COPY worker worker
COPY models models
COPY migrations migrations
COPY zfarm zfarm
RUN pip install .
ENTRYPOINT ["zfarm"]
