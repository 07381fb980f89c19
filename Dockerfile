# guard, as compose.yaml runs it: `guard serve` by default, `guard db upgrade` for the
# one-shot migration. No ML runtime yet: the bundled detectors are patterns and secrets.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    GUARD_SERVER__HOST=0.0.0.0

RUN useradd --system --uid 10001 --user-group --home-dir /app --shell /usr/sbin/nologin guard
WORKDIR /app

# Dependencies first, in their own layer, so that a code change does not reinstall them.
COPY pyproject.toml README.md ./
RUN mkdir guard && touch guard/__init__.py \
    && pip install --editable . \
    && rm -rf guard guard.egg-info

# An editable install: guard finds migrations/ and policies/ next to its package.
COPY guard/ guard/
COPY migrations/ migrations/
COPY policies/ policies/
RUN pip install --no-deps --editable . \
    && mkdir guard-data && chown guard:guard guard-data

USER guard
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2)"]
ENTRYPOINT ["guard"]
CMD ["serve"]
