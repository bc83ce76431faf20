"""Log set-up: a server's console shows what a person acts on, not a library's chatter."""

from __future__ import annotations

import logging

from sonobridge import logs


def test_library_chatter_is_quiet_and_their_warnings_stay():
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        logs.configure(level="info")
        assert logging.getLogger("sonobridge.app").isEnabledFor(logging.INFO)
        for chatty in ("weasyprint.progress", "alembic.runtime.migration"):
            assert not logging.getLogger(chatty).isEnabledFor(logging.INFO), chatty
            assert logging.getLogger(chatty).isEnabledFor(logging.WARNING), chatty
        assert logging.getLogger("weasyprint").isEnabledFor(logging.WARNING)
        assert logging.getLogger("uvicorn.access").disabled
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)
