"""Reading and writing what cliplens produces: self-describing artifacts and CSV tables, always atomically.

May import: the leaves (errors, version) only.
"""
