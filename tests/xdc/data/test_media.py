"""Media in, on tiny real files: probing, clip decoding on the right timestamps, transforms, the cached index with
its screening of broken files, and the clip dataset that turns a broken file into a reported failure."""

from pathlib import Path

import numpy as np
import pytest
import torch

import xdc.data.index as index_module
from xdc.config import DataConfig
from xdc.data.clips import (ClipDataset, Video, audio_span, clip_loader, collate_clips, even_requests, random_requests,
                             stretch_requests)
from xdc.data.index import build_index, screen, summarize
from xdc.data.media import SILENCE_PEAK, audio_duration, probe, read_audio, read_clip, read_clips
from xdc.data.synthetic import make_synthetic, write_bad_media, write_media
from xdc.data.transforms import VIDEO_MEAN, LogMel, crop_frames, normalize_video, to_video_tensor
from xdc.errors import MediaError

FPS = 12.0
SAMPLE_RATE = 16000
WIDTH, HEIGHT = 64, 48
RAMP_FRAMES = 36  # 3 s
BRIGHTNESS_STEP = 7  # frame i is a flat grey of value 7 * i, so decoded brightness tells which frame was read


def ramp_audio(seconds: float = RAMP_FRAMES / FPS) -> np.ndarray:
    """A 440 Hz tone whose loudness grows with time, so a window's samples say where in the track it was read."""
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    return (0.3 * (0.2 + t / seconds) * np.sin(2 * np.pi * 440 * t)).astype(np.float32)


def ramp_frames(count: int = RAMP_FRAMES) -> np.ndarray:
    values = (np.arange(count) * BRIGHTNESS_STEP).astype(np.uint8)  # T
    return np.broadcast_to(values[:, None, None, None], (count, HEIGHT, WIDTH, 3)).copy()  # T x H x W x 3


def write_ramp(path: Path, *, frames: int = RAMP_FRAMES, audio_codec: str = "aac") -> Path:
    write_media(path, frames=ramp_frames(frames), fps=FPS, audio=ramp_audio(frames / FPS), sample_rate=SAMPLE_RATE,
                audio_codec=audio_codec)
    return path


def frame_numbers(frames: np.ndarray) -> np.ndarray:
    """Which source frame each decoded frame is, from its mean brightness."""
    return np.round(frames.reshape(len(frames), -1).mean(axis=1) / BRIGHTNESS_STEP).astype(int)


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("media")
    summary = make_synthetic(root / "synthetic", videos=2, classes=2, duration=2.0, fps=FPS, size=(WIDTH, HEIGHT),
                             sample_rate=SAMPLE_RATE, layouts=False, seed=0)
    files = {f"bad_{kind}": path for kind, path in write_bad_media(root / "bad", seed=0).items()}
    files["stripes"] = summary.root / "videos" / "vid_00000.mp4"
    files["stripes_other"] = summary.root / "videos" / "vid_00001.mp4"
    files["ramp"] = write_ramp(root / "ramp.mp4")
    files["ramp_pcm"] = write_ramp(root / "ramp.mkv", audio_codec="pcm_s16le")
    return files


@pytest.fixture(autouse=True)
def cache_in_tmp(tmp_path, monkeypatch):
    # build_index defaults to ~/.cache/xdc; tests keep their caches to themselves.
    monkeypatch.setenv("XDC_CACHE", str(tmp_path / "xdc-cache"))


# ---------------------------------------------------------------------------------------------------------
# probe


def test_probe_reads_duration_rate_size_and_audio(media):
    info = probe(str(media["stripes"]))
    assert info.duration == pytest.approx(2.0, abs=0.1)
    assert info.fps == pytest.approx(FPS)
    assert (info.width, info.height) == (WIDTH, HEIGHT)
    assert info.has_audio
    assert info.audio_peak > SILENCE_PEAK


def test_probe_can_skip_measuring_the_audio(media):
    info = probe(str(media["stripes"]), check_audio=False)
    assert info.has_audio and info.audio_peak == 0.0


def test_probe_sees_missing_and_silent_audio(media):
    assert not probe(str(media["bad_no_audio"])).has_audio
    silent = probe(str(media["bad_silent"]))
    assert silent.has_audio and silent.audio_peak < SILENCE_PEAK


@pytest.mark.parametrize("kind", ["bad_corrupt", "bad_truncated"])
def test_probe_refuses_broken_files(media, kind):
    with pytest.raises(MediaError, match="cannot decode"):
        probe(str(media[kind]))


def test_probe_refuses_a_missing_file(tmp_path):
    with pytest.raises(MediaError):
        probe(str(tmp_path / "gone.mp4"))


# ---------------------------------------------------------------------------------------------------------
# read_clip


def test_read_clip_gives_resized_uint8_frames_and_float_audio_of_the_window(media):
    frames, audio = read_clip(str(media["stripes"]), start=0.0, num_frames=8, fps=8.0, short_side=40,
                              sample_rate=SAMPLE_RATE)
    assert frames.dtype == np.uint8
    assert frames.shape == (8, 40, round(WIDTH * 40 / HEIGHT), 3)  # short side (height) to 40, aspect kept
    assert audio.dtype == np.float32
    assert audio.shape == (int(8 / 8.0 * SAMPLE_RATE),)
    assert np.abs(audio).max() > 0.01


@pytest.mark.parametrize("num_frames, fps", [(4, 8.0), (6, 5.0), (10, 30.0)])
def test_read_clip_audio_lasts_num_frames_over_fps(media, num_frames, fps):
    _, audio = read_clip(str(media["ramp"]), start=0.5, num_frames=num_frames, fps=fps, short_side=24,
                         sample_rate=SAMPLE_RATE)
    assert len(audio) == round(num_frames / fps * SAMPLE_RATE)


def test_read_clip_can_skip_the_audio(media):
    frames, audio = read_clip(str(media["bad_no_audio"]), start=0.0, num_frames=4, fps=8.0, short_side=48,
                              sample_rate=SAMPLE_RATE, with_audio=False)
    assert audio is None and frames.shape[0] == 4
    with pytest.raises(MediaError, match="no audio stream"):
        read_clip(str(media["bad_no_audio"]), start=0.0, num_frames=4, fps=8.0, short_side=48,
                  sample_rate=SAMPLE_RATE)


def test_a_later_clip_differs_from_the_first(media):
    read = dict(num_frames=4, fps=8.0, short_side=48, sample_rate=SAMPLE_RATE)
    first_frames, first_audio = read_clip(str(media["stripes"]), start=0.0, **read)
    later_frames, later_audio = read_clip(str(media["stripes"]), start=1.0, **read)
    again_frames, again_audio = read_clip(str(media["stripes"]), start=0.0, **read)
    assert np.abs(first_frames.astype(int) - later_frames.astype(int)).mean() > 5
    assert not np.allclose(first_audio, later_audio, atol=1e-3)
    np.testing.assert_array_equal(first_frames, again_frames)  # decoding is deterministic
    np.testing.assert_array_equal(first_audio, again_audio)


@pytest.mark.parametrize("path_key", ["ramp", "ramp_pcm"])
@pytest.mark.parametrize("start, fps", [(0.0, 5.0), (0.3, 5.0), (1.1, 7.0), (0.5, 30.0), (2.0, 8.0)])
def test_frames_follow_the_timestamps_at_another_frame_rate(media, path_key, start, fps):
    frames, _ = read_clip(str(media[path_key]), start=start, num_frames=8, fps=fps, short_side=24,
                          sample_rate=SAMPLE_RATE)
    picked = frame_numbers(frames)
    wanted = (start + np.arange(8) / fps) * FPS  # source frame shown at each target time
    assert np.all(np.diff(picked) >= 0), picked
    if fps < FPS:
        assert np.all(np.diff(picked) > 0), picked  # downsampling never shows a frame twice
    assert np.abs(picked - wanted).max() <= 1.0, (picked, wanted)


def test_the_last_window_holds_the_final_frame(media):
    # The window [2.5, 3.0) ends exactly with the file; the reader must not give up on its last frames.
    frames, audio = read_clip(str(media["ramp"]), start=2.5, num_frames=4, fps=8.0, short_side=24,
                              sample_rate=SAMPLE_RATE)
    assert frame_numbers(frames)[-1] >= RAMP_FRAMES - 2
    assert len(audio) == SAMPLE_RATE // 2


def test_a_window_past_the_end_is_refused(media):
    with pytest.raises(MediaError, match="frames decodable"):
        read_clip(str(media["bad_short"]), start=2.0, num_frames=4, fps=8.0, short_side=24, sample_rate=SAMPLE_RATE)


# AAC too: the sound is decoded from before the window, so the window does not start with the first frame after a
# seek, which a decoder gives without its overlap (relative error 0.04 at 1.3 s when it did).
@pytest.mark.parametrize("path_key, max_error", [("ramp_pcm", 1e-4), ("ramp", 1e-4)])
@pytest.mark.parametrize("start", [0.5, 1.3, 2.4])
def test_audio_follows_the_timestamps(media, path_key, max_error, start):
    _, audio = read_clip(str(media[path_key]), start=start, num_frames=4, fps=8.0, short_side=24,
                         sample_rate=SAMPLE_RATE)
    source = ramp_audio()
    begin = round(start * SAMPLE_RATE)

    def relative_error(shift: int) -> float:
        reference = source[begin + shift:begin + shift + len(audio)]
        return float(np.mean((audio[:len(reference)] - reference) ** 2) / np.mean(reference ** 2))

    assert relative_error(0) < max_error
    assert relative_error(0) < relative_error(16) and relative_error(0) < relative_error(-16)  # aligned to 1 ms


@pytest.mark.parametrize("start, seconds, audio_start", [(1.0, 2.0, 0.25), (0.0, 2.0, 0.0), (2.5, 2.0, 1.0)])
def test_a_longer_audio_window_is_centred_on_the_clip_and_kept_inside_the_file(media, start, seconds, audio_start):
    cfg = DataConfig(clip_frames=4, fps=8.0, sample_rate=SAMPLE_RATE, audio_seconds=seconds)
    span = audio_span(cfg, start, RAMP_FRAMES / FPS)
    assert span == pytest.approx((audio_start, seconds))
    frames, audio = read_clip(str(media["ramp_pcm"]), start=start, num_frames=4, fps=8.0, short_side=24,
                              sample_rate=SAMPLE_RATE, audio_span=span)
    assert abs(frame_numbers(frames)[0] - start * FPS) <= 1  # the frames keep their own window
    begin = round(audio_start * SAMPLE_RATE)
    np.testing.assert_allclose(audio, ramp_audio()[begin:begin + len(audio)], atol=1e-3)
    assert len(audio) == round(seconds * SAMPLE_RATE)


def test_without_audio_seconds_the_sound_is_the_clips_own_window():
    cfg = DataConfig(clip_frames=4, fps=8.0)
    assert cfg.audio_window == cfg.span_seconds == 0.5 and audio_span(cfg, 1.2, 3.0) == (1.2, 0.5)


def test_read_audio_and_audio_duration(media):
    assert audio_duration(str(media["ramp_pcm"])) == pytest.approx(RAMP_FRAMES / FPS, abs=0.05)
    samples = read_audio(str(media["ramp_pcm"]), start=1.0, seconds=0.25, sample_rate=8000)
    assert samples.dtype == np.float32 and samples.shape == (2000,)
    with pytest.raises(MediaError, match="no audio stream"):
        audio_duration(str(media["bad_no_audio"]))


# ---------------------------------------------------------------------------------------------------------
# transforms


def test_log_mel_gives_one_finite_channel_of_n_mels_by_frames():
    log_mel = LogMel(sample_rate=SAMPLE_RATE, n_mels=32, window_ms=25.0, hop_ms=10.0)
    spec = log_mel(ramp_audio(0.5))
    assert spec.shape == (1, 32, 51)  # 0.5 s at a 10 ms hop, centred frames: 1 + 8000 // 160
    assert spec.dtype == torch.float32
    assert torch.isfinite(spec).all()
    silence = log_mel(np.zeros(SAMPLE_RATE // 2, dtype=np.float32))
    assert torch.isfinite(silence).all()  # the log is floored, so digital silence stays finite
    assert silence.max() < spec.max()


def test_log_mel_puts_a_tone_in_the_right_band():
    log_mel = LogMel(sample_rate=SAMPLE_RATE, n_mels=40, window_ms=25.0, hop_ms=10.0)
    t = np.arange(SAMPLE_RATE) / SAMPLE_RATE
    low = log_mel(np.sin(2 * np.pi * 300 * t).astype(np.float32)).mean(dim=2).argmax()
    high = log_mel(np.sin(2 * np.pi * 3000 * t).astype(np.float32)).mean(dim=2).argmax()
    assert low < high


def coordinate_frames(t: int = 3, height: int = 10, width: int = 12) -> np.ndarray:
    """Pixels that know where they are: channel 0 = row, 1 = column, 2 = frame."""
    grid = np.zeros((t, height, width, 3), dtype=np.uint8)
    grid[..., 0] = np.arange(height)[None, :, None]
    grid[..., 1] = np.arange(width)[None, None, :]
    grid[..., 2] = np.arange(t)[:, None, None]
    return grid


def test_eval_crop_is_the_centre():
    crop = crop_frames(coordinate_frames(), 6, train=False, rng=np.random.default_rng(0))
    assert crop.shape == (3, 6, 6, 3)
    assert crop[0, 0, 0, 0] == (10 - 6) // 2 and crop[0, 0, 0, 1] == (12 - 6) // 2
    assert np.all(np.diff(crop[0, 0, :, 1].astype(int)) == 1)  # never flipped
    again = crop_frames(coordinate_frames(), 6, train=False, rng=np.random.default_rng(99))
    np.testing.assert_array_equal(crop, again)


def test_train_crops_move_and_flip_but_stay_whole_windows():
    frames = coordinate_frames()
    tops, lefts, flips = set(), set(), set()
    for seed in range(40):
        crop = crop_frames(frames, 6, train=True, rng=np.random.default_rng(seed))
        assert crop.shape == (3, 6, 6, 3) and crop.flags["C_CONTIGUOUS"]
        rows, columns = crop[0, :, 0, 0].astype(int), crop[0, 0, :, 1].astype(int)
        assert np.all(np.diff(rows) == 1)
        step = np.diff(columns)
        assert np.all(step == 1) or np.all(step == -1)
        np.testing.assert_array_equal(crop[:, 0, 0, 2], [0, 1, 2])  # one crop for all frames of the clip
        tops.add(rows[0])
        lefts.add(columns.min())
        flips.add(bool(step[0] < 0))
    assert len(tops) > 2 and len(lefts) > 2 and flips == {True, False}
    same = [crop_frames(frames, 6, train=True, rng=np.random.default_rng(7)) for _ in range(2)]
    np.testing.assert_array_equal(*same)


def test_video_tensor_is_channels_first_and_normalised_on_demand():
    frames = coordinate_frames()
    video = to_video_tensor(frames)
    assert video.shape == (3, 3, 10, 12) and video.dtype == torch.uint8
    assert video[1, 2, 4, 5] == frames[2, 4, 5, 1]
    mean_grey = torch.tensor([round(m * 255) for m in VIDEO_MEAN], dtype=torch.uint8).view(3, 1, 1, 1)
    normalised = normalize_video(mean_grey.expand(3, 2, 4, 4).unsqueeze(0))
    assert normalised.shape == (1, 3, 2, 4, 4) and normalised.dtype == torch.float32
    assert normalised.abs().max() < 0.02


# ---------------------------------------------------------------------------------------------------------
# the index


def counting_probe(monkeypatch) -> list[str]:
    calls: list[str] = []
    real_probe = index_module.probe

    def probe_and_count(path, **kwargs):
        calls.append(Path(path).name)
        return real_probe(path, **kwargs)

    monkeypatch.setattr(index_module, "probe", probe_and_count)
    return calls


def test_build_index_probes_once_and_reprobes_only_changed_files(tmp_path, monkeypatch):
    files = [write_ramp(tmp_path / "data" / "a.mp4", frames=24), write_ramp(tmp_path / "data" / "b.mp4", frames=24)]
    cache = tmp_path / "cache"
    calls = counting_probe(monkeypatch)

    first = build_index(files, cache_dir=cache)
    assert sorted(calls) == ["a.mp4", "b.mp4"]
    assert len(list((cache / "index").glob("*.json"))) == 1
    assert [e.path for e in first] == [str(p) for p in files]
    assert first[0].info.duration == pytest.approx(2.0, abs=0.1)

    calls.clear()
    second = build_index(files, cache_dir=cache)
    assert calls == []
    assert second == first

    write_ramp(files[1], frames=30)  # edited in place: new size and mtime
    calls.clear()
    third = build_index(files, cache_dir=cache)
    assert calls == ["b.mp4"]
    assert third[0] == first[0]
    assert third[1].info.duration == pytest.approx(2.5, abs=0.1)


def test_build_index_records_why_a_file_is_undecodable_and_caches_that_too(media, tmp_path, monkeypatch):
    entries = build_index([media["bad_corrupt"]], cache_dir=tmp_path / "cache")
    assert entries[0].info is None and "cannot decode" in entries[0].error
    calls = counting_probe(monkeypatch)
    assert build_index([media["bad_corrupt"]], cache_dir=tmp_path / "cache") == entries
    assert calls == []


def test_build_index_uses_the_cache_folder_from_the_environment(media, tmp_path):
    build_index([media["stripes"]])
    assert list((tmp_path / "xdc-cache" / "index").glob("*.json"))


def test_screen_sorts_files_by_why_they_cannot_be_used(media, tmp_path):
    kinds = ["stripes", "bad_corrupt", "bad_truncated", "bad_silent", "bad_no_audio", "bad_short"]
    entries = build_index([media[k] for k in kinds], cache_dir=tmp_path / "cache")
    screened = screen(entries, clip_seconds=1.0)
    assert [e.path for e in screened.usable] == [str(media["stripes"])]
    assert screened.skipped == {
        "undecodable": [str(media["bad_corrupt"]), str(media["bad_truncated"])],
        "silent": [str(media["bad_silent"])],
        "no_audio": [str(media["bad_no_audio"])],
        "too_short": [str(media["bad_short"])],
    }
    assert screened.skipped_counts == {"no_audio": 1, "silent": 1, "too_short": 1, "undecodable": 2}
    assert summarize(screened).startswith("1 usable files")
    assert f"silent\t{media['bad_silent']}" in screened.report()


def test_screen_keeps_soundless_files_when_audio_is_not_needed(media, tmp_path):
    kinds = ["stripes", "bad_silent", "bad_no_audio", "bad_short"]
    entries = build_index([media[k] for k in kinds], cache_dir=tmp_path / "cache")
    screened = screen(entries, clip_seconds=1.0, need_audio=False)
    assert [Path(e.path).name for e in screened.usable] == ["vid_00000.mp4", "silent.mp4", "no_audio.mp4"]
    assert screened.skipped == {"too_short": [str(media["bad_short"])]}


# ---------------------------------------------------------------------------------------------------------
# clips


def clip_config() -> DataConfig:
    return DataConfig(clip_frames=4, fps=8.0, resize_short=40, crop_size=32, n_mels=32, sample_rate=SAMPLE_RATE)


def test_even_requests_space_windows_evenly():
    videos = [Video("a.mp4", 3.0), Video("b.mp4", 1.0), Video("c.mp4", 0.5)]
    requests = even_requests(videos, clips_per_video=3, clip_seconds=1.0)
    assert requests.shape == (9, 3)
    np.testing.assert_array_equal(requests[:, 0], [0, 0, 0, 1, 1, 1, 2, 2, 2])
    np.testing.assert_allclose(requests[:3, 1], [0.0, 1.0, 2.0])  # the last window ends with the video
    np.testing.assert_allclose(requests[3:, 1], 0.0)  # no room to move: every window starts at 0
    np.testing.assert_array_equal(requests[:, 2], 0)


def test_even_requests_take_the_centre_window_for_one_clip():
    requests = even_requests([Video("a.mp4", 3.0), Video("b.mp4", 5.0)], clips_per_video=1, clip_seconds=1.0)
    np.testing.assert_allclose(requests, [[0, 1.0, 0], [1, 2.0, 0]])
    assert even_requests([], clips_per_video=2, clip_seconds=1.0).shape == (0, 3)


def test_random_requests_stay_inside_each_video_and_repeat_for_a_seed():
    videos = [Video("a.mp4", 3.0), Video("b.mp4", 1.5), Video("c.mp4", 0.8)]
    ids = np.repeat(np.arange(3), 50)
    requests = random_requests(videos, ids, 1.0, np.random.default_rng(0))
    assert requests.shape == (150, 3)
    limits = np.array([2.0, 0.5, 0.0])[ids]
    assert np.all(requests[:, 1] >= 0) and np.all(requests[:, 1] <= limits)
    again = random_requests(videos, ids, 1.0, np.random.default_rng(0))
    np.testing.assert_array_equal(requests, again)


def test_clip_dataset_turns_a_broken_file_into_a_failure_record(media):
    videos = [Video(str(media["stripes"]), 2.0, label=1), Video(str(media["bad_corrupt"]), 1.0),
              Video(str(media["bad_short"]), 3.0)]  # the index's duration is stale: the window lies past the end
    requests = even_requests(videos, clips_per_video=1, clip_seconds=0.5)
    dataset = ClipDataset(videos, requests, clip_config(), train=False)
    good, corrupt, past_end = dataset[0], dataset[1], dataset[2]
    assert good["ok"] and good["video"].shape == (3, 4, 32, 32) and good["video"].dtype == torch.uint8
    assert good["audio"].shape == (1, 32, 51)
    assert (corrupt["ok"], corrupt["video_index"]) == (False, 1) and "cannot decode" in corrupt["error"]
    assert (past_end["ok"], past_end["video_index"]) == (False, 2)

    batch = collate_clips([good, corrupt, past_end])
    assert batch["size"] == 1
    assert [index for index, _ in batch["failed"]] == [1, 2]
    assert batch["video"].shape == (1, 3, 4, 32, 32)  # B x 3 x T x S x S
    assert batch["audio"].shape == (1, 1, 32, 51)  # B x 1 x n_mels x frames
    assert batch["label"].tolist() == [1] and batch["video_index"].tolist() == [0] and batch["position"].tolist() == [0]


def test_a_batch_of_only_failures_has_no_tensors():
    batch = collate_clips([{"ok": False, "video_index": 4, "error": "cannot decode"}])
    assert batch == {"failed": [(4, "cannot decode")], "size": 0}


def test_clip_loader_keeps_request_order_and_reports_failures(media):
    videos = [Video(str(media["stripes"]), 2.0, 0), Video(str(media["bad_truncated"]), 1.0),
              Video(str(media["stripes_other"]), 2.0, 1)]
    requests = even_requests(videos, clips_per_video=2, clip_seconds=0.5)
    batches = list(clip_loader(ClipDataset(videos, requests, clip_config(), train=True), batch_size=4, workers=0))
    assert [b["size"] for b in batches] == [2, 2]
    assert [index for b in batches for index, _ in b["failed"]] == [1, 1]
    assert torch.cat([b["position"] for b in batches]).tolist() == [0, 1, 4, 5]
    assert torch.cat([b["label"] for b in batches]).tolist() == [0, 0, 1, 1]


def test_train_clips_are_reproducible_from_the_request_seed(media):
    videos = [Video(str(media["stripes"]), 2.0)]
    requests = np.array([[0, 0.5, 11.0], [0, 0.5, 11.0], [0, 0.5, 12.0]])
    dataset = ClipDataset(videos, requests, clip_config(), train=True)
    first, same, other_seed = dataset[0], dataset[1], dataset[2]
    assert torch.equal(first["video"], same["video"])
    assert torch.equal(first["audio"], same["audio"])
    assert torch.equal(first["audio"], other_seed["audio"])  # the seed drives only the spatial augmentation


# ---------------------------------------------------------------------------------------------------------
# several clips per decode


@pytest.mark.parametrize("path_key", ["ramp", "ramp_pcm", "stripes"])
def test_clips_read_in_one_decode_are_the_clips_read_one_by_one(media, path_key):
    starts = [0.2, 0.45, 1.1, 1.1, 1.5]  # overlapping, repeated, out of order is fine too
    window = dict(num_frames=4, fps=8.0, short_side=24, sample_rate=SAMPLE_RATE)
    spans = [(start - 0.1, 0.7) for start in starts]
    together = read_clips(str(media[path_key]), starts=starts, audio_spans=spans, **window)
    for start, span, (frames, sound) in zip(starts, spans, together):
        alone_frames, alone_sound = read_clip(str(media[path_key]), start=start, audio_span=span, **window)
        np.testing.assert_array_equal(frames, alone_frames)
        np.testing.assert_allclose(sound, alone_sound, atol=1e-5)


def test_a_clip_past_the_end_fails_its_whole_decode(media):
    with pytest.raises(MediaError, match="frames decodable from 2.90s"):
        read_clips(str(media["ramp"]), starts=[0.5, 2.9], num_frames=4, fps=8.0, short_side=24,
                   sample_rate=SAMPLE_RATE)


def test_stretch_requests_keep_a_visit_together_inside_one_stretch():
    videos = [Video("a.mp4", 10.0), Video("b.mp4", 2.5), Video("c.mp4", 1.0)]
    ids = np.repeat(np.arange(3), 40)
    requests = stretch_requests(videos, ids, 1.0, 4, np.random.default_rng(0))
    visits = requests.reshape(120, 4, 3)
    assert requests.shape == (480, 3)
    np.testing.assert_array_equal(visits[:, :, 0], np.repeat(ids, 4).reshape(120, 4))
    starts = visits[:, :, 1]
    assert np.all(np.diff(starts, axis=1) >= 0)  # in time order, for one forward decode
    assert np.all(starts[:, -1] - starts[:, 0] <= 3.0 + 1e-9)  # inside 4 clip lengths
    durations = np.array([10.0, 2.5, 1.0])[ids]
    assert np.all(starts >= 0) and np.all(starts <= (durations - 1.0)[:, None] + 1e-9)
    assert len(np.unique(visits[ids == 0][:, 0, 1])) == 40  # the stretches move around the long video
    np.testing.assert_array_equal(requests, stretch_requests(videos, ids, 1.0, 4, np.random.default_rng(0)))


def test_a_loader_of_several_clips_per_decode_batches_clips_in_request_order(media):
    videos = [Video(str(media["stripes"]), 2.0, 0), Video(str(media["bad_corrupt"]), 1.0),
              Video(str(media["stripes_other"]), 2.0, 1)]
    requests = stretch_requests(videos, np.array([0, 1, 2]), 0.5, 2, np.random.default_rng(0))
    dataset = ClipDataset(videos, requests, clip_config(), train=True, clips_per_item=2)
    assert len(dataset) == 3
    batches = list(clip_loader(dataset, batch_size=4, workers=2))
    assert [b["size"] for b in batches] == [2, 2]
    assert [index for b in batches for index, _ in b["failed"]] == [1, 1]  # both clips of the broken visit
    assert torch.cat([b["position"] for b in batches]).tolist() == [0, 1, 4, 5]
    assert torch.cat([b["video_index"] for b in batches]).tolist() == [0, 0, 2, 2]
    with pytest.raises(ValueError, match="does not hold whole items"):
        clip_loader(dataset, batch_size=3, workers=0)
