# Hugging Face Spaces (sdk: docker) and any Docker host: the same set-up as README's `make app`.
FROM python:3.11-slim
RUN apt-get update -qq && apt-get install -y -qq make && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY . /app
ENV TORCH_SPEC="torch==2.13.0+cpu" \
    PIP_EXTRA_INDEX_URL="https://download.pytorch.org/whl/cpu" \
    GRADIO_ANALYTICS_ENABLED=False \
    PYTHON=python3
RUN scripts/setup.sh && rm -rf /root/.cache/pip
EXPOSE 7860
CMD [".venv/bin/python", "app.py", "--host", "0.0.0.0", "--port", "7860"]
