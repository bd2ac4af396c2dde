"""The chapter 10 figure is read from the model: the shapes it produced, its blocks and plans."""

import pytest

from mambaadv2_ref.model import build_model
from mambaadv2_ref.viz.architecture import architecture_figure, model_layout


def test_layout_follows_the_built_model():
    model = build_model("mambaadv2", "tiny", pretrained=False, num_directions=2)
    boxes = {b.name: b for b in model_layout(model, image_size=64)}
    assert boxes["image"].height == 64
    assert [boxes[f"encoder scale {k}"].height for k in (1, 2, 3)] == [16, 8, 4]
    assert [boxes[f"encoder scale {k}"].channels for k in (1, 2, 3)] == model.encoder.channels
    stages = [boxes[f"decoder stage {s + 1}"] for s in range(len(model.config.dims))]
    assert [b.channels for b in stages] == list(model.config.dims)
    assert [b.tokens for b in stages] == [4, 16, 64, 256]
    assert all("x 2 directions" in b.detail and "HSS block" in b.detail for b in stages)
    figure = architecture_figure(list(boxes.values()))
    texts = [t.get_text() for t in figure.axes[0].texts]
    assert any("16 ch, 16x16 = 256 tokens" in t for t in texts)
    with pytest.raises(ValueError, match="decoder stages"):
        architecture_figure(stages[:1])
    with pytest.raises(TypeError, match="ADModel"):
        model_layout(model.decoder)
