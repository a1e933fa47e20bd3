"""The shared DMT core: losses, pseudo-labelling, training loop, checkpoints, metrics, logging.

Segmentation (``segmentation/``) and classification (``classification/``) both build on this
package; nothing here knows which of the two is calling.
"""
