"""Encoders and the two-stream model: torchvision compatibility at full width, shapes at small widths, heads."""

import pytest
import torch
from torchvision.models.video import r2plus1d_18

from xdc.models import AVModel, AudioResNet18, R2Plus1D18


@pytest.fixture(autouse=True)
def seeded_on_one_thread():
    # Tiny convolutions gain nothing from threads, and on a busy 2-core machine OpenMP spinning makes them 10x slower.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield
    torch.set_num_threads(threads)


def parameter_count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_r2plus1d_at_width_64_is_torchvisions_network_without_its_classifier():
    ours = R2Plus1D18(width=64)
    theirs = r2plus1d_18(weights=None)
    fc = parameter_count(theirs.fc)
    assert parameter_count(ours) == parameter_count(theirs) - fc
    their_state = {k: v for k, v in theirs.state_dict().items() if not k.startswith("fc.")}
    our_state = ours.state_dict()
    assert list(our_state) == list(their_state)
    assert {k: v.shape for k, v in our_state.items()} == {k: v.shape for k, v in their_state.items()}
    # Weights go both ways: torchvision's trunk loads into ours strictly.
    ours.load_state_dict(their_state, strict=True)
    assert ours.feature_dim == theirs.fc.in_features == 512


@pytest.mark.parametrize("width", [4, 8])
def test_video_encoder_gives_8_x_width_features(width):
    encoder = R2Plus1D18(width=width).eval()
    video = torch.randn(2, 3, 4, 32, 32)  # B x 3 x T x H x W
    with torch.no_grad():
        features = encoder(video)
    assert encoder.feature_dim == 8 * width
    assert features.shape == (2, 8 * width)
    assert torch.isfinite(features).all()


@pytest.mark.parametrize("width", [4, 8])
def test_audio_encoder_gives_8_x_width_features(width):
    encoder = AudioResNet18(width=width).eval()
    audio = torch.randn(3, 1, 32, 51)  # B x 1 x n_mels x frames
    with torch.no_grad():
        features = encoder(audio)
    assert encoder.feature_dim == 8 * width
    assert features.shape == (3, 8 * width)
    assert torch.isfinite(features).all()


def test_encoders_take_clips_of_other_lengths():
    with torch.no_grad():
        assert R2Plus1D18(width=4).eval()(torch.randn(1, 3, 8, 40, 48)).shape == (1, 32)
        assert AudioResNet18(width=4).eval()(torch.randn(1, 1, 40, 101)).shape == (1, 32)


def small_model() -> AVModel:
    heads = {"video_from_audio": ("video", 5), "audio_from_video": ("audio", 7), "video_from_video": ("video", 3)}
    return AVModel(video_width=4, audio_width=8, heads=heads)


def test_av_model_gives_b_x_k_logits_per_head():
    model = small_model().eval()
    video, audio = torch.randn(2, 3, 4, 32, 32), torch.randn(2, 1, 32, 51)
    with torch.no_grad():
        logits = model(video, audio)
        features = model.embed(video, audio)
    assert {name: tuple(t.shape) for name, t in logits.items()} == {
        "video_from_audio": (2, 5), "audio_from_video": (2, 7), "video_from_video": (2, 3),
    }
    assert features["video"].shape == (2, 32) and features["audio"].shape == (2, 64)


def test_heads_read_their_own_encoder():
    model = small_model().eval()
    video, audio = torch.randn(2, 3, 4, 32, 32), torch.randn(2, 1, 32, 51)
    with torch.no_grad():
        before = model(video, audio)
        after_new_audio = model(video, torch.randn(2, 1, 32, 51))
    assert torch.equal(before["video_from_audio"], after_new_audio["video_from_audio"])
    assert torch.equal(before["video_from_video"], after_new_audio["video_from_video"])
    assert not torch.allclose(before["audio_from_video"], after_new_audio["audio_from_video"])


def test_reset_heads_renews_the_heads_and_keeps_the_encoders():
    model = small_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.reset_heads()
    after = model.state_dict()
    head_keys = [k for k in before if k.startswith("heads.")]
    encoder_keys = [k for k in before if not k.startswith("heads.")]
    assert len(head_keys) == 6 and encoder_keys
    assert all(not torch.equal(before[k], after[k]) for k in head_keys)
    assert all(torch.equal(before[k], after[k]) for k in encoder_keys)
