# cython: language_level=3
"""Placeholder data plane; replaced by the relay implementation."""

def version() -> str:
    return "0"
