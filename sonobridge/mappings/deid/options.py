"""The options of the Basic Application Level Confidentiality Profile (PS3.15 E.3) and the
CID 7050 codes that record them in DeidentificationMethodCodeSequence (0012,0064)."""

from __future__ import annotations

from dataclasses import dataclass, fields

# CID 7050 "De-identification Method": (code value, code meaning), DCM coding scheme.
BASIC_PROFILE = ("113100", "Basic Application Confidentiality Profile")
METHOD_CODES: dict[str, tuple[str, str]] = {
    "clean_pixel_data": ("113101", "Clean Pixel Data Option"),
    "clean_recognizable_visual_features": ("113102",
                                           "Clean Recognizable Visual Features Option"),
    "clean_graphics": ("113103", "Clean Graphics Option"),
    "clean_structured_content": ("113104", "Clean Structured Content Option"),
    "clean_descriptors": ("113105", "Clean Descriptors Option"),
    "retain_longitudinal_full": ("113106",
                                 "Retain Longitudinal Temporal Information Full Dates Option"),
    "retain_longitudinal_modified": (
        "113107", "Retain Longitudinal Temporal Information Modified Dates Option"),
    "retain_patient_characteristics": ("113108", "Retain Patient Characteristics Option"),
    "retain_device_identity": ("113109", "Retain Device Identity Option"),
    "retain_uids": ("113110", "Retain UIDs Option"),
    "retain_safe_private": ("113111", "Retain Safe Private Option"),
    "retain_institution_identity": ("113112", "Retain Institution Identity Option"),
}


@dataclass(frozen=True, slots=True)
class Options:
    """Which options apply on top of the Basic Profile (all off: the Basic Profile alone).

    ``clean_pixel_data`` and ``clean_recognizable_visual_features`` are carried out on the
    pixels (``core/deid/pixels.py``); the others act on attributes (``attributes.py``).
    """

    clean_pixel_data: bool = False
    clean_recognizable_visual_features: bool = False
    clean_graphics: bool = False
    clean_structured_content: bool = False
    clean_descriptors: bool = False
    retain_longitudinal_full: bool = False
    retain_longitudinal_modified: bool = False
    retain_patient_characteristics: bool = False
    retain_device_identity: bool = False
    retain_uids: bool = False
    retain_safe_private: bool = False
    retain_institution_identity: bool = False

    def __post_init__(self) -> None:
        if self.retain_longitudinal_full and self.retain_longitudinal_modified:
            raise ValueError("Retain Longitudinal Temporal Information: choose full dates or "
                             "modified dates, not both")

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    @classmethod
    def of(cls, names: list[str] | tuple[str, ...] | frozenset[str]) -> Options:
        """Options from their names (``clean_descriptors``…); an unknown name is an error."""
        known = set(cls.names())
        unknown = sorted(set(names) - known)
        if unknown:
            raise ValueError(f"unknown de-identification option(s): {', '.join(unknown)}; "
                             f"known: {', '.join(sorted(known))}")
        return cls(**{name: True for name in names})

    def chosen(self) -> list[str]:
        return [name for name in self.names() if getattr(self, name)]

    def method_codes(self) -> list[tuple[str, str]]:
        """113100 then one code per chosen option, in CID 7050 order."""
        return [BASIC_PROFILE] + [METHOD_CODES[name] for name in self.chosen()]

    @property
    def temporal(self) -> str:
        """Longitudinal Temporal Information Modified (0028,0303)."""
        if self.retain_longitudinal_full:
            return "UNMODIFIED"
        if self.retain_longitudinal_modified:
            return "MODIFIED"
        return "REMOVED"


# The options a teaching case is made with: every cleaning option, dates shifted per patient
# (intervals kept for teaching follow-ups), age/sex/size kept (they matter to the diagnosis),
# device serial numbers and station names removed (they name the clinic; manufacturer and model
# are not in Table E.1-1 and stay).
TEACHING = Options(clean_pixel_data=True, clean_graphics=True, clean_structured_content=True,
                   clean_descriptors=True, retain_longitudinal_modified=True,
                   retain_patient_characteristics=True)
