# The tlgui web app on port 7860 (Hugging Face Spaces' Docker SDK runs it as uid 1000).
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    GRADIO_SERVER_NAME=0.0.0.0 \
    GRADIO_SERVER_PORT=7860 \
    GRADIO_ANALYTICS_ENABLED=False

RUN useradd --create-home --uid 1000 user
WORKDIR /home/user/app

# CPU wheels of the pinned torch/torchvision (a tenth of the size of the CUDA ones); pass
# --build-arg TORCH_INDEX=https://pypi.org/simple for the default wheels on a GPU machine.
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
COPY requirements.txt requirements-nodeps.txt ./
RUN pip install --extra-index-url "$TORCH_INDEX" -r requirements.txt \
 && pip install --no-deps -r requirements-nodeps.txt

COPY --chown=user . .
USER user
ENV TLGUI_RUNS_DIR=/home/user/app/runs \
    TLGUI_PUBLIC=1
EXPOSE 7860
CMD ["python", "app.py"]
