"""Clip datasets that read one modality: frames only (video benchmarks), sound only (audio benchmarks)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from xdc.config import DataConfig
from xdc.data.clips import AudioClipDataset, ClipDataset, Video, collate_clips, even_requests
from xdc.data.media import audio_duration


def test_a_frames_only_dataset_reads_no_audio(synthetic_root):
    videos = [Video(str(p), 2.0) for p in sorted((synthetic_root / "videos").glob("*.mp4"))[:2]]
    cfg = DataConfig(clip_frames=4, resize_short=40, crop_size=32)
    dataset = ClipDataset(videos, even_requests(videos, 2, cfg.clip_seconds), cfg, train=False, with_audio=False)
    batch = collate_clips([dataset[i] for i in range(len(dataset))])
    assert batch["size"] == 4 and batch["video"].shape == (4, 3, 4, 32, 32) and "audio" not in batch


def test_an_audio_dataset_reads_log_mel_windows_of_wav_files(synthetic_root):
    paths = sorted((synthetic_root / "esc50" / "audio").glob("*.wav"))[:3]
    files = [Video(str(p), audio_duration(str(p)), label=i) for i, p in enumerate(paths)]
    cfg = DataConfig(n_mels=32)
    dataset = AudioClipDataset(files, even_requests(files, 2, 0.5), cfg, seconds=0.5)
    batch = collate_clips([dataset[i] for i in range(len(dataset))])
    assert batch["size"] == 6 and batch["audio"].shape[:3] == (6, 1, 32) and "video" not in batch
    assert batch["video_index"].tolist() == [0, 0, 1, 1, 2, 2] and np.isfinite(batch["audio"].numpy()).all()


def test_an_unreadable_audio_file_is_a_failure_record(tmp_path):
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"RIFF0000WAVEjunk")
    dataset = AudioClipDataset([Video(str(broken), 1.0)], np.array([[0, 0.0, 0]]), DataConfig(), seconds=0.5)
    assert dataset[0]["ok"] is False and dataset[0]["video_index"] == 0


def test_videos_shorter_than_the_sound_window_are_skipped_as_too_short(synthetic_root):
    from xdc.data import load_video_set
    from xdc.errors import DataError

    cfg = DataConfig(path=str(synthetic_root / "videos"), clip_frames=4, audio_seconds=1.5, num_workers=0)
    assert len(load_video_set(cfg).videos) == 24  # 2 s videos hold a 1.5 s sound window
    with pytest.raises(DataError, match="24 too_short"):
        load_video_set(dataclasses.replace(cfg, audio_seconds=2.5))
    assert len(load_video_set(dataclasses.replace(cfg, audio_seconds=2.5), need_audio=False).videos) == 24
