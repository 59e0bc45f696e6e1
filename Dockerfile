# Self-hosting and Docker Spaces: the same set-up as README's `make app` (scripts/setup.sh).
#   docker build -t magnet-demo .                                   # CPU torch (default)
#   docker build -t magnet-demo --build-arg TORCH_SPEC=torch==2.13.0 --build-arg TORCH_INDEX= .
#                                                                   # PyPI's torch, built with CUDA
#   docker run --gpus all -p 7860:7860 magnet-demo                  # --model auto: magnet-small on a GPU
# The container runs as uid 1000, as Spaces run it; outputs and caches live in its home folder.
FROM python:3.11-slim
ARG TORCH_SPEC="torch==2.13.0+cpu"
ARG TORCH_INDEX="https://download.pytorch.org/whl/cpu"
RUN apt-get update -qq && apt-get install -y -qq make && rm -rf /var/lib/apt/lists/* \
    && useradd --create-home --uid 1000 user
USER user
ENV HOME=/home/user \
    HF_HOME=/home/user/.cache/huggingface \
    TORCH_SPEC=${TORCH_SPEC} \
    PIP_EXTRA_INDEX_URL=${TORCH_INDEX} \
    GRADIO_ANALYTICS_ENABLED=False \
    GRADIO_SERVER_NAME=0.0.0.0 \
    GRADIO_SERVER_PORT=7860 \
    PYTHON=python3
WORKDIR /home/user/app
COPY --chown=user . .
RUN scripts/setup.sh && rm -rf /home/user/.cache/pip && mkdir -p /home/user/outputs "$HF_HOME"
EXPOSE 7860
CMD [".venv/bin/python", "app.py", "--output-dir", "/home/user/outputs"]
