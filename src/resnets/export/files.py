"""Atomic file writes for exports (the package's one implementation)."""

from ..files import atomic_output

__all__ = ["atomic_output"]
