"""Data: MVTec-layout datasets, ImageNet normalisation, the embedded default dataset.

    transforms  IMAGENET_MEAN / IMAGENET_STD, normalise / denormalise, image and mask loading
    mvtec       MVTecDataset, list_classes (MVTec AD, VisA converted, BSData, embedded)
    check       check_dataset: open every image and mask up front, name each bad file;
                dataset_fingerprint: hash of file names and sizes (resume compares it)
    holdout     choose_holdout: the good training images a run withholds from training for
                its z statistics (setting statistics_holdout; eq. H1)
    defects     synthetic defects with exact masks
    embedded    embedded_dataset_root (built once, cached)
    tiny        make_tiny_dataset: procedural textures with exact defects, for fast tests
    download    resumable, checksummed downloads and extraction (used by data_scripts/)
    visa        VisA -> MVTec layout conversion
"""

from mambaadv2_ref.data.check import check_dataset, dataset_fingerprint
from mambaadv2_ref.data.embedded import embedded_dataset_root
from mambaadv2_ref.data.mvtec import MVTecDataset, list_classes
from mambaadv2_ref.data.tiny import make_tiny_dataset
from mambaadv2_ref.data.transforms import IMAGENET_MEAN, IMAGENET_STD, denormalise, normalise

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "MVTecDataset",
    "check_dataset",
    "dataset_fingerprint",
    "denormalise",
    "embedded_dataset_root",
    "list_classes",
    "make_tiny_dataset",
    "normalise",
]
