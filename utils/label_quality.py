"""How good a labelling pass's pseudo labels are, measured against the unlabelled set's ground truth
(docs/method.md §2.1 segmentation, §2.2 classification), and where the figures go.

The benchmark "unlabelled" sets all have ground truth (VOC trainaug, Cityscapes train, CIFAR-10
train). A labelling pass reads it *only* for this measurement: the thresholds and the written
files never see it (tests/test_label_quality.py proves the files are byte-identical with
``--no-gt-diagnostics``). Two confusion matrices (rows = ground truth, columns = label), counted
with ``bincount`` (:class:`utils.metrics.ConfusionMatrix`, no per-pixel Python) where the labels
are: the teacher's on the device during the forward pass; the kept labels' on the device in the
two-pass labeller, and in the host threads that threshold the cached maps in the one-pass one:

* ``teacher``: the labeller's argmax on every pixel (image) with ground truth, before thresholding;
* ``kept``: the written pseudo label on every kept (not 255) pixel with ground truth.

From them (percentages, ``None`` where a denominator is 0):

* ``accuracy`` — correct kept / kept (pixels; images for CIFAR);
* ``precision[c]`` — kept pixels labelled c whose truth is c / kept pixels labelled c;
* ``recall[c]`` — kept pixels labelled c whose truth is c / *all* pixels whose truth is c (pixels
  the threshold removed count as missed, so recall grows as the curriculum admits more);
* ``miou`` — mean IoU of the kept labels (IoU_c = K_cc / (row_c + column_c − K_cc) of ``kept``,
  averaged over the classes with a non-zero denominator, as the validation mIoU);
* ``teacher_accuracy`` / ``teacher_miou`` — pixel accuracy / mIoU of the argmax before thresholding.

The figures are stored in the pass's record (``labeling.json`` in the pseudo folder; for CIFAR the
``<train-set>_pseudo.json`` beside the pseudo file) under ``"diagnostics"``, written to TensorBoard as
``labeling/...`` scalars stepped by phase (:func:`series`), and copied by the phase's training run
into its ``log.txt`` line (:func:`log_fields`).
"""
from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Any, Mapping


SAMPLE_IMAGES = 4  # unlabelled images shown in TensorBoard after each segmentation labelling pass

PHASE = re.compile(r"__p(\d+)")


def quality(kept, teacher) -> dict[str, Any]:
    """The figures of the module docstring from the two C×C confusion matrices (torch tensors)."""
    import torch

    from utils.metrics import confusion_scores

    k, t = kept.double().cpu(), teacher.double().cpu()
    diag = torch.diag(k)

    def ratio(num: torch.Tensor, den: torch.Tensor) -> list[float | None]:
        return [None if float(d) == 0 else float(n) / float(d) * 100 for n, d in zip(num, den)]

    def finite(value: float) -> float | None:
        return value if math.isfinite(value) else None

    kept_scores, teacher_scores = confusion_scores(k), confusion_scores(t)
    return {"gt_count": int(t.sum()), "kept_gt_count": int(k.sum()),
            "accuracy": finite(kept_scores["pixel_acc"]),
            "precision": ratio(diag, k.sum(0)), "recall": ratio(diag, t.sum(1)), "miou": finite(kept_scores["miou"]),
            "teacher_accuracy": finite(teacher_scores["pixel_acc"]), "teacher_miou": finite(teacher_scores["miou"])}


def series(exp_name: str, continue_from: str | None, phase: int | None) -> tuple[str, int | None]:
    """(TensorBoard run name, phase) of a labelling pass.

    The phase is ``--label-phase`` if given, else read from the run names of the scripts: the target
    run after ``-for-`` (segmentation, ``E__p0--b-for-E__p1--a`` → 1), the run name itself
    (``E__p3…`` → 3), or the labeller's file (``E__p2--ema.pt`` → 3: phase k is labelled by phase k−1's
    model). Every pass of one experiment and model then logs into one TensorBoard run,
    ``E__labeling--a`` (``E__labeling`` for CIFAR), as a curve over phases; a pass whose phase is
    unknown logs into its own run ``exp_name`` at step 0.
    """
    target = exp_name.rsplit("-for-", 1)[-1]
    match = list(PHASE.finditer(target))
    if match:
        found = int(match[-1].group(1))
        base, model = target[: match[-1].start()], target[match[-1].end():]
    elif continue_from and (m := list(PHASE.finditer(Path(continue_from).stem))):
        stem = Path(continue_from).stem
        found = int(m[-1].group(1)) + 1
        base, model = stem[: m[-1].start()], stem[m[-1].end():]
        model = "" if model == "--ema" else model
    else:
        return exp_name, phase
    return f"{base}__labeling{model}", phase if phase is not None else found


def json_safe(value: Any) -> Any:
    """NaN → None, recursively (JSON has no NaN)."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def log_scalars(logger, record: Mapping[str, Any], step: int) -> None:
    """``labeling/...`` scalars of a pass's record (kept fraction, ratio, and the diagnostics)."""
    logger.scalar("labeling/kept_fraction", record["kept_fraction"], step)
    logger.scalar("labeling/label_ratio", record["label_ratio"], step)
    diag = record.get("diagnostics")
    if not diag:
        return
    for key in ("accuracy", "miou", "teacher_accuracy", "teacher_miou"):
        if diag[key] is not None:
            logger.scalar(f"labeling/{key}", diag[key], step)
    for key in ("precision", "recall"):
        for c, value in enumerate(diag[key]):
            if value is not None:
                logger.scalar(f"labeling/{key}/{c:02d}", value, step)


def log_fields(record_path: str | os.PathLike | None) -> dict[str, Any]:
    """``log.txt`` fields of the training run that learns from a pass: ``pseudo_kept`` (fraction),
    ``pseudo_acc``, ``pseudo_miou``, ``teacher_miou``, ``teacher_acc`` (%). Empty without a record."""
    import json

    if record_path is None or not Path(record_path).is_file():
        return {}
    try:
        record = json.loads(Path(record_path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    fields: dict[str, Any] = {}
    if isinstance(record.get("kept_fraction"), (int, float)):
        fields["pseudo_kept"] = float(record["kept_fraction"])
    diag = record.get("diagnostics") or {}
    for field, key in (("pseudo_acc", "accuracy"), ("pseudo_miou", "miou"), ("teacher_acc", "teacher_accuracy"),
                       ("teacher_miou", "teacher_miou")):
        if isinstance(diag.get(key), (int, float)):
            fields[field] = float(diag[key])
    return fields
