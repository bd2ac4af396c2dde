"""The architecture figure of chapter 10, read from a built model rather than drawn by hand.

`model_layout` runs one image through the model with forward hooks and records, for the encoder's
scales, the fusion bottleneck and each decoder stage, the channels and the token grid it really
produces; for each decoder stage it also counts the modules and the scanning blocks and reads
their scan curve and number of directions from the blocks' `DirectionScanner`s.
`architecture_figure` draws that layout.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from matplotlib.figure import Figure
from matplotlib.patches import FancyBboxPatch
from torch import nn

from mambaadv2_ref.blocks.common import DirectionScanner


@dataclass(frozen=True)
class Box:
    """One stage of the model as it ran: what it is, its channels and its token grid."""

    name: str
    channels: int
    height: int
    width: int
    detail: str = ""

    @property
    def tokens(self) -> int:
        return self.height * self.width


def _grid(shape: torch.Size, channels: int, where: str) -> tuple[int, int]:
    """(H, W) of a (B, C, H, W) or (B, H, W, C) feature map with `channels` channels."""
    if len(shape) != 4:
        raise ValueError(f"{where}: expected a 4-d feature map, got shape {tuple(shape)}")
    if shape[1] == channels:
        return int(shape[2]), int(shape[3])
    if shape[3] == channels:
        return int(shape[1]), int(shape[2])
    raise ValueError(f"{where}: no axis of {tuple(shape)} has the {channels} channels expected")


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def _scanning(stage: nn.Module) -> str:
    """'m Module, b Block, curve x K directions' of one decoder stage, read from its modules."""
    modules = {type(m).__name__ for m in stage.children()}
    blocks = [type(m).__name__ for m in stage.modules()
              if any(isinstance(c, DirectionScanner) for c in m.children())]
    plans = sorted({(s.plan.curve, s.num_directions) for s in stage.modules()
                    if isinstance(s, DirectionScanner)})
    ways = ", ".join(f"{curve} x {_plural(k, 'direction')}" for curve, k in plans) or "no scan"
    return (f"{_plural(len(stage), '/'.join(sorted(modules)))}, "
            f"{_plural(len(blocks), '/'.join(sorted(set(blocks))) + ' block')}\n{ways}")


@torch.no_grad()
def model_layout(model: nn.Module, image_size: int | None = None) -> list[Box]:
    """The boxes of the architecture figure, measured on one random image.

    Args:
        model: an `ADModel` (encoder, fusion, decoder with `stages`).
        image_size: S (default: the model config's).

    Returns:
        Boxes: input, encoder scales (strides 4, 8, 16), fusion, decoder stages (deepest first).
    """
    for part in ("encoder", "fusion", "decoder"):
        if not hasattr(model, part):
            raise TypeError(f"model must be an ADModel (with .{part}), got {type(model).__name__}")
    size = image_size or model.config.image_size
    seen: dict[str, torch.Size | list] = {}
    hooks = [model.encoder.register_forward_hook(
                 lambda m, i, out: seen.__setitem__("encoder", [o.shape for o in out])),
             model.fusion.register_forward_hook(
                 lambda m, i, out: seen.__setitem__("fusion", out.shape))]
    for s, stage in enumerate(model.decoder.stages):
        hooks.append(stage.register_forward_hook(
            lambda m, i, out, s=s: seen.__setitem__(f"stage{s}", out.shape)))
    was_training = model.training
    try:
        model.eval()
        model(torch.randn(1, 3, size, size, device=next(model.parameters()).device))
    finally:
        model.train(was_training)
        for hook in hooks:
            hook.remove()
    boxes = [Box("image", 3, size, size)]
    for k, (shape, channels) in enumerate(zip(seen["encoder"], model.encoder.channels,
                                              strict=True)):
        boxes.append(Box(f"encoder scale {k + 1}", channels,
                         *_grid(shape, channels, "encoder"), "frozen CNN"))
    dims = model.config.dims
    boxes.append(Box("fusion", dims[0], *_grid(seen["fusion"], dims[0], "fusion"), "half-FPN"))
    for s, stage in enumerate(model.decoder.stages):
        boxes.append(Box(f"decoder stage {s + 1}", dims[s],
                         *_grid(seen[f"stage{s}"], dims[s], f"stage {s}"), _scanning(stage)))
    return boxes


def architecture_figure(boxes: list[Box], title: str = "") -> Figure:
    """Encoder scales on top, decoder stages below (deepest left), the comparisons between them.

    Each box says what the stage is, its channels, its grid and its number of tokens; decoder
    boxes add their modules, scanning blocks, curve and directions (see `model_layout`).
    """
    encoder = [b for b in boxes if b.name.startswith("encoder")]
    decoder = [b for b in boxes if b.name.startswith("decoder")]
    fusion = [b for b in boxes if b.name == "fusion"]
    if not encoder or not decoder or len(fusion) != 1:
        raise ValueError("boxes must hold encoder scales, one fusion box and decoder stages")
    figure = Figure(figsize=(10, 4.2), layout="tight")
    ax = figure.add_subplot()
    ax.set_xlim(0.1, 9.7)
    ax.set_ylim(0, 4.35)
    ax.axis("off")

    def draw(box: Box, x: float, y: float, colour: str) -> tuple[float, float]:
        text = f"{box.name}\n{box.channels} ch, {box.height}x{box.width} = {box.tokens} tokens"
        if box.detail:
            text += f"\n{box.detail}"
        ax.add_patch(FancyBboxPatch((x - 0.95, y - 0.55), 1.9, 1.1, boxstyle="round,pad=0.03",
                                    facecolor=colour, edgecolor="0.3"))
        ax.text(x, y, text, ha="center", va="center", fontsize=7)
        return x, y

    def arrow(a: tuple[float, float], b: tuple[float, float], style: str = "-|>") -> None:
        ax.annotate("", xy=b, xytext=a, arrowprops=dict(arrowstyle=style, color="0.35"))

    # a U: encoder scales left to right (fine to coarse), then the fusion, then the decoder
    # stages right to left (coarse to fine), each under the encoder scale of its size
    top, bottom, step = 3.7, 1.0, 2.4
    enc_xy = [draw(b, 1.2 + step * k, top, "#dbe9f6") for k, b in enumerate(encoder)]
    right = 1.2 + step * len(encoder)
    fusion_xy = draw(fusion[0], right, top, "#fde2c8")
    dec_xy = [draw(b, right - step * s, bottom, "#d9f0d3") for s, b in enumerate(decoder)]
    for a, b in zip(enc_xy, [*enc_xy[1:], fusion_xy], strict=True):
        arrow((a[0] + 0.95, top), (b[0] - 0.95, top))
    arrow((fusion_xy[0], top - 0.55), (dec_xy[0][0], bottom + 0.55))
    for a, b in zip(dec_xy, dec_xy[1:], strict=False):
        arrow((a[0] - 0.95, bottom), (b[0] + 0.95, bottom))
    # the deepest decoder stage is not compared; the others meet the encoder scale of their size
    for box, (x, y) in zip(decoder, dec_xy, strict=True):
        match = [i for i, e in enumerate(encoder) if (e.height, e.width) == (box.height, box.width)]
        if match:
            ex = enc_xy[match[0]][0]
            ax.annotate("", xy=(ex, top - 0.55), xytext=(x, y + 0.55),
                        arrowprops=dict(arrowstyle="<->", color="#b2182b", linestyle="--"))
    ax.text(5, 0.15, "dashed: 1 - cos(encoder, decoder) per scale, summed into the anomaly map",
            ha="center", va="center", fontsize=8, color="#b2182b")
    if title:
        ax.set_title(title, fontsize=10)
    return figure
