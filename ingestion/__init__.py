"""Readers: one module per kind of source, each turning its input into store features."""
