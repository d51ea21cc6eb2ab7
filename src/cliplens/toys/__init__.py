"""Training and measuring the toy CLIP zoo shipped in `cliplens/assets/toys`."""
