# One image for the web process and the GPU worker.
FROM python:3.11-slim-bookworm
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app
# The CUDA build of the same torch version the project pins (requirements.txt names the CPU build here).
ARG TORCH_INDEX=https://download.pytorch.org/whl/cu128
COPY requirements.txt .
RUN pip install --no-cache-dir --index-url "$TORCH_INDEX" torch==2.13.0 \
 && pip install --no-cache-dir -r requirements.txt
COPY . .
RUN DJANGO_SECRET_KEY=collectstatic-only-0123456789abcdefghijklmnop DJANGO_DEBUG=0 DJANGO_ALLOWED_HOSTS=x \
    python manage.py collectstatic --no-input
EXPOSE 8000
# uvicorn on port 8000 with one worker process per core up to 4 (with REDIS_URL); the GPU worker runs on its own.
CMD ["python", "manage.py", "serve", "--host", "0.0.0.0", "--port", "8000", "--no-worker"]
