"""Explaining pieces with text: each explainer works from a piece's statistics, never from per-image data."""
