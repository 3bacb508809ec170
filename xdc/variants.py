"""XDC and its baselines as data: which encoder learns from which clustering.

Alwassel, Mahajan, Korbar, Torresani, Ghanem, Tran. "Self-Supervised Learning by Cross-Modal Audio-Video
Clustering", NeurIPS 2020. Targets: 'video' / 'audio' are k-means clusters of that encoder's features, 'joint' of
the concatenated features, 'label' the ground-truth classes (the supervised upper bound).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Head:
    encoder: str  # 'video' or 'audio': whose features the head classifies
    target: str  # 'video', 'audio', 'joint' or 'label': whose assignments it predicts

    @property
    def name(self) -> str:
        return f"{self.encoder}_from_{self.target}"


@dataclass(frozen=True)
class Variant:
    name: str
    description: str
    heads: tuple[Head, ...]

    @property
    def spaces(self) -> tuple[str, ...]:
        """Feature spaces clustered every round, in a fixed order."""
        wanted = {head.target for head in self.heads} - {"label"}
        return tuple(space for space in ("video", "audio", "joint") if space in wanted)

    @property
    def needs_labels(self) -> bool:
        return any(head.target == "label" for head in self.heads)


VARIANTS: dict[str, Variant] = {
    v.name: v
    for v in (
        Variant("xdc", "cross-modal: audio clusters supervise the video encoder, video clusters the audio encoder",
                (Head("video", "audio"), Head("audio", "video"))),
        Variant("sdc", "single-modality: each encoder learns from its own clusters",
                (Head("video", "video"), Head("audio", "audio"))),
        Variant("mdc", "multi-head: each encoder predicts both modalities' clusters",
                (Head("video", "video"), Head("video", "audio"), Head("audio", "audio"), Head("audio", "video"))),
        Variant("cdc", "concatenated: clusters of the joint audio-video features supervise both encoders",
                (Head("video", "joint"), Head("audio", "joint"))),
        Variant("supervised", "ground-truth labels supervise both encoders (upper bound)",
                (Head("video", "label"), Head("audio", "label"))),
    )
}


def variant_loss(logits: dict[str, torch.Tensor], targets: dict[str, torch.Tensor],
                 variant: Variant) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Sum over heads of the cross-entropy between a head's logits (B x K) and its target assignments (B)."""
    parts = {head.name: F.cross_entropy(logits[head.name].float(), targets[head.target]) for head in variant.heads}
    return torch.stack(list(parts.values())).sum(), parts
