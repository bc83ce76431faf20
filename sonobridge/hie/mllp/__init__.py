"""HL7 v2 over MLLP: the listener, the inbound message log, and what each message does."""
