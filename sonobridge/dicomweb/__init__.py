"""DICOMweb (PS3.18): QIDO-RS, WADO-RS (instances, metadata, frames, rendered, thumbnails,
bulk data), STOW-RS and WADO-URI, over the DICOM store."""
