"""Sparse text decomposition (docs/methods/omp.md): write unit directions as k signed text atoms, by batched OMP.

Orthogonal Matching Pursuit picks, k times, the atom most correlated with the residual and refits all picked
coefficients by least squares. We run it for thousands of targets at once in torch, on any device.

Memory strategy. The Gram matrix G = D Dᵀ of a 30k-word pool is 30k × 30k (3.6 GB in float32, 7.2 GB in float64),
and a text dictionary has rank at most d (512-1024) ≪ M. So G is never formed: the correlations of all atoms with the
residuals are one matrix product [B, d] × [d, M] per step (= Dy − G_{:,S} x, computed through the rank-d factor), and
the few Gram entries the Cholesky update needs, G_{S,j}, are inner products of the picked atoms with the new one.
Memory per batch of targets is O(batch · (M + k·d + k²)): about 0.5 GB in float32 for 1024 targets, 30k atoms and
k = 128.

Speed. That product is almost all the work, so atom selection avoids anything slower than it: argmax runs over block
maxima (`_first_argmax`), and float64 work screens the product in float32 and rescores only the few atoms the float32
error bound cannot rule out (`_pick`), which keeps float64 picks exact at near-float32 speed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Sequence

import torch

from ..errors import CliplensError, require_positive_int
from ..progress import progress_bar
from .base import require_fitted

DictNorm = Literal["row", "axis0"]

ARGMAX_BLOCK = 256  # atoms per block in `_first_argmax`; the dictionary is zero-padded to a multiple of it
SCREENED_CANDIDATES = 8  # atoms rescored exactly per target and step when float64 work is screened in float32


def require_fewer_atoms(atoms: int | None, width: int, option: str = "--omp-atoms") -> None:
    """Refuse k ≥ d text atoms for directions in a d-dimensional embedding (None: the caller's default, capped).

    k = d atoms span the whole space, so OMP matches any direction exactly with whatever texts it picked first: the
    words say nothing about the direction and their coefficients grow to hundreds. Refused rather than capped at
    d − 1, because a capped run would quietly answer another question than the one asked; defaults are capped."""
    if atoms is not None and atoms >= width:
        raise CliplensError(f"{option} {atoms} is not below the embedding width {width}: that many texts span every "
                            f"direction, so their words and coefficients would mean nothing; ask for at most "
                            f"{width - 1}")


def prepare_dictionary(text_embeddings: torch.Tensor, dict_norm: DictNorm = "row", scale: float = 1.0) -> torch.Tensor:
    """Atoms [M, d] from text embeddings [M, d]: centre on the mean text, then normalise.

    Centring removes the direction every text shares (the "text-ness" and the modality gap), which would otherwise
    take part in every decomposition. `"row"` gives unit atoms, so OMP's pick |⟨d_j, r⟩| compares cosines.
    `"axis0"` is the references' per-dimension normalisation (each embedding dimension divided by its norm over the
    M texts); it leaves atoms of unequal length (≈ scale·√(d/M)) and so favours long atoms, but the published word
    lists were computed with it (second-order lens: scale=100; ResNet pairs: scale=1). The result is multiplied by
    `scale` in both modes.
    """
    if dict_norm not in ("row", "axis0"):
        raise CliplensError(f"dict_norm must be 'row' or 'axis0', got {dict_norm!r}")
    if not (isinstance(scale, (int, float)) and 0 < scale < float("inf")):
        raise CliplensError(f"scale must be a positive finite number, got {scale!r}")
    pool = _finite_matrix("text embeddings", text_embeddings)
    if len(pool) < 2:
        raise CliplensError("a dictionary needs at least two texts: centring one text leaves nothing; add texts")
    centred = pool - pool.mean(0)
    axis = 1 if dict_norm == "row" else 0
    norms = centred.norm(dim=axis, keepdim=True)
    # Centring cancels digits: a row (column) shortened below sqrt(eps) of its uncentred length keeps fewer than half
    # of them, so its direction would be rounding noise.
    if (norms <= torch.finfo(pool.dtype).eps ** 0.5 * pool.norm(dim=axis, keepdim=True)).any():
        what = "text equals the mean text" if dict_norm == "row" else "embedding dimension is constant over the texts"
        raise CliplensError(f"a {what}, so it cannot be normalised; remove duplicate or degenerate texts")
    return centred / norms * scale


@dataclass(frozen=True)
class SparseCodes:
    """k-sparse codes, one row per target, sorted by |coef| descending.

    ids [B, k] int64 (−1 marks the slots left empty by an early stop), coef [B, k] (0 in those slots), fidelity [B]
    = cos(y, x D), how much of the target's direction the k texts rebuild.
    """

    ids: torch.Tensor
    coef: torch.Tensor
    fidelity: torch.Tensor

    @property
    def n_nonzero(self) -> torch.Tensor:
        """Atoms actually used per target [B]: k, unless the target stopped early."""
        return (self.ids >= 0).sum(1)


def orthogonal_matching_pursuit(
    targets: torch.Tensor,
    dictionary: torch.Tensor,
    n_atoms: int,
    *,
    tol: float | None = None,
    batch_size: int = 1024,
    progress: bool = False,
) -> SparseCodes:
    """OMP codes of targets [B, d] over atoms [M, d]: exactly `n_atoms` non-zeros per target.

    The same codes as scikit-learn's OMP (ties go to the lowest atom id). A target stops early only when its
    residual norm drops to `tol` or below (a norm, not scikit-learn's squared norm), or when no remaining atom can
    reduce the residual (it is orthogonal to all of them, or the next atom is numerically in the span of the picked
    ones). Targets are solved `batch_size` at a time; inputs must share one device and one float dtype.
    """
    require_positive_int("n_atoms", n_atoms)
    require_positive_int("batch_size", batch_size)
    targets = _finite_matrix("targets", targets)
    dictionary = _finite_matrix("dictionary", dictionary)
    if targets.shape[1] != dictionary.shape[1]:
        raise CliplensError(
            f"targets have dimension {targets.shape[1]} but the dictionary atoms {dictionary.shape[1]}; "
            "embed the texts with the model the targets come from"
        )
    if targets.dtype != dictionary.dtype or targets.device != dictionary.device:
        raise CliplensError(
            f"targets ({targets.dtype}, {targets.device}) and dictionary ({dictionary.dtype}, {dictionary.device}) "
            "must share dtype and device; convert one with .to(...)"
        )
    if targets.dtype not in (torch.float32, torch.float64):
        raise CliplensError(f"OMP runs in float32 or float64, got {targets.dtype}; convert with .float() or .double()")
    if n_atoms > len(dictionary):
        raise CliplensError(f"n_atoms={n_atoms} exceeds the dictionary size ({len(dictionary)} texts); ask for fewer")
    if tol is not None and not tol >= 0:
        raise CliplensError(f"tol must be a non-negative residual norm or None, got {tol!r}")
    if (targets.norm(dim=1) == 0).any():
        raise CliplensError("some targets are zero vectors, which have no direction to explain; drop them")
    if (dictionary.norm(dim=1) == 0).any():
        raise CliplensError("the dictionary has zero atoms; build it with prepare_dictionary or drop those rows")

    # Zero atoms pad the dictionary to whole blocks for `_first_argmax`; their score is 0, so they are never picked
    # (a best score of 0 stops the target instead).
    padded = torch.cat([dictionary, dictionary.new_zeros(-len(dictionary) % ARGMAX_BLOCK, dictionary.shape[1])])
    screen = padded.float() if padded.dtype == torch.float64 else None
    square_norms = padded.square().sum(1)
    bar = progress_bar(len(targets), f"OMP, {n_atoms} atoms", "target", progress)
    parts = []
    for start in range(0, len(targets), batch_size):
        parts.append(_omp_batch(targets[start : start + batch_size], padded, screen, square_norms, n_atoms, tol))
        bar.update(len(parts[-1][0]))
    bar.close()
    ids = torch.cat([p[0] for p in parts])
    coef = torch.cat([p[1] for p in parts])
    # Empty slots sort last; stable, so equal magnitudes keep their picking order.
    order = torch.where(ids >= 0, coef.abs(), -1.0).argsort(dim=1, descending=True, stable=True)
    ids, coef = ids.gather(1, order), coef.gather(1, order)
    return SparseCodes(ids, coef, _cosine(targets, reconstruct_from_codes(ids, coef, dictionary)))


def reconstruct_from_codes(
    ids: torch.Tensor, coef: torch.Tensor, dictionary: torch.Tensor, *, renormalize: bool = False
) -> torch.Tensor:
    """x D [B, d] for sparse codes ids/coef [B, k] (slots with id −1 are ignored).

    `renormalize` makes each row a unit vector (rows that are zero stay zero): the ResNet-pairs reference projects
    onto the unit direction, the second-order reference onto the raw x D (docs/methods/omp.md#reconstruction).
    """
    out = torch.zeros(len(ids), dictionary.shape[1], dtype=dictionary.dtype, device=dictionary.device)
    for slot in range(ids.shape[1]):
        used = ids[:, slot] >= 0
        out += torch.where(used, coef[:, slot], 0.0)[:, None] * dictionary[ids[:, slot].clamp_min(0)]
    if renormalize:
        out = out / out.norm(dim=1, keepdim=True).clamp_min(torch.finfo(out.dtype).tiny)
    return out


def _omp_batch(
    targets: torch.Tensor,
    dictionary: torch.Tensor,
    screen: torch.Tensor | None,
    square_norms: torch.Tensor,
    k: int,
    tol: float | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """OMP for one batch of targets; ids and coefficients in picking order, unsorted.

    All targets that are still running have picked the same number of atoms s, so each step works on equal-sized
    blocks. We keep the inverse L⁻¹ of the Cholesky factor of G_SS (it grows by one row per step, like L) and the
    target's coordinates z = L⁻¹ D_S y in the orthonormalised picks: the new row of L, the new row of L⁻¹ and the
    refit x = L⁻ᵀ z of all s + 1 coefficients are then batched products on views, where triangular solves would
    copy every block each step. x and the residual are recomputed in full each step, so errors do not accumulate.
    """
    batch, dim = targets.shape
    options = {"dtype": targets.dtype, "device": targets.device}
    sqrt_eps = torch.finfo(targets.dtype).eps ** 0.5
    longest_atom = square_norms.max().sqrt()
    target_norms = targets.norm(dim=1)

    ids = torch.full((batch, k), -1, dtype=torch.long, device=targets.device)
    coef = torch.zeros(batch, k, **options)
    inverse = torch.zeros(batch, k, k, **options)  # L⁻¹, lower triangular
    coordinates = torch.zeros(batch, k, **options)  # z = L⁻¹ D_S y
    picked = torch.zeros(batch, k, dim, **options)  # the picked atoms D_S
    residual = targets.clone()
    scores_buffer = torch.empty(
        batch, len(dictionary), dtype=(dictionary if screen is None else screen).dtype, device=targets.device
    )
    running = torch.ones(batch, dtype=torch.bool, device=targets.device)
    if tol is not None:
        running &= target_norms > tol

    for s in range(k):
        rows = _rows(running)
        n = batch if isinstance(rows, slice) else len(rows)
        if n == 0:
            break
        best, best_score = _pick(residual[rows], dictionary, screen, longest_atom, ids[rows, :s], scores_buffer[:n])
        atom = dictionary[best]
        if s:
            cross = torch.bmm(picked[rows, :s], atom[:, :, None])  # G_{S,j}
            row = torch.bmm(inverse[rows, :s, :s], cross)[:, :, 0]  # the new row of L, L⁻¹ G_{S,j}
        else:
            row = atom.new_zeros(n, 0)
        pivot = square_norms[best] - row.square().sum(1)
        # Stop rules. The correlation floor is scikit-learn's (|c|² < eps for unit y and atoms), made scale-free: it
        # only fires once the target is numerically in the span of the picked atoms. The pivot is the squared distance
        # of the new atom to that span, an upper bound on the smallest eigenvalue of G_SS; the refit's relative error
        # is then at least eps / pivot, so below sqrt(eps) the coefficients would keep fewer than half their digits.
        alive = (best_score > sqrt_eps * longest_atom * target_norms[rows]) & (pivot > sqrt_eps * square_norms[best])
        if not alive.all():
            running[rows] = alive
            rows = _rows(running)
            best, atom, row, pivot = best[alive], atom[alive], row[alive], pivot[alive]
            if len(best) == 0:
                break
        diagonal = pivot.sqrt()
        if s:  # L gains the row [rowᵀ, l]; L⁻¹ gains [−rowᵀ L⁻¹ / l, 1 / l]
            inverse[rows, s, :s] = -torch.bmm(row[:, None, :], inverse[rows, :s, :s])[:, 0] / diagonal[:, None]
        inverse[rows, s, s] = 1 / diagonal
        coordinates[rows, s] = ((atom * targets[rows]).sum(1) - (row * coordinates[rows, :s]).sum(1)) / diagonal
        ids[rows, s] = best
        picked[rows, s] = atom
        refit = torch.bmm(coordinates[rows, None, : s + 1], inverse[rows, : s + 1, : s + 1])  # xᵀ = zᵀ L⁻¹
        coef[rows, : s + 1] = refit[:, 0]
        residual[rows] = targets[rows] - torch.bmm(refit, picked[rows, : s + 1])[:, 0]
        if tol is not None:
            running[rows] = residual[rows].norm(dim=1) > tol
    return ids, coef


def _pick(
    residual: torch.Tensor,
    dictionary: torch.Tensor,
    screen: torch.Tensor | None,
    longest_atom: torch.Tensor,
    taken: torch.Tensor,
    buffer: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """For each residual row, the atom not in `taken` with the largest |correlation| (ties → lowest id), and its value.

    In float64 the product with all atoms dominates the run time, so it is screened with the float32 copy `screen`
    (twice as fast) and only the atoms that could still be the best are rescored in float64. The float32 error is at
    most (d + 2)·u·Σ_i|r_i d_ji| ≤ (d + 2)·u·‖r‖·‖d_j‖ (u = 2⁻²⁴: both inputs rounded once, then any summation order
    of d products); one more u covers the float64 rescoring's own error (d·2⁻⁵³). Every atom whose screened score
    is within twice that bound of the screened best is a candidate, and no other atom can reach the float64 best.
    Candidates must all sit among the top SCREENED_CANDIDATES of the best block; rows where they do not (near-ties
    spread over blocks, many duplicates) take the full float64 product instead, so the pick is always the float64
    one.
    """
    if screen is None:
        return _exact_pick(residual, dictionary, taken, buffer)
    n, dim = residual.shape
    scores = torch.matmul(residual.to(screen.dtype), screen.T, out=buffer).abs_()
    scores.scatter_(1, taken, -torch.inf)  # never pick an atom twice
    blocks = scores.view(n, -1, ARGMAX_BLOCK)
    block_best = blocks.amax(dim=2)
    winner = block_best.argmax(dim=1)
    screened_best = block_best.gather(1, winner[:, None])[:, 0].to(residual.dtype)
    bound = (dim + 3) * torch.finfo(screen.dtype).eps / 2 * residual.norm(dim=1) * longest_atom
    threshold = (screened_best - 2 * bound)[:, None]
    candidate_score, position = blocks[torch.arange(n, device=residual.device), winner].topk(SCREENED_CANDIDATES)
    complete = ((block_best >= threshold).sum(1) == 1) & (candidate_score[:, -1] < threshold[:, 0])
    candidates = winner[:, None] * ARGMAX_BLOCK + position
    exact = torch.bmm(dictionary[candidates], residual[:, :, None])[:, :, 0].abs()
    exact = torch.where(candidate_score >= threshold, exact, -torch.inf)
    best_score = exact.amax(dim=1)
    best = torch.where(exact == best_score[:, None], candidates, len(dictionary)).amin(dim=1)
    if not complete.all():
        rows = (~complete).nonzero()[:, 0]
        best[rows], best_score[rows] = _exact_pick(residual[rows], dictionary, taken[rows], None)
    return best, best_score


def _exact_pick(
    residual: torch.Tensor, dictionary: torch.Tensor, taken: torch.Tensor, buffer: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """`_pick` by the full product in the working precision."""
    scores = torch.matmul(residual, dictionary.T, out=buffer).abs_()
    scores.scatter_(1, taken, -torch.inf)  # never pick an atom twice
    return _first_argmax(scores)


def _first_argmax(scores: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Column of each row's maximum, the lowest one among equal maxima, and the maximum itself.

    Same result as argmax, but several times faster on CPU: argmax is a scalar loop there while amax is vectorised,
    so we take block maxima with amax and run argmax only over the block maxima and inside the winning block.
    """
    n, m = scores.shape
    blocks = scores.view(n, m // ARGMAX_BLOCK, ARGMAX_BLOCK)
    block = blocks.amax(dim=2).argmax(dim=1)
    inside = blocks[torch.arange(n, device=scores.device), block]
    offset = inside.argmax(dim=1)
    return block * ARGMAX_BLOCK + offset, inside.gather(1, offset[:, None])[:, 0]


def _rows(mask: torch.Tensor) -> slice | torch.Tensor:
    """Index of the True rows; a plain slice when all are, so the common case indexes views instead of copies."""
    return slice(None) if bool(mask.all()) else mask.nonzero()[:, 0]


def _cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Row-wise cosine; 0 where either row is zero (an empty code explains nothing)."""
    tiny = torch.finfo(a.dtype).tiny
    return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1)).clamp_min(tiny)


def _finite_matrix(name: str, x: Any) -> torch.Tensor:
    x = torch.as_tensor(x)
    if x.ndim != 2 or 0 in x.shape:
        raise CliplensError(f"{name} must be a non-empty matrix [n, d], got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise CliplensError(f"{name} must be floating point, got {x.dtype}")
    if not torch.isfinite(x).all():
        raise CliplensError(f"{name} contain NaN or infinite values; recompute them in float32 or float64")
    return x


class SparseTextDecomposition:
    """Explain each target direction by `n_atoms` signed texts (docs/methods/omp.md), scikit-learn style.

    `fit(targets [B, d], text_embeddings [M, d], texts)` builds the dictionary with `prepare_dictionary` and solves
    OMP for all targets. Fitted attributes: `dictionary_` [M, d], `ids_` [B, k] (−1 = unused), `coef_` [B, k]
    sorted by |coef| descending, `n_nonzero_` [B], `fidelity_` [B] = cos(y, x D), `texts_` (per target, a list of
    (text, coef); None when no texts were given) and `directions_` [B, d] = x D, unit rows if `renormalize`.
    A negative coefficient means the target points away from that text.

    `dtype` None works in float64 if either input is float64, else float32; `device` None uses the targets' device.
    """

    def __init__(
        self,
        n_atoms: int = 128,
        *,
        dict_norm: DictNorm = "row",
        scale: float = 1.0,
        tol: float | None = None,
        renormalize: bool = True,
        batch_size: int = 1024,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ):
        require_positive_int("n_atoms", n_atoms)
        require_positive_int("batch_size", batch_size)
        self.n_atoms = n_atoms
        self.dict_norm = dict_norm
        self.scale = scale
        self.tol = tol
        self.renormalize = bool(renormalize)
        self.batch_size = batch_size
        self.dtype = dtype
        self.device = device

    def get_params(self) -> dict[str, Any]:
        return {
            "n_atoms": self.n_atoms,
            "dict_norm": self.dict_norm,
            "scale": self.scale,
            "tol": self.tol,
            "renormalize": self.renormalize,
            "batch_size": self.batch_size,
            "dtype": self.dtype,
            "device": self.device,
        }

    def fit(self, targets: Any, text_embeddings: Any, texts: Sequence[str] | None = None, *,
            progress: bool = False) -> SparseTextDecomposition:
        targets = _finite_matrix("targets", targets)
        pool = _finite_matrix("text embeddings", text_embeddings)
        if texts is not None and len(texts) != len(pool):
            raise CliplensError(f"{len(texts)} texts for {len(pool)} text embeddings; pass one text per embedding row")
        dtype = self.dtype
        if dtype is None:
            dtype = torch.float64 if torch.float64 in (targets.dtype, pool.dtype) else torch.float32
        device = targets.device if self.device is None else torch.device(self.device)
        targets = targets.to(device, dtype)
        self.dictionary_ = prepare_dictionary(pool.to(device, dtype), self.dict_norm, self.scale)
        codes = orthogonal_matching_pursuit(
            targets, self.dictionary_, self.n_atoms, tol=self.tol, batch_size=self.batch_size, progress=progress
        )
        self.ids_, self.coef_, self.fidelity_ = codes.ids, codes.coef, codes.fidelity
        self.n_nonzero_ = codes.n_nonzero
        self.texts_ = None if texts is None else [
            [(texts[j], c) for j, c in zip(ids, coefs) if j >= 0]
            for ids, coefs in zip(self.ids_.tolist(), self.coef_.tolist())
        ]
        self.directions_ = self.reconstruct()
        return self

    def reconstruct(self, renormalize: bool | None = None) -> torch.Tensor:
        """x D [B, d] per target; `renormalize` (default: the constructor's) gives unit rows
        (docs/methods/omp.md#reconstruction)."""
        require_fitted(self, "coef_")
        unit = self.renormalize if renormalize is None else renormalize
        return reconstruct_from_codes(self.ids_, self.coef_, self.dictionary_, renormalize=unit)
