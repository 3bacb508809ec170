"""Clip transforms: spatial crops on decoded frames, log-mel spectrograms, and on-device video normalisation."""

from __future__ import annotations

import numpy as np
import torch
import torchaudio

# Kinetics-400 statistics used by torchvision's video models.
VIDEO_MEAN = (0.43216, 0.394666, 0.37645)
VIDEO_STD = (0.22803, 0.22145, 0.216989)


def crop_frames(frames: np.ndarray, size: int, *, train: bool, rng: np.random.Generator) -> np.ndarray:
    """Random crop and horizontal flip (train) or centre crop (eval). frames: T x H x W x 3 -> T x size x size x 3."""
    _, height, width, _ = frames.shape
    if train:
        top = int(rng.integers(0, height - size + 1))
        left = int(rng.integers(0, width - size + 1))
    else:
        top, left = (height - size) // 2, (width - size) // 2
    crop = frames[:, top:top + size, left:left + size]
    if train and rng.random() < 0.5:
        crop = crop[:, :, ::-1]
    return np.ascontiguousarray(crop)


def to_video_tensor(frames: np.ndarray) -> torch.Tensor:
    """T x H x W x 3 uint8 -> 3 x T x H x W uint8 (normalised later, on the device, to move 4x fewer bytes)."""
    return torch.from_numpy(frames).permute(3, 0, 1, 2).contiguous()


def normalize_video(video: torch.Tensor) -> torch.Tensor:
    """uint8 B x 3 x T x H x W -> float, scaled to [0, 1] and standardised per channel."""
    mean = torch.tensor(VIDEO_MEAN, device=video.device).view(1, 3, 1, 1, 1)
    std = torch.tensor(VIDEO_STD, device=video.device).view(1, 3, 1, 1, 1)
    return (video.float() / 255.0 - mean) / std


class LogMel:
    """Mono waveform -> 1 x n_mels x frames log-mel spectrogram (natural log, floored at 1e-6)."""

    def __init__(self, *, sample_rate: int, n_mels: int, window_ms: float, hop_ms: float):
        win_length = int(round(sample_rate * window_ms / 1000))
        n_fft = 1 << (win_length - 1).bit_length()
        self.mel = torchaudio.transforms.MelSpectrogram(
            sample_rate=sample_rate, n_fft=n_fft, win_length=win_length,
            hop_length=int(round(sample_rate * hop_ms / 1000)), n_mels=n_mels, power=2.0)

    def __call__(self, samples: np.ndarray) -> torch.Tensor:
        with torch.no_grad():
            spec = self.mel(torch.from_numpy(samples))  # n_mels x frames
        return torch.log(spec + 1e-6).unsqueeze(0)  # 1 x n_mels x frames
