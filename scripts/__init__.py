"""Helper scripts (see scripts/README.md); a package so they can run as `python -m scripts....`."""
