"""Image datasets and every choice of indices: readers of image folders, archives and
CIFAR-10's official release, the decoded-array cache, and the train/validation/test,
search-set, calibration and training-subset splits.

May import: `surrogate_nas.errors`, `genome`, `config` only (no TensorFlow).
"""

from surrogate_nas._lazy import lazy_face

__getattr__, __dir__, __all__ = lazy_face(__name__, {
    "datasets": ["Cifar10", "Dataset", "load_cifar10", "load_images"],
    "readers": ["CLASSES", "SOURCE_SPLITS", "IMAGE_SUFFIXES"],
    "splits": ["Splits", "validation_size", "make_splits", "search_subset", "CALIBRATION_IMAGES", "calibration_indices", "training_subset"],
})
