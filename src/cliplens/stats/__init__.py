"""Streaming, mergeable statistics of decomposition pieces over a dataset.

May import: decompose, models, data, shapes, io and the leaves.
"""
