"""Separation engine: decode, two-model Demucs ensemble, stem arithmetic, encode, cache.

A pure library: no Telegram, Redis or SQLite.
"""
