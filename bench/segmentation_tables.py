"""The Markdown tables of the segmentation speed benchmark (:mod:`bench.segmentation`): the training steps
side by side, the labelling / evaluation / input-pipeline rates, the whole-run projections and the
loader workers ours' step needs.
"""
from __future__ import annotations

from typing import Any, Sequence

from bench import input_pipeline
from bench.common import fmt
from bench.segmentation_rates import EVAL_BATCH, LABEL_BATCH


def _size(size: Sequence[int]) -> str:
    return f"{size[0]}×{size[1]}"


def training_table(results: dict[str, Any]) -> list[str]:
    lines = ["| setting | step | batch | crop | variant | settings | ms/it | images/s | peak mem (GiB) "
             "| TFLOP/it | MFU |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, res in results.items():
        for step in ("supervised", "dmt"):
            for row in res["train"][step]["rows"]:
                mfu = None if row["mfu"] is None else 100 * row["mfu"]
                lines.append(f"| {name} | {step} | {res['train'][step]['batch_layout']} | {_size(res['crop'])} | "
                             f"{row['variant']} | {row['settings']} | {row['ms_per_it']:.1f} | "
                             f"{row['images_per_s']:.2f} | {fmt(row['peak_mem_gib'], '.2f')} | "
                             f"{row['tflop_per_it']:.4g} | {fmt(mfu, '.1f')}{'' if mfu is None else '%'} |")
    return lines


def throughput_table(results: dict[str, Any], pipeline: dict[str, Any] | None) -> list[str]:
    lines = ["| setting | pass | size | batch | variant | settings | images/s |", "|---|---|---|---|---|---|---|"]
    for name, res in results.items():
        for key in ("labelling", "evaluation"):
            for row in res[key]["rows"]:
                label = (f"labelling ({row['passes']} pass{'es' if row['passes'] > 1 else ''} + CBC + .npy)"
                         if key == "labelling" else "evaluation")
                lines.append(f"| {name} | {label} | {_size(res['test_size'])} | {LABEL_BATCH if key == 'labelling' else EVAL_BATCH} "
                             f"| {row['variant']} | {row['settings']} | {row['images_per_s']:.2f} |")
    if pipeline is not None:
        crop = _size(pipeline["crop"])
        lines.append(f"| voc | input pipeline (decode+augment, per worker) | {crop} | 1 | labelled | JPEG+PNG | "
                     f"{pipeline['labelled_per_worker']:.1f} |")
        lines.append(f"| voc | input pipeline (decode+augment, per worker) | {crop} | 1 | pseudo | JPEG+.npy | "
                     f"{pipeline['pseudo_per_worker']:.1f} |")
        lines.append(f"| voc | input pipeline (decode only, per worker) | 375×500 | 1 | labelled | JPEG+PNG | "
                     f"{pipeline['labelled_decode_per_worker']:.1f} |")
        lines.append(f"| voc | input pipeline (decode only, per worker) | 375×500 | 1 | pseudo | JPEG+.npy | "
                     f"{pipeline['pseudo_decode_per_worker']:.1f} |")
    return lines


def projection_table(results: dict[str, Any]) -> list[str]:
    lines = ["| run | part | count | reference (h) | ours (h) |", "|---|---|---|---|---|"]
    for res in results.values():
        plan, proj = res["plan"], res["projection"]
        ref, ours = proj["reference"], proj["ours"]
        counts = {"baselines_s": f"{plan['baselines']} × {plan['baseline_iters']:,} it",
                  "phases_s": f"{plan['phases']} × {plan['phase_iters']:,} it",
                  "labelling_s": f"{plan['labelings']} × {plan['unlabelled_images']:,} images",
                  "evaluation_s": f"{ref['evaluations']} × {plan['val_images']:,} images",
                  "total_s": f"ours/reference {proj['speedup']:.2f}×"}
        for key, count in counts.items():
            lines.append(f"| {plan['name'] if key == 'baselines_s' else ''} | {key[:-2]} | {count} | "
                         f"{ref[key] / 3600:.2f} | {ours[key] / 3600:.2f} |")
    return lines


def workers_lines(results: dict[str, Any], pipeline: dict[str, Any] | None) -> list[str]:
    """Workers each loader needs to keep up with ours' measured step rate (VOC input rates)."""
    if pipeline is None or "voc" not in results:
        return []
    res = results["voc"]
    out = []
    for step, (pseudo, labelled) in (("dmt", (7, 1)), ("supervised", (0, 8))):
        ours = next(r for r in res["train"][step]["rows"] if r["variant"] == "ours")
        steps_per_s = 1000 / ours["ms_per_it"]
        need = [f"labelled loader ≥ {input_pipeline.workers_needed(labelled * steps_per_s, pipeline['labelled_per_worker'])}"]
        if pseudo:
            need.insert(0, f"pseudo loader ≥ "
                           f"{input_pipeline.workers_needed(pseudo * steps_per_s, pipeline['pseudo_per_worker'])}")
        out.append(f"- voc {step} at {ours['images_per_s']:.1f} images/s: {', '.join(need)} workers "
                   "(the project's default is --workers 4 per loader)")
    return out
