"""Accept headers as DICOMweb clients send them (PS3.18 8.7).

Quoted and unquoted ``type``, ``transfer-syntax=*``, ``*/*``, several alternatives with q-values,
and the ``accept`` query parameter that overrides the header.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class MediaRange:
    media: str  # e.g. multipart/related, application/dicom, image/jpeg, */*
    params: dict[str, str] = field(default_factory=dict)
    quality: float = 1.0

    @property
    def part_type(self) -> str | None:
        """The ``type`` of a multipart/related range (the media type of each part)."""
        return self.params.get("type")

    @property
    def transfer_syntax(self) -> str | None:
        return self.params.get("transfer-syntax")

    def matches(self, media: str) -> bool:
        if self.media in ("*/*", media):
            return True
        major, _, minor = self.media.partition("/")
        return minor == "*" and media.split("/")[0] == major


def _split_params(text: str) -> list[str]:
    out: list[str] = []
    current: list[str] = []
    quote = False
    for char in text:
        if char == '"':
            quote = not quote
        if char == ";" and not quote:
            out.append("".join(current))
            current = []
        else:
            current.append(char)
    out.append("".join(current))
    return out


def _split_ranges(text: str) -> list[str]:
    out: list[str] = []
    current: list[str] = []
    quote = False
    for char in text:
        if char == '"':
            quote = not quote
        if char == "," and not quote:
            out.append("".join(current))
            current = []
        else:
            current.append(char)
    out.append("".join(current))
    return [o for o in out if o.strip()]


def parse_accept(text: str | None) -> list[MediaRange]:
    """Media ranges, best first (by q-value, then as given). Empty: the client takes anything."""
    if not text or not text.strip():
        return []
    ranges = []
    for index, raw in enumerate(_split_ranges(text)):
        media, *params = _split_params(raw)
        parsed: dict[str, str] = {}
        for param in params:
            key, _, value = param.partition("=")
            parsed[key.strip().lower()] = value.strip().strip('"').strip()
        try:
            quality = float(parsed.pop("q", "1"))
        except ValueError:
            quality = 0.0
        if "type" in parsed:
            parsed["type"] = parsed["type"].lower()
        ranges.append((quality, -index, MediaRange(media.strip().lower(), parsed, quality)))
    ranges.sort(key=lambda r: (r[0], r[1]), reverse=True)
    return [r for q, _, r in ranges if q > 0]


def content_type(text: str | None) -> MediaRange | None:
    parsed = parse_accept(text)
    return parsed[0] if parsed else None
