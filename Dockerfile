# Worker / tools image for docker compose (the local demo and CI run without Docker).
FROM python:3.11-slim
WORKDIR /app
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
COPY pyproject.toml README.md ./
COPY schemas ./schemas
COPY models ./models
COPY streams ./streams
COPY deploy ./deploy
# CPU wheels keep the image small; swap the index for a CUDA base image to score on a GPU.
RUN pip install --extra-index-url https://download.pytorch.org/whl/cpu -e .
ENTRYPOINT ["intentstream"]
CMD ["worker"]
