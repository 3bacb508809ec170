"""The variant registry (which encoder learns from which clustering) and the summed per-head loss."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from xdc.models import AVModel
from xdc.variants import VARIANTS, Head, variant_loss

BATCH = 8
CLASSES = 4


@pytest.fixture(autouse=True)
def one_thread():
    # Tiny convolutions gain nothing from threads, and on a busy 2-core machine OpenMP spinning makes them 10x slower.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def heads_of(name: str) -> set[tuple[str, str]]:
    return {(head.encoder, head.target) for head in VARIANTS[name].heads}


# ---------------------------------------------------------------------------------------------------------
# registry


def test_registry_holds_xdc_and_its_baselines():
    assert set(VARIANTS) == {"xdc", "sdc", "mdc", "cdc", "supervised"}
    assert all(VARIANTS[name].name == name for name in VARIANTS)


def test_xdc_crosses_modalities():
    assert heads_of("xdc") == {("video", "audio"), ("audio", "video")}
    assert VARIANTS["xdc"].spaces == ("video", "audio")
    assert not VARIANTS["xdc"].needs_labels


def test_sdc_keeps_each_modality_to_itself():
    assert heads_of("sdc") == {("video", "video"), ("audio", "audio")}
    assert VARIANTS["sdc"].spaces == ("video", "audio")


def test_mdc_predicts_both_clusterings_from_both_encoders():
    assert len(VARIANTS["mdc"].heads) == 4
    assert heads_of("mdc") == {(e, t) for e in ("video", "audio") for t in ("video", "audio")}
    assert VARIANTS["mdc"].spaces == ("video", "audio")


def test_cdc_clusters_the_joint_space():
    assert heads_of("cdc") == {("video", "joint"), ("audio", "joint")}
    assert VARIANTS["cdc"].spaces == ("joint",)


def test_supervised_uses_labels_and_clusters_nothing():
    assert heads_of("supervised") == {("video", "label"), ("audio", "label")}
    assert VARIANTS["supervised"].spaces == ()
    assert VARIANTS["supervised"].needs_labels


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_every_variant_trains_both_encoders_with_distinct_head_names(name):
    heads = VARIANTS[name].heads
    assert {head.encoder for head in heads} == {"video", "audio"}
    assert len({head.name for head in heads}) == len(heads)


def test_head_name_says_who_predicts_what():
    assert Head("video", "audio").name == "video_from_audio"


# ---------------------------------------------------------------------------------------------------------
# loss


def random_batch(name: str, generator: torch.Generator) -> tuple[dict, dict]:
    variant = VARIANTS[name]
    logits = {h.name: torch.randn(BATCH, CLASSES, generator=generator) for h in variant.heads}  # B x K each
    targets = {h.target: torch.randint(0, CLASSES, (BATCH,), generator=generator) for h in variant.heads}  # B
    return logits, targets


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_variant_loss_sums_cross_entropy_over_heads(name):
    variant = VARIANTS[name]
    logits, targets = random_batch(name, torch.Generator().manual_seed(1))
    total, parts = variant_loss(logits, targets, variant)
    assert set(parts) == {head.name for head in variant.heads}
    for head in variant.heads:
        assert parts[head.name] == pytest.approx(F.cross_entropy(logits[head.name], targets[head.target]).item())
    assert total.item() == pytest.approx(sum(p.item() for p in parts.values()))


def test_variant_loss_pairs_xdc_heads_with_the_other_modalitys_targets():
    logits = {"video_from_audio": torch.tensor([[9.0, -9.0]]), "audio_from_video": torch.tensor([[-9.0, 9.0]])}
    targets = {"audio": torch.tensor([0]), "video": torch.tensor([1])}
    total, _ = variant_loss(logits, targets, VARIANTS["xdc"])
    assert total.item() < 1e-6
    swapped, _ = variant_loss(logits, {"audio": targets["video"], "video": targets["audio"]}, VARIANTS["xdc"])
    assert swapped.item() > 30


def test_variant_loss_computes_half_precision_logits_in_float32():
    logits, targets = random_batch("sdc", torch.Generator().manual_seed(2))
    total, _ = variant_loss({k: v.bfloat16() for k, v in logits.items()}, targets, VARIANTS["sdc"])
    assert total.dtype == torch.float32


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_each_variants_loss_falls_within_a_few_steps_on_a_small_batch(name):
    torch.manual_seed(0)
    np.random.seed(0)
    variant = VARIANTS[name]
    model = AVModel(video_width=4, audio_width=8, heads={h.name: (h.encoder, CLASSES) for h in variant.heads})
    video = torch.randn(BATCH, 3, 4, 32, 32)  # B x 3 x T x H x W
    audio = torch.randn(BATCH, 1, 32, 51)  # B x 1 x n_mels x frames
    targets = {h.target: torch.randint(0, CLASSES, (BATCH,)) for h in variant.heads}  # one assignment per space
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(15):
        loss, _ = variant_loss(model(video, audio), targets, variant)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert all(np.isfinite(losses))
    assert losses[-1] < 0.7 * losses[0], losses
