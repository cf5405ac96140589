"""cxlnic."""
