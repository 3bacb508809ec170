"""ResNet-18 audio encoder on 1-channel log-mel spectrograms.

He, Zhang, Ren, Sun. "Deep Residual Learning for Image Recognition", CVPR 2016; used on spectrograms as XDC's
audio encoder (Alwassel et al., "Self-Supervised Learning by Cross-Modal Audio-Video Clustering", NeurIPS 2020).
Built from torchvision's ResNet blocks with a 1-channel stem.
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models.resnet import BasicBlock, ResNet


class AudioResNet18(ResNet):
    """ResNet-18 over B x 1 x n_mels x frames, widths scaled by `width` (64 = ResNet-18), 8 x width-d features.

    `norm` = 'clip' standardises each spectrogram by its own mean and deviation first, so a clip's loudness (a
    constant offset of its log-mel) cannot become what the features, and so the clusters, follow; 'none' keeps it.
    """

    def __init__(self, *, width: int = 64, norm: str = "none"):
        nn.Module.__init__(self)
        if norm not in AUDIO_NORMS:
            raise ValueError(f"audio norm must be one of {', '.join(AUDIO_NORMS)}, got {norm!r}")
        self.norm = norm
        self.feature_dim = 8 * width
        self._norm_layer = nn.BatchNorm2d
        self.inplanes = width
        self.dilation = 1
        self.groups = 1
        self.base_width = 64
        self.conv1 = nn.Conv2d(1, width, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(BasicBlock, width, 2)
        self.layer2 = self._make_layer(BasicBlock, 2 * width, 2, stride=2)
        self.layer3 = self._make_layer(BasicBlock, 4 * width, 2, stride=2)
        self.layer4 = self._make_layer(BasicBlock, 8 * width, 2, stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Identity()  # forward(x): B x 1 x M x F -> B x feature_dim
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.constant_(module.weight, 1)
                nn.init.constant_(module.bias, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.norm == "clip":
            mean = x.mean(dim=(1, 2, 3), keepdim=True)  # B x 1 x 1 x 1
            std = x.std(dim=(1, 2, 3), keepdim=True)
            x = (x - mean) / (std + 1e-5)
        return super().forward(x)  # x: B x 1 x M x F -> B x feature_dim


AUDIO_NORMS = ("none", "clip")
