"""Explaining pieces with text: each explainer works from a piece's statistics, never from per-image data.

May import: stats, decompose, text, data, shapes, io, models, the leaves.
"""
