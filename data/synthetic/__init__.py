"""Deterministic synthetic datasets in the exact on-disk formats of VOC 2012, Cityscapes and CIFAR-10.

Every class is a (shape, texture) pair: a disc, square, triangle, star, cross or ring filled with a
solid, striped, checked, dotted, grid or speckled texture, drawn in a random colour (any hue), size,
aspect, position and rotation on a cluttered background (smooth random colour field, low-contrast
random blobs that are not class shapes, pixel noise). Colour therefore says nothing about the class:
a model has to learn shape and texture, which makes the data learnable but not trivial.

Formats written (``<root>`` is the ``--root`` argument):

* ``voc``: ``<root>/VOCdevkit/VOC2012/JPEGImages/<id>.jpg`` (RGB, quality 90),
  ``SegmentationClassAug/<id>.png`` (palette PNG, standard VOC colormap, 0 = background,
  1-20 = classes, 255 = a band 1 px either side of every object edge, like VOC's void outlines) and
  ``ImageSets/Segmentation/{trainaug,train,val}.txt`` (sorted ``{year}_{6 digits}`` ids; ``train`` is
  a ~14 % subset of ``trainaug``, like VOC's 1,464 of 10,582).
* ``cityscapes``: ``<root>/leftImg8bit/{train,val}/<city>/<city>_<seq>_<frame>_leftImg8bit.png`` and
  ``<root>/gtFine/{train,val}/<city>/<...>_gtFine_{labelIds,color,instanceIds}.png`` +
  ``_gtFine_polygons.json``; label ids are the real Cityscapes ids (the 19 evaluated classes plus
  ignored ids 0, 1, 4, 5, 6, 9, 10); a street-like layout (sky, building/wall/fence/vegetation/
  terrain segments, sidewalk, road) with the 11 "thing" classes as shape x texture objects.
  ``torchvision.datasets.Cityscapes(root, split, mode="fine", target_type=...)`` loads it.
* ``cifar10``: ``<root>/cifar-10-batches-py/{data_batch_1..5,test_batch,batches.meta}``, pickles with
  the real bytes keys (``pickle.load(f, encoding="bytes")``); 32x32 images, one object each,
  class-balanced.

Determinism: image ``i`` of a split is drawn from ``numpy.random.default_rng([seed, kind, split, i])``,
so the same arguments give byte-identical files.

Atomicity (:mod:`data.synthetic.common`): a dataset is built in
``<root>/.tmp-synthetic-<kind>-<pid>`` and its top-level folder(s) are renamed into ``<root>`` only
when complete; then the marker ``<root>/synthetic-<kind>.json`` (arguments + generator version) is
written last through :mod:`utils.io`. A rerun with the same arguments finds the marker and returns
at once; other arguments on the same root are a UserError.

Modules: ``drawing`` (shapes, textures, backgrounds), ``common`` (random streams, atomic build,
checks), one per kind (``voc``, ``cityscapes``, ``cifar10``) and ``cli``; the VOC palette is
:mod:`segmentation.palette`'s.

CLI::

    python -m data.synthetic --kind voc|cityscapes|cifar10 --root DIR [--num-train N] [--num-val N]
        [--size H W | --size-range LO HI | --image-size S] [--classes ID ...] [--seed S] [--workers N]

For cifar10, --num-train / --num-val are images PER CLASS (train over 5 batches / test_batch).
Functions: make_voc(root, num_train, num_val, size=None, size_range=(72, 128), seed, workers),
make_cityscapes(root, num_train, num_val, size=(64, 128), seed, workers),
make_cifar10(root, num_train_per_class, num_test_per_class, seed, workers).
"""
from data.synthetic.cifar10 import CIFAR_LABEL_NAMES, CIFAR_STYLES, make_cifar10
from data.synthetic.cityscapes import CITY_LABELS, CITY_TRAIN_CITIES, CITY_VAL_CITIES, city_entries, make_cityscapes
from data.synthetic.cli import main
from data.synthetic.common import GENERATOR_VERSION, KIND_CODES, marker_path, parallel_map, sample_rng
from data.synthetic.drawing import SHAPES, TEXTURES
from data.synthetic.voc import VOC_NUM_CLASSES, VOC_STYLES, make_voc, voc_ids

__all__ = ["CIFAR_LABEL_NAMES", "CIFAR_STYLES", "CITY_LABELS", "CITY_TRAIN_CITIES", "CITY_VAL_CITIES",
           "GENERATOR_VERSION", "KIND_CODES", "SHAPES", "TEXTURES", "VOC_NUM_CLASSES", "VOC_STYLES", "city_entries",
           "main", "make_cifar10", "make_cityscapes", "make_voc", "marker_path", "parallel_map", "sample_rng",
           "voc_ids"]
