"""Applications built on the decompositions and their statistics."""
