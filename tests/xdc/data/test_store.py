"""The prepared clip store on real files: the same clips as the source within JPEG's tolerance, the same splits and
labels, bad files reported, a resume after an interruption, and the inputs it refuses."""

import shutil
from pathlib import Path

import numpy as np
import pytest

from xdc.cli import main
from xdc.config import DataConfig, StoreSettings
from xdc.data import load_video_set, media
from xdc.data.clips import ClipDataset, clip_loader, media_of, random_requests, stretch_requests
from xdc.data.layouts import read_layout
from xdc.data.store import MANIFEST, PARTIAL, _exclusive, open_store, prepare_store, shard_size
from xdc.data.synthetic import write_bad_media
from xdc.errors import DataError, MediaError


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(255 ** 2 / np.mean((a.astype(np.float64) - b) ** 2)))


@pytest.fixture(scope="module")
def folder_store(synthetic_root, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("store") / "synthetic"
    prepare_store(synthetic_root, "folder", out, workers=2)
    return out


def test_a_clip_from_the_store_is_the_clip_from_the_source(synthetic_root, folder_store):
    source = load_video_set(DataConfig(path=str(synthetic_root), split="all", num_workers=0))
    stored = load_video_set(DataConfig(path=str(folder_store), split="all", num_workers=0))
    assert [Path(v.path).relative_to(folder_store) for v in stored.videos] == \
        [Path(v.path).relative_to(synthetic_root) for v in source.videos]
    assert [v.label for v in stored.videos] == [v.label for v in source.videos]
    assert [v.duration for v in stored.videos] == [v.duration for v in source.videos]
    assert stored.classes == source.classes and all(v.store == str(folder_store) for v in stored.videos)
    for original, copy in zip(source.videos[:6], stored.videos[:6]):
        for start in (0.0, 0.55, original.duration - 1.0):
            for short_side in (72, 40):  # the store's own size, and one it resizes to
                window = dict(start=start, num_frames=8, fps=8.0, short_side=short_side, sample_rate=16000)
                frames, sound = media.read_clip(original.path, **window)
                stored_frames, stored_sound = media_of(copy).read_clip(copy.path, **window)
                assert stored_frames.shape == frames.shape and stored_frames.dtype == np.uint8
                assert psnr(stored_frames, frames) > 30  # JPEG at quality 90: 34.6 dB on these noisy stripes
                np.testing.assert_allclose(stored_sound, sound, atol=1e-3)  # 16-bit PCM of the same decode


def test_a_store_keeps_every_split_and_label_of_its_source(synthetic_root, tmp_path):
    prepare_store(synthetic_root / "ucf101", "ucf101", tmp_path / "store")
    for split in ("train", "test", "all"):
        for fold in (1, 2, 3):
            source = read_layout("ucf101", synthetic_root / "ucf101", split=split, fold=fold)
            stored = read_layout("ucf101", tmp_path / "store", split=split, fold=fold)
            assert stored.classes == source.classes
            assert [(s.path.relative_to(stored.root), s.label) for s in stored.samples] == \
                [(s.path.relative_to(source.root), s.label) for s in source.samples]
    with pytest.raises(DataError, match="prepared store of a ucf101 dataset; read it with layout ucf101"):
        read_layout("kinetics", tmp_path / "store")


def test_training_clips_from_the_store_go_through_the_loader(folder_store):
    cfg = DataConfig(path=str(folder_store), split="all", clip_frames=4, resize_short=40, crop_size=32,
                     num_workers=2)
    videos = load_video_set(cfg).videos
    rng = np.random.default_rng(0)
    ids = rng.integers(0, len(videos), size=6)
    for requests, per_item in ((random_requests(videos, ids, cfg.clip_seconds, rng), 1),
                               (stretch_requests(videos, ids, cfg.clip_seconds, 2, rng), 2)):
        dataset = ClipDataset(videos, requests, cfg, train=True, clips_per_item=per_item)
        batches = list(clip_loader(dataset, batch_size=2 * per_item, workers=2))
        assert [b["size"] for b in batches] == [2 * per_item] * 3 and not any(b["failed"] for b in batches)
        assert batches[0]["video"].shape == (2 * per_item, 3, 4, 32, 32) and batches[0]["audio"].shape[:2] == \
            (2 * per_item, 1)


def test_bad_files_are_left_out_with_the_reason_and_screened_as_the_source_is(synthetic_root, tmp_path):
    source = tmp_path / "source"
    shutil.copytree(synthetic_root / "videos", source / "good")
    bad = write_bad_media(source / "bad")
    summary = prepare_store(source, "folder", tmp_path / "store")
    assert set(summary.skipped) == {"bad/corrupt.mp4", "bad/truncated.mp4"}
    assert "bad/corrupt.mp4" in (tmp_path / "store" / "skipped.tsv").read_text()
    for folder in (source, tmp_path / "store"):
        data = load_video_set(DataConfig(path=str(folder), split="all", clip_frames=8, fps=8.0, num_workers=0))
        assert data.screened.skipped_counts == {"no_audio": 1, "silent": 1, "too_short": 1, "undecodable": 2}
    assert len(bad) == 5


def test_an_interrupted_prepare_resumes_and_gives_the_store_a_fresh_one_gives(synthetic_root, folder_store, tmp_path):
    out = tmp_path / "store"
    shards = -(-24 // shard_size(24))

    def interrupt_after_three(done: int, total: int) -> None:
        if done >= 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        prepare_store(synthetic_root, "folder", out, on_progress=interrupt_after_three)
    assert (out / PARTIAL).is_file() and not (out / MANIFEST).exists()
    # What a process killed inside the next shard leaves: data without the shard's record, a half-written file.
    (out / "shards" / "00003.frames").write_bytes(b"half")
    (out / "shards" / "00004.frames.tmp").write_bytes(b"half")
    with pytest.raises(DataError, match="no samples"):  # not a store until its manifest is written
        read_layout("folder", out, split="all")
    summary = prepare_store(synthetic_root, "folder", out)
    assert (summary.reused_shards, summary.shards) == (3, shards)
    fresh, resumed = np.load(folder_store / "index.npz"), np.load(out / "index.npz")
    for name in fresh.files:
        np.testing.assert_array_equal(resumed[name], fresh[name])
    assert not (out / PARTIAL).exists()


@pytest.mark.parametrize("workers", [1, 2])
def test_a_stop_request_ends_after_the_shards_under_way_and_a_rerun_finishes(synthetic_root, tmp_path, workers):
    out = tmp_path / "store"
    asked = []

    def stop_after_the_first_shard() -> bool:
        return bool(asked)

    summary = prepare_store(synthetic_root, "folder", out, workers=workers, should_stop=stop_after_the_first_shard,
                            on_progress=lambda done, total: asked.append(done) if done else None)
    assert summary.stopped and "stopped on request" in summary.text()
    assert not (out / MANIFEST).exists() and (out / PARTIAL).exists()
    finished = len(list((out / "shards").glob("*.json")))
    assert 1 <= finished < -(-24 // shard_size(24))  # some shards, not every one
    again = prepare_store(synthetic_root, "folder", out, workers=workers)
    assert not again.stopped and again.reused_shards == finished and again.videos == 24


def test_prepare_is_tracked_as_one_run_with_its_settings_sizes_and_skipped_files(synthetic_root, tmp_path):
    from xdc.config import PrepareConfig
    from xdc.data.store import prepare
    from xdc.tracking import NullTracker

    tracker = NullTracker()
    cfg = PrepareConfig.from_dict({"path": str(synthetic_root), "store": {"short_side": 48}, "workers": 2})
    reports = []
    summary = prepare(cfg, tracker, out_dir=tmp_path / "store", on_progress=lambda *report: reports.append(report))
    assert tracker.status == "FINISHED" and tracker.params["store.short_side"] == "48"
    assert tracker.metrics["videos"] == [(0, 24.0)] and "skipped.tsv" in tracker.artifacts
    assert reports[-1][0] == 1.0 and reports[-1][2] == "24/24 videos"
    assert summary.record()["videos"] == 24
    failing = NullTracker()
    with pytest.raises(DataError):
        prepare(PrepareConfig.from_dict({"path": str(tmp_path / "missing")}), failing, out_dir=tmp_path / "other")
    assert failing.starts == 0 and not (tmp_path / "other").exists()  # refused before a run or a folder exists


def test_a_rerun_of_a_finished_store_reuses_every_shard(synthetic_root, tmp_path):
    first = prepare_store(synthetic_root, "folder", tmp_path / "store")
    again = prepare_store(synthetic_root, "folder", tmp_path / "store")
    assert again.reused_shards == again.shards == first.shards and again.videos == first.videos == 24


def test_a_changed_source_file_is_stored_again(synthetic_root, tmp_path):
    source = tmp_path / "source"
    shutil.copytree(synthetic_root / "videos", source)
    prepare_store(source, "folder", tmp_path / "store")
    victim = sorted(source.glob("*.mp4"))[5]
    victim.write_bytes(sorted(source.glob("*.mp4"))[6].read_bytes())
    summary = prepare_store(source, "folder", tmp_path / "store")
    assert summary.reused_shards == summary.shards - 1


def test_a_store_refuses_clips_it_cannot_serve(synthetic_root, tmp_path):
    prepare_store(synthetic_root, "folder", tmp_path / "store",
                  StoreSettings.from_dict({"short_side": 48, "fps": 8, "sample_rate": 8000}))
    for key, value, message in (("resize_short", 64, "48 px short side"), ("fps", 12.0, "8 frames per second"),
                                ("sample_rate", 16000, "sound is at 8000 Hz")):
        cfg = DataConfig(path=str(tmp_path / "store"), split="all", crop_size=32, num_workers=0, **{key: value})
        with pytest.raises(DataError, match=message):
            load_video_set(cfg)
    video_only = DataConfig(path=str(tmp_path / "store"), split="all", resize_short=48, crop_size=32, fps=4.0)
    assert len(load_video_set(video_only, need_audio=False).videos) == 24  # no sound wanted: its rate is no matter


def test_a_window_past_the_end_is_refused_as_the_source_refuses_it(folder_store):
    video = load_video_set(DataConfig(path=str(folder_store), split="all", num_workers=0)).videos[0]
    with pytest.raises(MediaError, match="frames decodable"):
        media_of(video).read_clip(video.path, start=video.duration - 0.25, num_frames=8, fps=8.0, short_side=72,
                                  sample_rate=16000)


@pytest.mark.parametrize("where, message", [
    ("inside", "must lie outside the dataset"),
    ("stranger", "is not empty and not a store"),
    ("file", "is not a folder"),
])
def test_prepare_refuses_an_output_that_is_not_its_own(synthetic_root, tmp_path, where, message):
    out = {"inside": synthetic_root / "store", "stranger": tmp_path, "file": tmp_path / "notes.txt"}[where]
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(DataError, match=message):
        prepare_store(synthetic_root, "folder", out)
    assert (tmp_path / "notes.txt").read_text() == "mine" and not (synthetic_root / "store").exists()


def test_a_store_of_other_settings_is_not_overwritten(synthetic_root, tmp_path):
    prepare_store(synthetic_root, "folder", tmp_path / "store")
    with pytest.raises(DataError, match="holds a store of other settings"):
        prepare_store(synthetic_root, "folder", tmp_path / "store", StoreSettings.from_dict({"short_side": 64}))


def test_two_prepares_of_one_store_do_not_run_at_once(synthetic_root, tmp_path):
    with _exclusive(tmp_path / "store"):
        with pytest.raises(DataError, match="another `xdc prepare` is writing"):
            prepare_store(synthetic_root, "folder", tmp_path / "store")


def test_sound_files_and_stores_are_not_prepared(synthetic_root, folder_store, tmp_path):
    with pytest.raises(DataError, match="a store holds videos"):
        prepare_store(synthetic_root / "esc50", "esc50", tmp_path / "a")
    with pytest.raises(DataError, match="is itself a prepared store"):
        prepare_store(folder_store, "folder", tmp_path / "b")


def test_the_command_prepares_and_refuses_bad_options_in_one_line(synthetic_root, tmp_path, capsys):
    assert main(["prepare", str(synthetic_root), "--out", str(tmp_path / "store"), "--quiet",
                 "--short-side", "48", "--workers", "2"]) == 0
    assert "stored 24 videos" in capsys.readouterr().out
    assert open_store(str(tmp_path / "store")).settings.short_side == 48
    assert main(["prepare", str(synthetic_root), "--out", str(tmp_path / "other"), "--quality", "0"]) == 2
    assert capsys.readouterr().err.strip() == "xdc: error: --quality must be at least 1, got 0"
    assert not (tmp_path / "other").exists()


def test_a_full_disk_fails_the_prepare_instead_of_skipping_the_video(synthetic_root, tmp_path):
    from xdc.config import StoreSettings
    from xdc.data.store import _transcode

    video = sorted((synthetic_root / "videos").glob("*.mp4"))[0]
    with open("/dev/full", "wb", buffering=0) as full, open(tmp_path / "pcm", "wb") as pcm:
        with pytest.raises(OSError) as caught:  # ENOSPC, as on a full disk; not a MediaError ("bad video")
            _transcode(str(video), full, pcm, StoreSettings())
    assert not isinstance(caught.value, MediaError)


@pytest.mark.parametrize("manifest", [
    {"format": 1},
    {"format": 1, "layout": "folder", "settings": {"short_side": "x"}, "videos": []},
    {"format": 1, "layout": "folder", "settings": {}, "videos": [{"path": "a.mp4"}], "splits": {"all/1": {
        "samples": [[7, 0]], "classes": [], "missing": 0}}},
])
def test_a_manifest_not_written_by_prepare_is_refused_in_one_line(folder_store, tmp_path, manifest):
    import json

    shutil.copytree(folder_store, tmp_path / "store")
    (tmp_path / "store" / MANIFEST).write_text(json.dumps(manifest))
    open_store.cache_clear()
    with pytest.raises(DataError, match="not one `xdc prepare` wrote|not ones"):
        read_layout("folder", tmp_path / "store", split="all")
