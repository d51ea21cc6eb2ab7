"""Segmentation metrics as the benchmarks define them (docs/methods/segmentation.md#metrics), streamed.

Every metric is accumulated over the dataset from counts (confusion matrices) and, for mAP, one number per image, so
memory does not grow with the number of images and no mask is kept.

- Binary (ImageNet-segmentation protocol, Chefer et al. 2021): pixel accuracy = Σ correct / Σ pixels; mIoU = the mean
  over {background, foreground} of dataset-wide I_c / U_c; mAP = the mean over images of the average precision
  (scikit-learn's Σ_n (R_n − R_{n−1}) P_n) of the soft two-channel map [1 − m, m] against the one-hot truth [bg, fg],
  both channels pooled.
- Multi-class (PASCAL Context protocol): per-class IoU from dataset-wide I / U, averaged over the classes that occur
  (U > 0); pixels labelled `ignore` in the truth count nowhere.
"""

from __future__ import annotations

import torch

from ..errors import CliplensError


def average_precisions(scores: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """scikit-learn's average_precision_score of each row of [B, n] scores against [B, n] truth, all rows in one sort:
    Σ over distinct thresholds of (R_n − R_{n−1}) P_n, i.e. every hit weighs 1/positives times the precision at the
    end of its run of tied scores. A score of −inf with no hit (an ignored pixel) changes nothing."""
    order = scores.double().argsort(dim=1, descending=True, stable=True)
    ranked, hits = scores.double().gather(1, order), truth.gather(1, order).double()
    found = hits.cumsum(1)
    if (found[:, -1] == 0).any():
        raise CliplensError("average precision needs at least one positive pixel")
    positions = torch.arange(ranked.shape[1], device=ranked.device).expand_as(ranked)
    ends = torch.ones_like(hits, dtype=torch.bool)
    ends[:, :-1] = ranked[:, 1:] != ranked[:, :-1]
    run_end = torch.where(ends, positions, ranked.shape[1]).flip(1).cummin(1).values.flip(1)
    precision = (found / (positions + 1)).gather(1, run_end)
    return (hits * precision).sum(1) / found[:, -1]


def average_precision(scores: torch.Tensor, truth: torch.Tensor) -> float:
    """scikit-learn's average_precision_score for one flat set: thresholds at every distinct score, ties together."""
    return float(average_precisions(scores.flatten()[None], truth.flatten()[None])[0])


def binary_average_precision(soft: torch.Tensor, foreground: torch.Tensor) -> float:
    """AP of the pooled channels [1 − soft, soft] against [background, foreground] (one image)."""
    foreground = foreground.bool()
    return average_precision(torch.cat([1 - soft.flatten(), soft.flatten()]),
                             torch.cat([~foreground.flatten(), foreground.flatten()]))


class BinarySegmentation:
    """Streaming binary metrics: a 2×2 confusion matrix (truth × prediction) and the sum of per-image APs."""

    def __init__(self) -> None:
        self.confusion = torch.zeros(2, 2, dtype=torch.float64)
        self.ap_sum = 0.0
        self.images = 0

    def update(self, soft: torch.Tensor, predicted: torch.Tensor, truth: torch.Tensor,
               valid: torch.Tensor | None = None) -> None:
        """One batch: soft maps in [0, 1], hard foreground masks and true foreground masks, all [B, H, W]; pixels
        where `valid` is False (ignored truth) count nowhere."""
        if not soft.shape == predicted.shape == truth.shape:
            raise CliplensError(f"maps {tuple(soft.shape)}, masks {tuple(predicted.shape)} and truth "
                                f"{tuple(truth.shape)} must have one shape")
        soft, predicted, truth = soft.cpu(), predicted.bool().cpu(), truth.bool().cpu()
        valid = torch.ones_like(truth) if valid is None else valid.bool().cpu()
        cells = 2 * truth[valid].long() + predicted[valid].long()
        self.confusion += torch.bincount(cells, minlength=4).view(2, 2).double()
        # per image, AP of [1 − soft, soft] against [background, foreground] over its valid pixels, one sort per batch
        flat_soft, flat_truth, flat_valid = soft.flatten(1).double(), truth.flatten(1), valid.flatten(1).repeat(1, 2)
        scores = torch.cat([1 - flat_soft, flat_soft], 1).masked_fill(~flat_valid, float("-inf"))
        hits = torch.cat([~flat_truth, flat_truth], 1) & flat_valid
        self.ap_sum += float(average_precisions(scores, hits).sum())
        self.images += len(soft)

    def pixel_accuracy(self) -> float:
        return float(self.confusion.diagonal().sum() / self.confusion.sum())

    def miou(self) -> float:
        return iou(self.confusion).nanmean().item()

    def map(self) -> float:
        return self.ap_sum / self.images

    def state(self) -> dict[str, torch.Tensor]:
        """The accumulators, exactly (an analysis stores them: docs/methods/analysis.md#segmentation)."""
        return {"confusion": self.confusion, "ap_sum": torch.tensor(self.ap_sum, dtype=torch.float64),
                "images": torch.tensor(self.images)}

    @classmethod
    def restored(cls, state: dict[str, torch.Tensor]) -> BinarySegmentation:
        metric = cls()
        metric.confusion, metric.ap_sum, metric.images = state["confusion"], state["ap_sum"].item(), int(
            state["images"])
        return metric


def iou(confusion: torch.Tensor) -> torch.Tensor:
    """Per-class I/U from a truth × prediction confusion matrix; NaN for a class absent from truth and prediction."""
    intersection = confusion.diagonal()
    union = confusion.sum(0) + confusion.sum(1) - intersection
    return torch.where(union > 0, intersection / union.clamp_min(1), torch.full_like(union, float("nan")))


class MultiClassSegmentation:
    """Streaming multi-class mIoU: a classes × classes confusion matrix; truth pixels equal to `ignore` are skipped."""

    def __init__(self, classes: int, ignore: int = 255) -> None:
        self.classes, self.ignore = classes, ignore
        self.confusion = torch.zeros(classes, classes, dtype=torch.float64)

    def update(self, predicted: torch.Tensor, truth: torch.Tensor) -> None:
        """One batch of label maps [B, H, W] (integers in [0, classes), truth may also hold `ignore`)."""
        truth, predicted = truth.flatten().long().cpu(), predicted.flatten().long().cpu()
        kept = truth != self.ignore
        truth, predicted = truth[kept], predicted[kept]
        if len(truth) and (truth.max() >= self.classes or truth.min() < 0 or predicted.max() >= self.classes
                           or predicted.min() < 0):
            raise CliplensError(f"label maps must hold classes 0..{self.classes - 1} (or {self.ignore} to ignore)")
        cells = torch.bincount(self.classes * truth + predicted, minlength=self.classes**2)
        self.confusion += cells.view(self.classes, self.classes).double()

    def miou(self) -> float:
        return iou(self.confusion).nanmean().item()

    def state(self) -> dict[str, torch.Tensor]:
        """The accumulator, exactly (an analysis stores it)."""
        return {"confusion": self.confusion}

    @classmethod
    def restored(cls, state: dict[str, torch.Tensor], ignore: int) -> MultiClassSegmentation:
        metric = cls(len(state["confusion"]), ignore)
        metric.confusion = state["confusion"]
        return metric
