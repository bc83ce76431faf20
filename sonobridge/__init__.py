"""SonoBridge: a standards gateway for remote ultrasound diagnosis."""

__version__ = "0.1.0"
