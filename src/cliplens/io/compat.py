"""Whether an artifact fits what it is about to be used with: one check and one policy for every reader.

Policy: every expected value must equal the value the artifact's metadata records, and a value it does not record
counts as a mismatch (an artifact that cannot show it was made for this model is refused, never trusted). The error
names the key and both values. Loading (`load_artifact`), using statistics with a lens (ablations, retrieval) and
merging shards all go through `require_match`.
"""

from __future__ import annotations

from typing import Any, Mapping

from ..errors import CliplensError

MODEL_KEY = "fingerprint"  # the digest of a model's id and weights, `Lens.fingerprint`
DATA_KEY = "data_fingerprint"  # the fingerprint of the data statistics were collected on


def require_match(metadata: Mapping[str, Any], expected: Mapping[str, Any], what: str, *,
                  remedy: str | None = None) -> None:
    """Refuse `what` (a path, or a phrase like "the statistics") unless `metadata` records every expected value."""
    for key, wanted in expected.items():
        found = metadata.get(key)
        if found == wanted:
            continue
        if key == MODEL_KEY:
            made_by = "no model" if found is None else f"another model, {metadata.get('model')!r}"
            raise CliplensError(f"{what}: {key}={found!r} ({made_by}), but this needs {key}={wanted!r}; "
                                f"{remedy or 'recompute it with this model'}")
        raise CliplensError(f"{what}: {key}={found!r}, but this needs {key}={wanted!r}; "
                            f"{remedy or 'recompute it with that setting'}")


def require_model(metadata: Mapping[str, Any], fingerprint: str, what: str) -> None:
    """Refuse `what` unless it was made with the model whose fingerprint is `fingerprint`."""
    require_match(metadata, {MODEL_KEY: fingerprint}, what)


def fitted_on(metadata: Mapping[str, Any], data_fingerprint: str) -> bool:
    """Whether the artifact was collected on the data with this fingerprint (in-sample use of its statistics)."""
    return metadata.get(DATA_KEY) == data_fingerprint
