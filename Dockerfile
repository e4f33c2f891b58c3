# Order Status services image: `orderstatus api`, `orderstatus worker`,
# `orderstatus migrate`, `orderstatus topics` (see docker-compose.yml).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY pyproject.toml ./
COPY services ./services
RUN pip install . \
 && useradd --system --uid 10001 --no-create-home orderstatus

USER orderstatus
EXPOSE 8000 9101
ENTRYPOINT ["orderstatus"]
CMD ["--help"]
