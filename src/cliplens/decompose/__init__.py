"""Decomposers: pure functions from an image batch to pieces that sum exactly to the embedding.

May import: models (the weight specs) and the leaves.
"""
