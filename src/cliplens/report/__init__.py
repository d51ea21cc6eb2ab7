"""Reports: figures and image grids made from results."""
