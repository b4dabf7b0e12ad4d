# Training image: the whole pipeline (`dvc repro`, `cagerisk <stage>`, `cagerisk register`) on CPU.
#   docker build -t cagerisk-train .
#   docker run --rm -v "$PWD/data:/app/data" -v "$PWD/mlruns:/app/mlruns" cagerisk-train            # dvc repro
#   docker run --rm -v ... cagerisk-train cagerisk register
# The serving image is built by BentoML instead (`bentoml containerize`, docs/serving.md).
FROM python:3.11-slim-bookworm

# git: MLflow tags runs with the commit and DVC needs a repository; libgomp1: LightGBM/XGBoost OpenMP.
RUN apt-get update \
    && apt-get install -y --no-install-recommends git libgomp1 make \
    && rm -rf /var/lib/apt/lists/*

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1 \
    MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR=false \
    BENTOML_DO_NOT_TRACK=True \
    BENTOML_HOME=/app/bentoml_home

WORKDIR /app

# Dependencies first (their layer is reused while only the code changes), pinned exactly as
# requirements.lock; torch from the CPU wheel index.
COPY pyproject.toml requirements.lock README.md ./
RUN python -m pip install --extra-index-url https://download.pytorch.org/whl/cpu -r requirements.lock

COPY src/ src/
COPY pipelines/ pipelines/
COPY conf/ conf/
COPY dvc.yaml params.yaml Makefile bentofile.yaml ./
COPY .dvc/config .dvc/config
RUN python -m pip install --no-deps --editable . \
    && git init -q . && git add -A && git -c user.name=image -c user.email=image@localhost commit -qm "training image" \
    && useradd --create-home --uid 1000 cagerisk && chown -R cagerisk /app

USER cagerisk
# Outputs (data/, mlruns/) are meant to be volumes so that runs outlive the container.
VOLUME ["/app/data", "/app/mlruns"]
CMD ["dvc", "repro"]
