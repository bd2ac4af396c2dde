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

Masks: any non-zero label is a defect pixel, whatever the mask's format (0/255, 0/1, label values
0..k, 16-bit, palette or coloured: a pixel is normal only when black/zero); a mask whose grey
levels look like a blurred 0/255 mask is refused (see `binarise_mask`). Every file is opened
through `open_image`, so an unreadable one is named in the error.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from PIL import Image

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
HIGH_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")  # PIL modes of 16-bit grey PNGs


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


@contextmanager
def open_image(path: str | Path, what: str = "image") -> Iterator[Image.Image]:
    """Open and fully decode an image file; a file that cannot be read is named in the error.

    Args:
        path: image file. what: its role in the message ("image", "mask").

    Yields:
        the decoded PIL image (closed on exit).

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: not an image, truncated or corrupt (the message names the file).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} {str(path)!r} does not exist or is not a file")
    try:
        img = Image.open(path)
        img.load()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise ValueError(f"{what} {str(path)!r} cannot be read ({type(err).__name__}: {err})"
                         ) from err
    try:
        yield img
    finally:
        img.close()


def _grey_values(img: Image.Image, path: Path, what: str) -> tuple[np.ndarray, int]:
    """(H, W) integer values of a one-channel image and its full-scale value (255 or 65535)."""
    values = np.asarray(img)
    if img.mode == "1":
        return values.astype(np.uint8), 1
    if img.mode in HIGH_BIT_MODES:
        if values.min(initial=0) < 0 or values.max(initial=0) > 65535:
            raise ValueError(f"{what} {str(path)!r}: 32-bit values outside 0..65535 "
                             f"({values.min()}..{values.max()}); expected 8- or 16-bit data")
        return values.astype(np.int64), 65535
    return values, 255


def load_image(path: str | Path, image_size: int) -> torch.Tensor:
    """Read an image file (PNG/JPG; 8- or 16-bit; grey, palette or colour) as a square tensor.

    Args:
        path: image file. Palette, RGBA and 8-bit grey images become RGB; 16-bit grey images
            (PIL modes I;16 and I) are scaled by 1/65535 (not clipped to white) and repeated over
            the three channels; 16-bit colour PNGs are read by PIL at 8 bits per channel.
        image_size: S, the side of the output.

    Returns:
        float32 tensor (3, S, S), ImageNet-normalised.

    Raises:
        ValueError: unreadable or corrupt file, or an unsupported mode (the message names it).
    """
    _check_size(image_size)
    path = Path(path)
    size = (image_size, image_size)
    with open_image(path, "image") as img:
        if img.mode in HIGH_BIT_MODES:
            values, full = _grey_values(img, path, "image")
            grey = Image.fromarray(values.astype(np.float32) / full).resize(size, Image.BILINEAR)
            x = torch.from_numpy(np.asarray(grey, dtype=np.float32).copy())[None].expand(3, -1, -1)
        elif img.mode == "F":
            raise ValueError(f"image {str(path)!r}: floating-point images (PIL mode F) have no "
                             "known range; save as 8- or 16-bit PNG")
        else:
            rgb = img.convert("RGB").resize(size, Image.BILINEAR)
            x = torch.from_numpy(np.asarray(rgb, dtype=np.float32) / 255.0).permute(2, 0, 1)
    return normalise(x.contiguous())


def binarise_mask(values: np.ndarray, full_scale: int = 255, lossy: bool = False,
                  name: str = "mask") -> np.ndarray:
    """Binarise a ground-truth mask array: any non-zero value (label) is a defect pixel.

    Args:
        values: integer mask (H, W): 0/255 (MVTec), 0/1 or small label values 0..k, a 16-bit
            mask, or the per-pixel maximum over the colour channels of a coloured mask.
        full_scale: the largest value the format holds (255, 65535).
        lossy: check for soft edges even when values came from colours (JPEG files).
        name: the mask's name in the error message.

    Returns:
        bool (H, W): values > 0.

    Raises:
        ValueError: the mask is not binary-interpretable: it holds more than two values, with
            some below half of full scale and some at or above it (the grey ramp of an
            anti-aliased or JPEG-compressed 0/255 mask, where "non-zero" would grow every defect
            by its blurred border). Label masks 0..k (all below half) and 0/v masks pass.
    """
    if values.ndim != 2:
        raise ValueError(f"{name} must be 2-D (H, W), got shape {values.shape}")
    levels = np.unique(values)
    if lossy or full_scale > 1:
        soft = len(levels) > 2 and levels[1] < full_scale / 2 <= levels[-1]
        if soft:
            raise ValueError(
                f"{name} is not binary: it holds {len(levels)} grey levels from {levels[1]} to "
                f"{levels[-1]} (anti-aliased or lossy?); save masks losslessly (PNG) with 0 = "
                "normal and a non-zero value = defect")
    return values > 0


def mask_values(img: Image.Image, path: Path) -> tuple[np.ndarray, int]:
    """One integer per pixel of a mask image and its full scale (see :func:`binarise_mask`).

    Grey masks (modes 1, L, I;16, I) give their values; palette and colour masks (P, RGB, ...)
    give the maximum over R, G, B of each pixel's colour (0 only for black), fully transparent
    pixels counting as 0.
    """
    if img.mode in ("1", "L", *HIGH_BIT_MODES):
        return _grey_values(img, path, "mask")
    if img.mode == "F":
        raise ValueError(f"mask {str(path)!r}: floating-point masks (PIL mode F) are not "
                         "supported; save 0/255 PNG masks")
    rgba = np.asarray(img.convert("RGBA"))
    return np.where(rgba[..., 3] > 0, rgba[..., :3].max(axis=-1), 0), 255


def load_mask(path: str | Path, image_size: int) -> torch.Tensor:
    """Read a ground-truth mask file as a binary square tensor.

    Args:
        path: mask image, grey (8/16-bit, 0/255 or label values), palette or colour: every
            non-zero (non-black) pixel is a defect (:func:`binarise_mask`).
        image_size: S, the side of the output.

    Returns:
        float32 tensor (1, S, S) with values in {0, 1} (binarised, then nearest resize).

    Raises:
        ValueError: unreadable file or a mask that is not binary-interpretable (named).
    """
    _check_size(image_size)
    path = Path(path)
    with open_image(path, "mask") as img:
        values, full = mask_values(img, path)
    lossy = path.suffix.lower() in (".jpg", ".jpeg")
    mask = binarise_mask(values, full, lossy, name=f"mask {str(path)!r}")
    small = Image.fromarray(mask.astype(np.uint8)).resize((image_size, image_size), Image.NEAREST)
    return torch.from_numpy(np.asarray(small, dtype=np.float32).copy())[None]
