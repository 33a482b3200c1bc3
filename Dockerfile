# One image for both Rapport services; the container's command picks `ingest` or `worker`.

# The replay's native decoder (native/, Rust): built into a wheel here, installed below.
FROM rust:1-slim AS native
RUN pip --version >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq python3-pip python3-venv >/dev/null)
RUN python3 -m venv /build && /build/bin/pip install -q "maturin>=1.5,<2"
COPY native /native
RUN /build/bin/maturin build --release --manifest-path /native/Cargo.toml --out /wheels -i python3

FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
COPY pyproject.toml README.md LICENSE ./
COPY rapport ./rapport
COPY events ./events
COPY projections ./projections
COPY streams ./streams
COPY deploy ./deploy
COPY --from=native /wheels /wheels
RUN pip install . /wheels/*.whl && rm -rf /wheels && useradd --system --home /app rapport && mkdir -p /data && chown rapport /data
USER rapport
ENV RAPPORT_HOME=/data RAPPORT_WORKSPACES=/etc/rapport/workspaces.toml
EXPOSE 8080 6066
CMD ["rapport", "ingest"]
