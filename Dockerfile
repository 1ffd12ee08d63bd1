# One image, two entry points: the proxy (default) and the PRM server.
#   docker build -t tts-proxy .
#   docker run -p 8000:8000 tts-proxy serve --host 0.0.0.0 --policy-url http://vllm:8001/v1
#   docker run --gpus all -p 8002:8002 --entrypoint tts-prm tts-proxy serve --model /models/prm ...
# No weights are baked in: models are mounted at run time.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY strategies ./strategies
COPY proxy ./proxy
COPY prm_server ./prm_server
COPY scripts ./scripts
# hadolint ignore=DL3013
RUN pip install --no-cache-dir --prefix=/install ".[litellm,prm]"

FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 \
    LITELLM_LOCAL_MODEL_COST_MAP=True
COPY --from=build /install /usr/local
RUN useradd --create-home --uid 10001 tts
USER 10001
WORKDIR /home/tts
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/metrics', timeout=4)"]
ENTRYPOINT ["tts-proxy"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8000"]
