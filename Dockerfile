# syntax=docker/dockerfile:1
#
# The Alliance GraphQL gateway (`alliance serve`) and its maintenance commands
# (`alliance db upgrade`, `alliance ledger verify`) in one image.
#
#   docker build -t alliance:dev .
#   docker run --rm -p 8000:8000 -e DATABASE_URL=... -e ALLIANCE_APP_DATABASE_URL=... alliance:dev
#
# Stage 1 builds a wheel of the project (migrations/ are packaged as alliance/_migrations)
# and wheels of every dependency; stage 2 installs those wheels offline and nothing else.

############################ builder ############################
FROM python:3.11-slim AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /src
# Only what the hatchling build reads: metadata, the readme it names, the package, the migrations.
COPY pyproject.toml README.md ./
COPY src ./src
COPY migrations ./migrations

RUN pip wheel --wheel-dir /wheels .

############################ runtime ############################
FROM python:3.11-slim AS runtime

# ALLIANCE_DATA_DIR is used only when DATABASE_URL is unset: the embedded PostgreSQL of a
# quick `docker run -p 8000:8000 IMAGE serve --demo --host 0.0.0.0`. Kubernetes always sets
# DATABASE_URL and mounts the root filesystem read-only.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HOME=/home/alliance \
    ALLIANCE_DATA_DIR=/var/lib/alliance

RUN groupadd --system --gid 10001 alliance \
 && useradd --system --uid 10001 --gid 10001 --home-dir /home/alliance --create-home \
        --shell /usr/sbin/nologin alliance \
 && install -d -o 10001 -g 10001 -m 0750 /var/lib/alliance

# The wheels are bind-mounted from the builder, so they never become an image layer.
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    pip install --no-index --find-links=/wheels alliance

USER 10001:10001
WORKDIR /home/alliance
EXPOSE 8000

ENTRYPOINT ["alliance"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8000"]
