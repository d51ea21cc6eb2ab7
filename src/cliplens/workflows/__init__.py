"""One call per command: each module composes the floors below (models, decompose, stats, text, explain, evaluate,
apps) into what one `cliplens` command computes, and returns a result whose fields the command prints and writes.

A Python user gets everything a command does from the function named here, without `cliplens.cli`. This package may
import every library floor; only `cli` imports it.
"""
