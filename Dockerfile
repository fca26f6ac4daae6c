# One image for every OmniLLM actor; docker-compose.yml runs it once per service:
#   docker run --rm omnillm actor caller --provider openai
# The config is read from /etc/omnillm/omnillm.yaml (mount deploy/omnillm.yaml there);
# the NATS URL, its login and the API keys come from the environment.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
COPY pyproject.toml README.md ./
COPY omnillm ./omnillm
COPY actors ./actors
COPY bus ./bus
COPY providers ./providers
RUN pip install . && rm -rf /src

# Not root. The ledger's SQLite file lives in /var/lib/omnillm (a volume in compose).
RUN useradd --system --uid 10001 --home-dir /var/lib/omnillm omni \
    && mkdir -p /var/lib/omnillm /etc/omnillm \
    && chown omni /var/lib/omnillm
USER omni
WORKDIR /var/lib/omnillm

ENTRYPOINT ["omni", "--config", "/etc/omnillm/omnillm.yaml"]
CMD ["actor", "--help"]
