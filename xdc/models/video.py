"""R(2+1)D-18 video encoder.

Tran, Wang, Torresani, Ray, LeCun, Paluri. "A Closer Look at Spatiotemporal Convolutions for Action Recognition",
CVPR 2018. Built from torchvision's own blocks; at width 64 it is torchvision's `r2plus1d_18` (same modules, same
state-dict keys) without the classifier, so its weights load into torchvision and back.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.video.resnet import BasicBlock, Conv2Plus1D, VideoResNet


class R2Plus1D18(VideoResNet):
    """R(2+1)D-18 whose channel widths scale with `width` (64 = the published network, 8 x width-d features).

    `input` is a fixed, parameter-free first layer: 'rgb' (none), 'grey' (luminance in all three channels),
    'sobel' (horizontal and vertical Sobel edges of the luminance plus their magnitude): DeepCluster's defence
    against clusters that follow colour rather than shape (Caron et al., ECCV 2018), or 'residual' (the Sobel planes'
    differences between consecutive frames, the first frame's repeating the second's): residual frames (Tao, Wang,
    Yamasaki, ACM MM 2020), which keep what moves and drop a static background. It adds no weights, so the state
    dict stays torchvision's.
    """

    def __init__(self, *, width: int = 64, input: str = "rgb"):
        nn.Module.__init__(self)
        self.input_filter = VideoInputFilter(input)
        self.feature_dim = 8 * width
        self.inplanes = width
        self.stem = _stem(width)
        self.layer1 = self._make_layer(BasicBlock, Conv2Plus1D, width, 2, stride=1)
        self.layer2 = self._make_layer(BasicBlock, Conv2Plus1D, 2 * width, 2, stride=2)
        self.layer3 = self._make_layer(BasicBlock, Conv2Plus1D, 4 * width, 2, stride=2)
        self.layer4 = self._make_layer(BasicBlock, Conv2Plus1D, 8 * width, 2, stride=2)
        self.avgpool = nn.AdaptiveAvgPool3d((1, 1, 1))
        self.fc = nn.Identity()  # forward(x): B x 3 x T x H x W -> B x feature_dim
        _init_like_torchvision(self)


    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(self.input_filter(x))  # x: B x 3 x T x H x W -> B x feature_dim


VIDEO_INPUTS = ("rgb", "grey", "sobel", "residual")
_LUMA = (0.299, 0.587, 0.114)


class VideoInputFilter(nn.Module):
    """B x 3 x T x H x W -> B x 3 x T x H x W: identity, luminance, Sobel edges of the luminance, or their
    frame-to-frame differences."""

    def __init__(self, kind: str = "rgb"):
        super().__init__()
        if kind not in VIDEO_INPUTS:
            raise ValueError(f"video input must be one of {', '.join(VIDEO_INPUTS)}, got {kind!r}")
        self.kind = kind
        sobel_x = torch.tensor([[1.0, 0.0, -1.0], [2.0, 0.0, -2.0], [1.0, 0.0, -1.0]]) / 4
        kernels = torch.stack([sobel_x, sobel_x.t()]).view(2, 1, 1, 3, 3)  # 2 x 1 x 1 x 3 x 3
        self.register_buffer("luma", torch.tensor(_LUMA).view(1, 3, 1, 1, 1), persistent=False)
        self.register_buffer("sobel", kernels, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "rgb":
            return x
        grey = (x * self.luma.to(x.dtype)).sum(dim=1, keepdim=True)  # B x 1 x T x H x W
        if self.kind == "grey":
            return grey.expand(-1, 3, -1, -1, -1)
        edges = F.conv3d(grey, self.sobel.to(x.dtype), padding=(0, 1, 1))  # B x 2 x T x H x W
        magnitude = edges.pow(2).sum(dim=1, keepdim=True).add(1e-6).sqrt()
        planes = torch.cat([edges, magnitude], dim=1)
        if self.kind == "sobel" or planes.shape[2] < 2:
            return planes
        change = planes[:, :, 1:] - planes[:, :, :-1]  # B x 3 x T-1 x H x W
        return torch.cat([change[:, :, :1], change], dim=2)


def _stem(width: int) -> nn.Sequential:
    # torchvision's R2Plus1dStem with its 45 intermediate channels scaled alongside the width.
    mid = max(1, round(45 * width / 64))
    return nn.Sequential(
        nn.Conv3d(3, mid, kernel_size=(1, 7, 7), stride=(1, 2, 2), padding=(0, 3, 3), bias=False),
        nn.BatchNorm3d(mid),
        nn.ReLU(inplace=True),
        nn.Conv3d(mid, width, kernel_size=(3, 1, 1), stride=(1, 1, 1), padding=(1, 0, 0), bias=False),
        nn.BatchNorm3d(width),
        nn.ReLU(inplace=True),
    )


def _init_like_torchvision(model: nn.Module) -> None:
    for module in model.modules():
        if isinstance(module, nn.Conv3d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(module, nn.BatchNorm3d):
            nn.init.constant_(module.weight, 1)
            nn.init.constant_(module.bias, 0)
