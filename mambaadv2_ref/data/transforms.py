"""Image and mask loading for the network input: resize, ImageNet normalisation, binarisation.

Glossary (code name -> symbol):
    IMAGENET_MEAN  mu     per-channel mean of ImageNet RGB in [0, 1]
    IMAGENET_STD   sigma  per-channel standard deviation
    image_size     S      side of the square network input (S x S)

The one place these constants live: the encoder side imports them from here.

Resizing choice: MambaAD does Resize(256) (short side) then CenterCrop(256). For square images
(MVTec AD, VisA after our conversion, the embedded dataset) that is the same as resizing to S x S.
For non-square images such as BSData's 629 x 256 ball screw photos a centre crop would throw away
more than half of the image and the defects in it, so we resize the whole image to S x S
(bilinear, antialiased) and accept the change of aspect ratio. Masks go through the same
geometry with nearest-neighbour resampling, so a mask pixel is never invented.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _check_image_tensor(x: torch.Tensor, name: str) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() < 3 or x.shape[-3] != 3:
        raise ValueError(f"{name} must have shape (..., 3, H, W), got {tuple(x.shape)}")


def normalise(x: torch.Tensor) -> torch.Tensor:
    """Standardise RGB images with the ImageNet statistics.

    Args:
        x: images in [0, 1], shape (..., 3, H, W).

    Returns:
        (x - mu) / sigma, same shape and dtype.

    Implements: the ImageNet normalisation of MambaAD's data pipeline (book appendix A.1.4).
    """
    _check_image_tensor(x, "x")
    mean = torch.tensor(IMAGENET_MEAN, dtype=x.dtype, device=x.device).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=x.dtype, device=x.device).view(3, 1, 1)
    return (x - mean) / std


def denormalise(x: torch.Tensor) -> torch.Tensor:
    """Undo :func:`normalise` (for display): x * sigma + mu.

    Args:
        x: normalised images, shape (..., 3, H, W).

    Returns:
        images in (approximately) [0, 1], same shape and dtype.
    """
    _check_image_tensor(x, "x")
    mean = torch.tensor(IMAGENET_MEAN, dtype=x.dtype, device=x.device).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=x.dtype, device=x.device).view(3, 1, 1)
    return x * std + mean


def _check_size(image_size: int) -> None:
    if not isinstance(image_size, int) or image_size < 8:
        raise ValueError(f"image_size must be an int >= 8, got {image_size!r}")


def load_image(path: str | Path, image_size: int) -> torch.Tensor:
    """Read an image file (PNG/JPG, gray or colour) as a normalised square tensor.

    Args:
        path: image file; grayscale, palette and RGBA images become RGB.
        image_size: S, the side of the output.

    Returns:
        float32 tensor (3, S, S), ImageNet-normalised.
    """
    _check_size(image_size)
    with Image.open(path) as img:
        rgb = img.convert("RGB").resize((image_size, image_size), Image.BILINEAR)
    x = torch.from_numpy(np.asarray(rgb, dtype=np.float32) / 255.0).permute(2, 0, 1)
    return normalise(x.contiguous())


def binarise_mask(values: np.ndarray) -> np.ndarray:
    """Binarise a ground-truth mask array.

    Args:
        values: uint8 mask (H, W), either 0/255 (MVTec) or 0/1 label values.

    Returns:
        bool (H, W): > 127 for 0..255 masks (MambaAD's > 0.5 after ToTensor), > 0 for 0/1 masks.
    """
    if values.ndim != 2:
        raise ValueError(f"mask must be 2-D (H, W), got shape {values.shape}")
    return values > 127 if values.max(initial=0) > 1 else values > 0


def load_mask(path: str | Path, image_size: int) -> torch.Tensor:
    """Read a ground-truth mask file as a binary square tensor.

    Args:
        path: mask image (any mode; converted to 8-bit gray).
        image_size: S, the side of the output.

    Returns:
        float32 tensor (1, S, S) with values in {0, 1} (nearest resize, then binarised).
    """
    _check_size(image_size)
    with Image.open(path) as img:
        gray = img.convert("L").resize((image_size, image_size), Image.NEAREST)
    mask = binarise_mask(np.asarray(gray))
    return torch.from_numpy(mask.astype(np.float32))[None]
