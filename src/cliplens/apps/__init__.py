"""Applications built on the pieces and their statistics (retrieval, ...).

May import: explain, stats, decompose, text, data, shapes, io, report, models, the leaves. Not evaluate (a sibling
floor): checks both need live lower down.
"""
