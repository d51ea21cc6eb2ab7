"""Backend adapters: open_clip, Hugging Face and toy models turned into plain weight specs (`spec.py`).

May import: the leaves (errors) only. Building a `Lens` happens above, in `cliplens.factory`.
"""
