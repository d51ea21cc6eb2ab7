"""Streaming, mergeable statistics of decomposition pieces over a dataset."""
