"""DICOM DIMSE with pynetdicom: the SCP (echo, store, find, move, get, worklist) and peers."""

from pynetdicom import _config

# Query identifiers carry patient names and IDs: pynetdicom would write each one to its debug
# log, and build those lines even when debug is off (a fifth of a C-FIND response's cost).
_config.LOG_REQUEST_IDENTIFIERS = False
_config.LOG_RESPONSE_IDENTIFIERS = False
