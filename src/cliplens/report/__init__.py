"""Reports: figures and image grids drawn from tensors and images.

May import: io (atomic writes) and the leaves only, so every floor that writes a figure can use it.
"""
