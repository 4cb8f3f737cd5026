"""Deterministic demo district generator for CIM Twin (see `district.generate`)."""

from .district import PARTS, generate

__all__ = ["PARTS", "generate"]
