"""DICOM DIMSE with pynetdicom: the SCP (echo, store, find, move, get, worklist) and peers."""
