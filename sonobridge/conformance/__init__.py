"""What SonoBridge publishes about itself: the CapabilityStatement and the implementation guide's
own definitions (search parameters beyond the R4 base)."""
