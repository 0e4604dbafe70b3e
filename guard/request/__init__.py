"""The client's request: reading the body, validating at the edge, what guarding needs."""
