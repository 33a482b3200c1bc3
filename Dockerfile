# One image for both Rapport services; the container's command picks `ingest` or `worker`.
FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
COPY pyproject.toml README.md LICENSE ./
COPY rapport ./rapport
COPY events ./events
COPY projections ./projections
COPY streams ./streams
COPY deploy ./deploy
RUN pip install . && useradd --system --home /app rapport && mkdir -p /data && chown rapport /data
USER rapport
ENV RAPPORT_HOME=/data RAPPORT_WORKSPACES=/etc/rapport/workspaces.toml
EXPOSE 8080 6066
CMD ["rapport", "ingest"]
