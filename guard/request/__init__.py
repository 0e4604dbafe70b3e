"""The client's request: reading the body, validating at the edge, extracting what guarding needs."""
