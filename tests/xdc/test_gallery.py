"""The round's cluster gallery on generated real media: its format, its media, its bounds, and a bad member."""

from __future__ import annotations

import csv
import json
import shutil
import wave
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from torchvision.io import decode_jpeg, read_file

import xdc.train
from xdc.config import StoreSettings, load_config
from xdc.data import load_video_set
from xdc.data.store import prepare_store
from xdc.gallery import MAP_POINTS, SCHEMA, write_gallery
from xdc.tracking import NullTracker
from xdc.train import pretrain

pytestmark = pytest.mark.slow


def tiny(root: Path, *overrides: str):
    return load_config(preset="tiny", overrides=[f"data.path={root}", *overrides])


def read_gallery(out: Path, round_index: int) -> dict:
    return json.loads((out / "gallery" / f"round_{round_index:03d}" / "gallery.json").read_text())


def read_assignments(out: Path, round_index: int) -> list[dict[str, str]]:
    with (out / "assignments" / f"round_{round_index:03d}.csv").open() as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def run(synthetic_root, tmp_path_factory) -> tuple[Path, NullTracker]:
    """A tiny 2-round XDC run on the labelled set (24 videos, 4 classes; K = 4 in every space), seed 0."""
    out = tmp_path_factory.mktemp("gallery") / "run"
    tracker = NullTracker()
    pretrain(tiny(synthetic_root), tracker, out_dir=out)
    return out, tracker


def test_it_lists_every_cluster_of_every_clustered_space_each_round(run):
    out, _ = run
    for round_index in (0, 1):
        gallery, table = read_gallery(out, round_index), read_assignments(out, round_index)
        assert gallery["schema"] == SCHEMA and gallery["round"] == round_index
        assert gallery["clip"] == {"seconds": 0.5, "fps": 8.0, "sample_rate": 16000, "frames": 4}
        assert len(gallery["classes"]) == 4 and {row["label"] for row in table} <= set(gallery["classes"])
        assert set(gallery["spaces"]) == {"video", "audio", "joint"}  # labelled: joint clustered to diagnose
        for space, entry in gallery["spaces"].items():
            clusters = [int(row[f"cluster_{space}"]) for row in table]
            assert entry["k"] == 4 and [c["id"] for c in entry["clusters"]] == [0, 1, 2, 3]
            assert sum(c["size"] for c in entry["clusters"]) == len(table) == 24
            for c in entry["clusters"]:
                members = {i for i, owner in enumerate(clusters) if owner == c["id"]}
                assert c["size"] == len(members)
                assert set(c["random"]) <= members and len(c["random"]) == len(set(c["random"])) == min(4, c["size"])
                assert set(c["nearest"]) <= members and len(c["nearest"]) == min(4, c["size"])


def test_purity_is_the_share_of_the_majority_label(run):
    out, _ = run
    gallery, table = read_gallery(out, 0), read_assignments(out, 0)
    for space, entry in gallery["spaces"].items():
        for c in entry["clusters"]:
            names = [row["label"] for row in table if int(row[f"cluster_{space}"]) == c["id"]]
            top = max(set(names), key=names.count)
            assert 0 <= c["purity"] <= 1 and c["purity"] == pytest.approx(names.count(top) / len(names), abs=1e-4)
            assert names.count(c["majority"]) == names.count(top)


def test_nearest_members_are_those_closest_to_the_centroid(run):
    out, _ = run  # the features of the last round are still in features/
    features = np.load(out / "features" / "rank0" / "video.npy")
    unit = features / np.linalg.norm(features, axis=1, keepdims=True)
    clusters = np.array([int(row["cluster_video"]) for row in read_assignments(out, 1)])
    for c in read_gallery(out, 1)["spaces"]["video"]["clusters"]:
        members = np.flatnonzero(clusters == c["id"])
        centroid = unit[members].mean(axis=0)
        cosine = unit[members] @ centroid / np.linalg.norm(centroid)
        assert c["nearest"] == [int(i) for i in members[np.argsort(-cosine, kind="stable")[:4]]]


def test_the_map_places_every_clustered_video(run):
    out, _ = run
    table = read_assignments(out, 0)
    classes = read_gallery(out, 0)["classes"]
    for space, entry in read_gallery(out, 0)["spaces"].items():
        found = entry["map"]
        assert found["method"] == "pca" and len(found["explained"]) == 2
        assert all(0 <= e <= 1 for e in found["explained"]) and sum(found["explained"]) <= 1 + 1e-6
        assert sorted(p[2] for p in found["points"]) == list(range(24))
        for x, y, index, cluster, label in found["points"]:
            assert cluster == int(table[index][f"cluster_{space}"]) and classes[label] == table[index]["label"]
            assert round(x, 4) == x and round(y, 4) == y


def test_every_member_shown_has_a_strip_of_frames_and_the_clips_sound(run):
    out, _ = run
    folder = out / "gallery" / "round_000"
    gallery = read_gallery(out, 0)
    shown = {i for entry in gallery["spaces"].values() for c in entry["clusters"] for i in c["random"] + c["nearest"]}
    assert set(gallery["members"]) == {str(i) for i in shown}
    table = read_assignments(out, 0)
    for key, member in gallery["members"].items():
        assert "error" not in member and member["frames"] == f"media/v{int(key):06d}.jpg"
        assert member["label"] == table[int(key)]["label"] and table[int(key)]["path"].endswith(member["path"])
        assert 0 <= member["start"] <= 1.5  # the middle window of a 2 s video
        strip = decode_jpeg(read_file(str(folder / member["frames"])))
        assert strip.shape[0] == 3 and strip.shape[1] == 64 and strip.shape[2] >= 4 * 64
        with wave.open(str(folder / member["audio"])) as sound:
            assert (sound.getframerate(), sound.getnchannels(), sound.getsampwidth()) == (16000, 1, 2)
            assert abs(sound.getnframes() - 8000) <= 1  # 0.5 s at 16 kHz


def test_the_gallery_is_logged_as_artifacts_and_the_rounds_on_the_step_axis(run):
    out, tracker = run
    for round_index in (0, 1):
        prefix = f"gallery/round_{round_index:03d}"
        members = read_gallery(out, round_index)["members"]
        expected = {f"{prefix}/gallery.json"} | {f"{prefix}/{m[kind]}" for m in members.values()
                                                for kind in ("frames", "audio")}
        assert {a for a in tracker.artifacts if a.startswith(prefix)} == expected
    steps = tracker.metrics["train/round"]
    assert [value for _, value in steps] == [0.0, 1.0] and steps[0][0] == 0
    assert steps[1][0] == 3  # after round 0's one epoch: 24 clips in batches of 8


def test_no_gallery_with_no_members_asked_for(synthetic_root, tmp_path):
    tracker = NullTracker()
    pretrain(tiny(synthetic_root, "rounds=1", "gallery_members=0"), tracker, out_dir=tmp_path / "run")
    assert not (tmp_path / "run" / "gallery").exists()
    assert not [a for a in tracker.artifacts if a.startswith("gallery/")]
    assert tracker.metrics["train/round"] == [(0, 0.0)]


def test_a_member_that_no_longer_decodes_is_recorded_and_the_round_finishes(synthetic_root, tmp_path, monkeypatch):
    data = tmp_path / "unlabelled"
    shutil.copytree(synthetic_root / "videos", data)
    victim = sorted(data.rglob("*.mp4"))[0]
    clustered = xdc.train.cluster_features

    def cluster_then_truncate(*args, **kwargs):
        result = clustered(*args, **kwargs)
        victim.write_bytes(victim.read_bytes()[:200])  # the file breaks after its features were taken
        return result

    monkeypatch.setattr(xdc.train, "cluster_features", cluster_then_truncate)
    out = tmp_path / "run"
    result = pretrain(tiny(data, "rounds=1", "gallery_members=16"), NullTracker(), out_dir=out)

    assert result.final_checkpoint is not None
    gallery = read_gallery(out, 0)
    assert gallery["classes"] == [] and set(gallery["spaces"]) == {"video", "audio"}  # unlabelled: no joint
    assert all(c["purity"] is None and c["majority"] is None
               for entry in gallery["spaces"].values() for c in entry["clusters"])
    index = next(i for i, row in enumerate(read_assignments(out, 0)) if row["path"] == str(victim))
    broken = gallery["members"][str(index)]  # 16 members a view: every clustered video is shown
    assert broken["frames"] is None and broken["audio"] is None and broken["error"]
    assert broken["path"] == victim.relative_to(data).as_posix() and broken["label"] is None
    assert sum("error" in m for m in gallery["members"].values()) == 1 and len(gallery["members"]) == 24


def test_a_prepared_store_serves_the_gallery_and_a_large_map_is_a_seeded_sample(synthetic_root, tmp_path):
    store = tmp_path / "store"
    prepare_store(synthetic_root, "folder", store, StoreSettings(short_side=40), workers=1)
    cfg = tiny(store, "gallery_members=2")
    data = load_video_set(cfg.data)
    many = replace(data, videos=data.videos * 100)  # 2400 videos: the map keeps a sample of 2000
    rng = np.random.default_rng(0)
    features = {"video": rng.normal(size=(len(many.videos), 16)).astype(np.float32)}
    clusters = rng.integers(0, 3, size=len(many.videos))  # cluster 3 of 4 stays empty
    clusters[:5] = -1  # failed extractions are never shown
    written = []
    for name in ("a", "b"):
        path = write_gallery(tmp_path / name, data=many, cfg=cfg, round_index=2, features=features,
                             assignments={"video": clusters}, ks={"video": 4})
        written.append(json.loads(path.read_text()))
    assert written[0] == written[1]  # seeded: the same inputs give the same gallery
    space = written[0]["spaces"]["video"]
    assert [c["size"] for c in space["clusters"]] == [int((clusters == c).sum()) for c in range(4)]
    assert space["clusters"][3] == {"id": 3, "size": 0, "purity": None, "majority": None, "random": [],
                                    "nearest": []}
    assert len(space["map"]["points"]) == MAP_POINTS and not {p[2] for p in space["map"]["points"]} & set(range(5))
    members = written[0]["members"]
    assert len(members) <= 3 * 2 * 2 and not set(members) & {"0", "1", "2", "3", "4"}
    assert all(m["frames"] and (tmp_path / "a" / m["frames"]).is_file() for m in members.values())
