"""Encoders and the two-stream model with its clustering heads."""

from __future__ import annotations

import torch
from torch import nn

from xdc.models.audio import AudioResNet18
from xdc.models.video import R2Plus1D18

__all__ = ["AVModel", "AudioResNet18", "R2Plus1D18"]


class AVModel(nn.Module):
    """A video and an audio encoder, plus linear heads that classify an encoder's features into clusters.

    `heads` maps a head name to (encoder, classes), e.g. {"video_from_audio": ("video", 64)}.
    """

    def __init__(self, *, video_width: int, audio_width: int, heads: dict[str, tuple[str, int]],
                 video_input: str = "rgb", audio_norm: str = "none"):
        super().__init__()
        self.video = R2Plus1D18(width=video_width, input=video_input)
        self.audio = AudioResNet18(width=audio_width, norm=audio_norm)
        self.head_encoders = {name: encoder for name, (encoder, _) in heads.items()}
        dims = {"video": self.video.feature_dim, "audio": self.audio.feature_dim}
        self.heads = nn.ModuleDict({name: nn.Linear(dims[enc], k) for name, (enc, k) in heads.items()})

    def embed(self, video: torch.Tensor, audio: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"video": self.video(video), "audio": self.audio(audio)}  # each B x D

    def forward(self, video: torch.Tensor, audio: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self.embed(video, audio)
        return {name: head(features[self.head_encoders[name]]) for name, head in self.heads.items()}  # B x K

    def reset_heads(self) -> None:
        """Fresh classifiers for a new round: cluster ids are arbitrary, so last round's weights mean nothing."""
        for head in self.heads.values():
            head.reset_parameters()
