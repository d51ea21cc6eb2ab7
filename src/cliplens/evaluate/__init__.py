"""Evaluations of explanations: zero-shot accuracy under mean-ablation, reconstruction, pair sparsity, groups.

May import: explain, stats, decompose, text, data, shapes, io, models, the leaves. Not apps (a sibling floor).
"""
