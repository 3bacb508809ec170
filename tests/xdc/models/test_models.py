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


@pytest.mark.parametrize("kind", ["grey", "sobel", "residual"])
def test_grey_and_sobel_inputs_ignore_colour_and_add_no_weights(kind):
    torch.manual_seed(0)
    encoder = R2Plus1D18(width=8, input=kind).eval()
    assert encoder.state_dict().keys() == R2Plus1D18(width=8).state_dict().keys()
    grey = torch.rand(2, 1, 4, 32, 32).expand(-1, 3, -1, -1, -1)
    tinted = torch.zeros_like(grey)
    tinted[:, 0] = grey[:, 0] / 0.299  # the same luminance, carried by the red channel alone
    with torch.no_grad():
        assert torch.allclose(encoder(grey), encoder(tinted), atol=1e-5)
        assert not torch.allclose(encoder(grey), encoder(torch.rand(2, 3, 4, 32, 32)), atol=1e-3)


def test_residual_input_drops_a_static_background_and_keeps_what_moves():
    from xdc.models.video import VideoInputFilter

    residual = VideoInputFilter("residual")
    background = torch.rand(1, 3, 1, 32, 32).expand(-1, -1, 4, -1, -1)  # the same picture in all four frames
    assert residual(background).abs().max() < 1e-2
    moving = background.clone()
    moving[:, :, 2:, 8:16, 8:16] = 1.0  # a square appears in frame 3
    planes = residual(moving)
    assert planes.shape == moving.shape and planes[:, :, 2].abs().max() > 0.1


def test_rgb_input_sees_colour():
    encoder = R2Plus1D18(width=8).eval()
    red, green = torch.zeros(1, 3, 4, 32, 32), torch.zeros(1, 3, 4, 32, 32)
    red[:, 0], green[:, 1] = 1.0, 1.0
    with torch.no_grad():
        assert not torch.allclose(encoder(red), encoder(green))


def test_clip_norm_makes_the_audio_encoder_blind_to_loudness():
    torch.manual_seed(0)
    spectrogram = torch.randn(2, 1, 32, 51)
    normed, plain = AudioResNet18(width=8, norm="clip").eval(), AudioResNet18(width=8).eval()
    with torch.no_grad():
        louder = spectrogram + 3.0  # + 3 in log-mel: the same sound about 13 dB louder
        assert torch.allclose(normed(spectrogram), normed(louder), atol=1e-4)
        assert not torch.allclose(plain(spectrogram), plain(louder), atol=1e-3)


def test_unknown_input_layers_are_refused():
    with pytest.raises(ValueError, match="video input"):
        R2Plus1D18(width=8, input="hsv")
    with pytest.raises(ValueError, match="audio norm"):
        AudioResNet18(width=8, norm="db")
