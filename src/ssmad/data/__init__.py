"""ssmad.data: anomaly-detection datasets read as distributed, and synthetic data.

`build_dataset(kind, root, split, ...)` reads MVTec AD, VisA, MPDD, BTAD, MVTec 3D-AD (RGB)
or a user's own folders; `make_synthetic(root, ...)` writes a small MVTec-layout dataset;
`read_image` (files) / `decode_image` (bytes, e.g. uploads) / `to_rgb` (PIL images) / `ImageTransform` prepare arbitrary files for prediction.
"""

from ssmad.data.dataset import AnomalyDataset, build_dataset, split_validation
from ssmad.data.image_io import IMAGE_EXTENSIONS, ImageReadError, decode_image, printable, read_image, read_mask, to_rgb
from ssmad.data.layouts import DATASET_CHOICES, DATASET_KINDS, detect_kind
from ssmad.data.synthetic import SYNTHETIC_CLASSES, make_synthetic
from ssmad.data.transforms import IMAGENET_MEAN, IMAGENET_STD, ImageTransform

__all__ = [
    "DATASET_CHOICES",
    "DATASET_KINDS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "IMAGE_EXTENSIONS",
    "SYNTHETIC_CLASSES",
    "AnomalyDataset",
    "ImageReadError",
    "ImageTransform",
    "build_dataset",
    "detect_kind",
    "make_synthetic",
    "printable",
    "decode_image",
    "read_image",
    "read_mask",
    "split_validation",
    "to_rgb",
]
