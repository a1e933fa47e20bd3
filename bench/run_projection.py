"""Wall time of a whole DMT run projected from measured rates and the scripts' counts (docs/method.md §1.1, §7.3, §8).

A segmentation DMT run = 2 supervised baselines + 10 phase trainings (5 phases × models c and i),
10 labelling passes over the unlabelled list (one before each phase training) and the validation
passes of every training: after step s (1-based) when s mod v = v − 1 or s = L − 1, plus the final
evaluation the project adds after the last step (:class:`utils.trainer.Trainer`).
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RunPlan:
    """The counts of one scripted run (docs/method.md §7.3)."""

    name: str
    baselines: int
    baseline_iters: int
    baseline_val_every: int
    phases: int
    phase_iters: int
    phase_val_every: int
    labelings: int
    unlabelled_images: int
    val_images: int


VOC_20 = RunPlan("VOC 1/20 DMT (dmt-voc-20-1)", baselines=2, baseline_iters=8978, baseline_val_every=220,
                 phases=10, phase_iters=5744, phase_val_every=500, labelings=10,
                 unlabelled_images=10_582 - 530, val_images=1449)
CITY_8 = RunPlan("Cityscapes 1/8 DMT (dmt-city-8-1)", baselines=2, baseline_iters=7990, baseline_val_every=350,
                 phases=10, phase_iters=4340, phase_val_every=300, labelings=10,
                 unlabelled_images=2975 - 371, val_images=500)


def validation_passes(total_steps: int, val_every: int, final: bool = True) -> int:
    """Validation passes of one training run: steps s in 1..L with s mod v = v − 1, or s = L − 1
    (docs/method.md §8), plus the final evaluation after step L when ``final``."""
    scheduled = {s for s in range(val_every - 1, total_steps + 1, val_every) if s >= 1}
    if total_steps >= 2:
        scheduled.add(total_steps - 1)
    return len(scheduled) + int(final)


def project(plan: RunPlan, supervised_ms: float, dmt_ms: float, labelling_images_per_s: float,
            eval_images_per_s: float) -> dict[str, float]:
    """Seconds per part (baselines, phases, labelling, evaluation) and the total."""
    evaluations = (plan.baselines * validation_passes(plan.baseline_iters, plan.baseline_val_every)
                   + plan.phases * validation_passes(plan.phase_iters, plan.phase_val_every))
    parts = {
        "baselines_s": plan.baselines * plan.baseline_iters * supervised_ms / 1000,
        "phases_s": plan.phases * plan.phase_iters * dmt_ms / 1000,
        "labelling_s": plan.labelings * plan.unlabelled_images / labelling_images_per_s,
        "evaluation_s": evaluations * plan.val_images / eval_images_per_s,
    }
    return {**parts, "total_s": sum(parts.values()), "evaluations": evaluations}
