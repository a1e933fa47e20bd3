"""ImageNet backbone weights: find them in torch.hub's checkpoint folder, download, or fail clearly.

``pretrained="imagenet"`` uses torchvision's ``IMAGENET1K_V1`` weights (the V1 entries are the
original 2017 ImageNet weights the DMT code loaded; for ResNet-101 the original file was named
``resnet101-5d3b4d8f.pth``, which is accepted too if it sits in the folder). The file is looked up
in ``torch.hub.get_dir()/checkpoints`` (``$TORCH_HOME/hub/checkpoints``); if it is absent it is
downloaded, and if that fails a :class:`UserError` names the file, the URL and the folder. There is
no silent fallback to random weights.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn
from torchvision.models import MobileNet_V3_Large_Weights, ResNet50_Weights, ResNet101_Weights

from utils.errors import UserError
from utils.io import atomic_path

# backbone -> (torchvision download URL, older file names accepted in the checkpoint folder)
IMAGENET_WEIGHTS: dict[str, tuple[str, tuple[str, ...]]] = {
    "resnet101": (ResNet101_Weights.IMAGENET1K_V1.url, ("resnet101-5d3b4d8f.pth",)),
    "resnet50": (ResNet50_Weights.IMAGENET1K_V1.url, ("resnet50-19c8e357.pth",)),
    "mobilenet_v3_large": (MobileNet_V3_Large_Weights.IMAGENET1K_V1.url, ()),
}


def hub_checkpoint_dir() -> Path:
    """torch.hub's weights folder (``$TORCH_HOME/hub/checkpoints``), read at call time."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def imagenet_weights_file(backbone: str) -> Path:
    """Path of the ImageNet file for ``backbone``; downloads it if absent, UserError if that fails."""
    if backbone not in IMAGENET_WEIGHTS:
        raise UserError(f"--backbone {backbone}: has no ImageNet weights; use --pretrained none (random init) "
                        f"or one of {sorted(IMAGENET_WEIGHTS)}")
    url, older_names = IMAGENET_WEIGHTS[backbone]
    folder = hub_checkpoint_dir()
    file_name = os.path.basename(url)
    for name in (*older_names, file_name):
        if (folder / name).is_file():
            return folder / name
    target = folder / file_name
    hash_match = torch.hub.HASH_REGEX.search(file_name)
    try:
        with atomic_path(target) as tmp:
            torch.hub.download_url_to_file(url, str(tmp), hash_match.group(1) if hash_match else None,
                                           progress=True)
    except Exception as exc:  # no network, HTTP error, hash mismatch, ...
        raise UserError(
            f"{target}: ImageNet weights for {backbone} not found and the download failed "
            f"({type(exc).__name__}: {exc}); download {url} and put it in {folder} "
            f"(the folder follows $TORCH_HOME), pass a weights file path, or use pretrained=None "
            f"for random init") from exc
    return target


def read_state_dict(path: str | os.PathLike, hint: str = "check the path or download the file again"
                    ) -> dict[str, torch.Tensor]:
    """``torch.load`` a plain state dict of tensors onto the CPU; UserError (ending in ``hint``) if
    the file is missing, unreadable or not a state dict."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: weights file not found; {hint}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise UserError(f"{path}: cannot be read as a PyTorch weights file ({type(exc).__name__}); {hint}") from exc
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"{path}: is not a plain state dict of tensors (a training checkpoint?); {hint}")
    return state


def load_backbone_weights(trunk: nn.Module, path: str | os.PathLike, backbone: str) -> None:
    """Load a torchvision-style classification state dict into ``trunk`` (its classifier is ignored).

    Every trunk tensor except BN ``num_batches_tracked`` must be present with the right shape.
    """
    state = read_state_dict(path, f"pass the torchvision {backbone} ImageNet weights file (training "
                                  f"checkpoints go to --continue-from)")
    own = trunk.state_dict()
    chosen = {k: v for k, v in state.items() if k in own}
    missing = [k for k in own if k not in chosen and not k.endswith("num_batches_tracked")]
    wrong_shape = [k for k, v in chosen.items() if v.shape != own[k].shape]
    if missing or wrong_shape:
        example = (missing or wrong_shape)[0]
        raise UserError(f"{path}: not {backbone} ImageNet weights ({len(missing)} of {len(own)} backbone "
                        f"tensors missing, {len(wrong_shape)} with a wrong shape, e.g. {example}); "
                        f"pass the torchvision {backbone} ImageNet file")
    trunk.load_state_dict(chosen, strict=False)
