"""CLIP-Dissect: name what each neuron of any vision network responds to, with a CLIP model as the judge.

docs/methods/dissect.md explains the pipeline, the similarity functions, the caches and the evaluation.
"""
