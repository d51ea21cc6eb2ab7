"""Whether an artifact fits what it is about to be used with: one check and one policy for every reader.

Policy: every expected value must equal the value the artifact's metadata records, and a value it does not record
counts as a mismatch (an artifact that cannot show it was made for this model is refused, never trusted). The error
names the key and both values; for the model, both models by id and weights, not only their fingerprints. Loading
(`load_artifact`), using statistics with a lens (ablations, retrieval) and merging shards all go through
`require_match`.
"""

from __future__ import annotations

from typing import Any, Mapping

from ..errors import CliplensError

MODEL_KEY = "fingerprint"  # the digest of a model's id and weights, `Lens.fingerprint`
DATA_KEY = "data_fingerprint"  # the fingerprint of the data statistics were collected on


class ModelFingerprint(str):
    """A model's fingerprint (`Lens.fingerprint`) that also knows the model it belongs to, so that a refusal can name
    the running model as well as the artifact's. It is the digest string everywhere else (comparisons, JSON)."""

    model: str
    pretrained: str | None

    def __new__(cls, digest: str, model: str, pretrained: str | None) -> ModelFingerprint:
        fingerprint = super().__new__(cls, digest)
        fingerprint.model, fingerprint.pretrained = model, pretrained
        return fingerprint


def describe_model(model: Any, pretrained: Any, fingerprint: Any) -> str:
    """The model in words, e.g. "toy:rn (fingerprint ab12...)", with its weights when the id does not name them."""
    weights = f" with weights {pretrained}" if pretrained else ""
    return f"{model}{weights} (fingerprint {fingerprint})"


def _model_mismatch(metadata: Mapping[str, Any], wanted: Any) -> str:
    """Which model made the artifact, and which one is running, in words."""
    found = metadata.get(MODEL_KEY)
    made = ("no recorded model" if found is None else
            describe_model(metadata.get("model"), metadata.get("pretrained"), found))
    if not isinstance(wanted, ModelFingerprint):
        return f"made with {made}, but this needs the model with fingerprint {wanted}"
    running = describe_model(wanted.model, wanted.pretrained, wanted)
    same_id = " (the same id with other weights)" if metadata.get("model") == wanted.model else ""
    return f"made with {made}, but this is {running}{same_id}"


def require_match(metadata: Mapping[str, Any], expected: Mapping[str, Any], what: str, *,
                  remedy: str | None = None) -> None:
    """Refuse `what` (a path, or a phrase like "the statistics") unless `metadata` records every expected value."""
    for key, wanted in expected.items():
        found = metadata.get(key)
        if found == wanted:
            continue
        if key == MODEL_KEY:
            raise CliplensError(f"{what}: {_model_mismatch(metadata, wanted)}; "
                                f"{remedy or 'recompute it with this model'}")
        raise CliplensError(f"{what}: {key}={found!r}, but this needs {key}={wanted!r}; "
                            f"{remedy or 'recompute it with that setting'}")


def require_model(metadata: Mapping[str, Any], fingerprint: str, what: str) -> None:
    """Refuse `what` unless it was made with the model whose fingerprint is `fingerprint` (a `ModelFingerprint` lets
    the message name the running model too)."""
    require_match(metadata, {MODEL_KEY: fingerprint}, what)


def fitted_on(metadata: Mapping[str, Any], data_fingerprint: str) -> bool:
    """Whether the artifact was collected on the data with this fingerprint (in-sample use of its statistics)."""
    return metadata.get(DATA_KEY) == data_fingerprint
