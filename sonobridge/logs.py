"""Logging set-up: human text or one JSON object per line, chosen by the log format setting.

Access log lines carry the route template (``/fhir/{type}/{id}``), never the raw path or query,
so names and identifiers that clients put in URLs do not end up in logs.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

import orjson

_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message", "asctime", "color_message"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(out, default=str).decode()


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        extras = {k: v for k, v in vars(record).items()
                  if k not in _STANDARD and not k.startswith("_")}
        if extras:
            text += " " + " ".join(f"{k}={v}" for k, v in extras.items())
        return text


def configure(log_format: str = "text", level: str = "info") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("uvicorn.access").disabled = True
    logging.getLogger("alembic").setLevel(logging.WARNING)
    # WeasyPrint logs each layout step of every report PDF at INFO (seven lines a PDF): its
    # warnings (a missing font, an unreadable image) stay.
    logging.getLogger("weasyprint.progress").setLevel(logging.WARNING)
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    quiet_pydicom()


class _Demote(logging.Filter):
    """pydicom's complaints about a file are the file's problem, reported where it is
    refused: kept in the log at debug level, not printed as warnings."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.ERROR:
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return logging.getLogger().isEnabledFor(record.levelno)


def quiet_pydicom() -> None:
    """pydicom both warns (``UserWarning``) and logs each oddity it reads past (a VR that
    does not fit, a value too long); with thousands of files that drowns the console. The
    warnings are silenced and its log records demoted to debug."""
    import warnings

    warnings.filterwarnings("ignore", category=UserWarning, module=r"pydicom(\..*)?$")
    logger = logging.getLogger("pydicom")
    if not any(isinstance(f, _Demote) for f in logger.filters):
        logger.addFilter(_Demote())
