"""De-identification in the core: one object at a time from the stored file to a new file
(``service.py``), with pixel cleaning for ultrasound (``pixels.py``). The rules themselves
(Table E.1-1, options, UIDs, dates, text) are pure functions in ``mappings/deid``."""

from __future__ import annotations

from sonobridge.core.deid.service import Cleaned, Deidentifier, load_key

__all__ = ["Cleaned", "Deidentifier", "load_key"]
