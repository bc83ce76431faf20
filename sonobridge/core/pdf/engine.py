"""WeasyPrint, imported without changing how the rest of the process decodes images.

WeasyPrint sets ``PIL.ImageFile.LOAD_TRUNCATED_IMAGES = True`` when it is imported, for the
whole process. Pillow is also one of pydicom's JPEG decoders: with that flag a damaged
frame decodes to whatever Pillow could salvage and would be served as a good frame (200
instead of the 406 the imaging code gives for a frame that does not decode), depending only
on whether a PDF had been rendered before in the same process. The images WeasyPrint lays
out here are ours (key images the report template embeds as ``data:`` URLs), never
truncated, so the flag is put back as it was. Every import of WeasyPrint goes through here.
"""

from __future__ import annotations

import threading
from types import ModuleType

_lock = threading.Lock()


def weasyprint() -> ModuleType:
    """The ``weasyprint`` module (imported when first needed: it loads Pango)."""
    from PIL import ImageFile

    with _lock:
        strict = ImageFile.LOAD_TRUNCATED_IMAGES
        import weasyprint as module
        import weasyprint.images  # the module that sets the flag
        import weasyprint.text.fonts
        import weasyprint.urls
        ImageFile.LOAD_TRUNCATED_IMAGES = strict
    loaded: ModuleType = module  # WeasyPrint ships no types
    return loaded
