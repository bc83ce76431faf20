# SonoBridge: one image for the gateway (HTTP, MLLP, DIMSE in one process by default).
#   docker build -t sonobridge .
#   docker run -p 8080:8080 -v sonobridge-data:/var/lib/sonobridge sonobridge
# Runs as an unprivileged user; the data directory is a volume; /healthz is the health check.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    SONOBRIDGE_DATA_DIR=/var/lib/sonobridge \
    SONOBRIDGE_HTTP_HOST=0.0.0.0 \
    SONOBRIDGE_MLLP_HOST=0.0.0.0 \
    SONOBRIDGE_DICOM_HOST=0.0.0.0

RUN useradd --system --uid 10001 --home-dir /var/lib/sonobridge --shell /usr/sbin/nologin \
        sonobridge \
    && mkdir -p /var/lib/sonobridge && chown sonobridge /var/lib/sonobridge

WORKDIR /opt/sonobridge
COPY pyproject.toml README.md LICENSE ./
COPY sonobridge ./sonobridge
RUN pip install --no-compile . && rm -rf /root/.cache

USER sonobridge
VOLUME ["/var/lib/sonobridge"]
# HTTP (FHIR, DICOMweb, SMART), HL7 v2 MLLP, DICOM DIMSE
EXPOSE 8080 2575 11112
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=4)"]
CMD ["sonobridge", "serve"]
