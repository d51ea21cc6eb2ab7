"""Training and measuring the toy CLIP zoo shipped in `cliplens/assets/toys`.

May import: evaluate and every floor below it (models, shapes, io, ...).
"""
