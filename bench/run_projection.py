"""Wall time of a whole DMT run projected from measured rates and the scripts' counts (docs/method.md §1.1,
§1.2, §2.2, §7.2, §7.3, §8).

A segmentation DMT run (:class:`RunPlan`) = 2 supervised baselines + 10 phase trainings (5 phases ×
models c and i), 10 labelling passes over the unlabelled list (one before each phase training) and
the validation passes of every training: after step s (1-based) when s mod v = v − 1 or s = L − 1,
plus the final evaluation the project adds after the last step (:class:`utils.trainer.Trainer`).

A CIFAR-10 DMT run (:class:`CifarPlan`) = a baseline of 4,240 iterations of 512; 5 phases × 750
epochs of ⌈kept/496⌉ iterations (kept = r·N − 2, all at r = 1; N = 48,800 / 45,800 unlabelled); 5
labelling passes over N; validations every 1,000 iterations (+ the project's initial, final and EMA
passes) on test (baseline) or valtiny (phases); 6 EMA tests.
"""
from __future__ import annotations

import math
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


@dataclass(frozen=True)
class CifarPlan:
    """The counts of one scripted CIFAR-10 DMT run (docs/method.md §1.2, §2.2, §7.2, §7.3)."""

    name: str
    unlabelled: int
    baseline_iters: int = 4240
    baseline_batch: int = 512
    phase_epochs: int = 750
    ratios: tuple[float, ...] = (0.2, 0.4, 0.6, 0.8, 1.0)
    batch_pseudo: int = 496
    batch_labelled: int = 16
    val_every: int = 1000
    test_images: int = 10_000
    valtiny_images: int = 200

    def kept(self, ratio: float) -> int:
        """Images kept by the global curriculum (§2.2): all at r ≥ 1, else those strictly above the
        ⌊−rN + 1⌋-indexed sorted confidence: rN − 2 without ties."""
        return self.unlabelled if ratio >= 1 else -int(-ratio * self.unlabelled + 1) - 1

    def phase_iters(self) -> list[int]:
        return [self.phase_epochs * math.ceil(self.kept(r) / self.batch_pseudo) for r in self.ratios]


C10_1000 = CifarPlan("CIFAR-10 1,000 labels (dmt-c10-1000)", unlabelled=50_000 - 200 - 1_000)
C10_4000 = CifarPlan("CIFAR-10 4,000 labels (dmt-c10-4000)", unlabelled=50_000 - 200 - 4_000)


def project_run(plan: CifarPlan, *, baseline_it_s: float, phase_it_s: float, eval_images_per_s: float) -> dict:
    """Seconds per part and in total, from the seconds of one baseline and one phase iteration and the
    evaluation forward rate (labelling and evaluation both run it)."""
    phases = plan.phase_iters()
    evaluations = (validation_passes(plan.baseline_iters, plan.val_every) * plan.test_images
                   + sum((validation_passes(t, plan.val_every) + 2) * plan.valtiny_images for t in phases)
                   + plan.test_images                       # the baseline's EMA on its validation set (test)
                   + (1 + len(phases)) * plan.test_images)  # every phase's EMA tested (the scripts)
    parts = {"baseline_s": plan.baseline_iters * baseline_it_s,
             "phases_s": sum(phases) * phase_it_s,
             "labelling_s": len(plan.ratios) * plan.unlabelled / eval_images_per_s,
             "evaluation_s": evaluations / eval_images_per_s}
    return {**parts, "total_s": sum(parts.values()), "phase_iters": phases, "evaluated_images": evaluations}
