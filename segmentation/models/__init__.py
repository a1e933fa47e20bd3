"""DeepLab-v2 segmentation models (docs/method.md §4.1–4.2)."""
from segmentation.models.backbones import BACKBONES, build_trunk
from segmentation.models.deeplab_v2 import (ASPPv2, DeepLabV2, deeplab_v2, logits_to_stride8, parameter_groups,
                                            stride8_size)
from segmentation.models.pretrained import (IMAGENET_WEIGHTS, hub_checkpoint_dir, imagenet_weights_file,
                                            load_backbone_weights, read_state_dict)

__all__ = ["ASPPv2", "BACKBONES", "DeepLabV2", "IMAGENET_WEIGHTS", "build_trunk", "deeplab_v2",
           "hub_checkpoint_dir", "imagenet_weights_file", "load_backbone_weights", "logits_to_stride8",
           "parameter_groups", "read_state_dict", "stride8_size"]
