"""The real-material sets: decodable media in every layout, labels, mismatches, factors, and their failures."""

import csv
import os
import sys
from pathlib import Path

import av
import numpy as np
import pytest

from xdc.data import load_video_set
from xdc.config import DataConfig
from xdc.data.layouts import read_layout
from xdc.data.material import MATERIAL_SETS, make_material_set
from xdc.errors import DataError

KINDS = list(MATERIAL_SETS)


@pytest.fixture(scope="module", params=KINDS)
def material(request, tmp_path_factory):
    """24 clips of each set, a few of them with another class's sound."""
    root = tmp_path_factory.mktemp(request.param)
    return request.param, make_material_set(request.param, root, videos=24, seed=1, mismatch=0.25)


def rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def decode(path: Path) -> tuple[np.ndarray, np.ndarray]:
    with av.open(str(path)) as container:
        frames = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
    with av.open(str(path)) as container:
        audio = np.concatenate([f.to_ndarray().reshape(-1) for f in container.decode(audio=0)])
    return frames, audio


def test_it_writes_decodable_video_with_sound_in_every_layout(material):
    kind, summary = material
    labels = rows(summary.root / "labels.csv")
    assert len(labels) == 24 and summary.classes == list(MATERIAL_SETS[kind].classes)
    frames, audio = decode(summary.root / labels[0]["path"])
    assert frames.shape == (24, 64, 64, 3) and frames.std() > 10  # 3 s at 8 fps, a picture, not a flat frame
    assert np.abs(audio).max() > 0.02  # a sound track with a voice or an instrument in it, not silence
    ucf = load_video_set(DataConfig(path=str(summary.root / "ucf101"), layout="ucf101", num_workers=0))
    assert ucf.videos and ucf.labeled and not ucf.screened.skipped_counts
    esc = read_layout("esc50", summary.root / "esc50", split="all")
    assert len(esc.samples) == 24 and esc.labeled


def test_mismatched_clips_carry_another_class_sound_and_say_so(material):
    _, summary = material
    labels = rows(summary.root / "labels.csv")
    mismatched = [r for r in labels if r["mismatched"] == "1"]
    assert len(mismatched) == summary.mismatched == 6
    assert all(r["label"] != r["audio_label"] for r in mismatched)
    factors = {r["path"]: r for r in rows(summary.root / "factors.csv")}
    assert all(factors[r["path"]]["audio_class"] == r["audio_label"] for r in labels)


def test_every_tree_names_each_clip_nuisances(material):
    kind, summary = material
    expected = {"spoken-digits": {"ink", "background", "drift", "speaker", "loudness"},
                "instrument-glyphs": {"typeface", "ink", "background", "motion", "register", "tempo", "loudness"}}
    for tree in (summary.root, summary.root / "ucf101", summary.root / "esc50"):
        table = rows(tree / "factors.csv")
        assert len(table) == 24 and all((tree / r["path"]).is_file() for r in table)
        assert set(table[0]) == {"path", "audio_class", *expected[kind]}
    data = load_video_set(DataConfig(path=str(summary.root), num_workers=0))
    assert set(data.factors.codes) == {"audio_class", *expected[kind]}
    assert all(len(codes) == len(data.videos) and (codes >= 0).all() for codes in data.factors.codes.values())
    assert any(len(values) > 1 for values in data.factors.values.values())  # nuisances vary across clips


def files(root: Path) -> dict[str, bytes]:
    return {str(path.relative_to(root)): path.read_bytes() for path in sorted(root.rglob("*")) if path.is_file()}


def test_it_is_deterministic_given_the_seed(tmp_path):
    a = make_material_set("spoken-digits", tmp_path / "a", videos=10, seed=5)
    b = make_material_set("spoken-digits", tmp_path / "b", videos=10, seed=5)
    assert files(a.root) == files(b.root)  # byte for byte: the comparison's set digest depends on it


def fake_espeak(folder: Path, amplitude: str) -> None:
    """An espeak-ng on PATH that writes a 0.3 s tone whose amplitude is `amplitude`, a formula of its call count n."""
    script = folder / "espeak-ng"
    script.write_text(f"""#!{sys.executable}
import pathlib, sys, wave
import numpy as np
counter = pathlib.Path({str(folder / "calls")!r})
n = int(counter.read_text()) if counter.exists() else 0
counter.write_text(str(n + 1))
tone = ({amplitude}) * np.sin(np.arange(6615) * 0.1)
with wave.open(sys.argv[sys.argv.index("-w") + 1], "wb") as out:
    out.setnchannels(1), out.setsampwidth(2), out.setframerate(22050)
    out.writeframes((tone * 32767).astype("<i2").tobytes())
""")
    script.chmod(0o755)


def test_an_utterance_espeak_renders_differently_once_does_not_change_the_set(tmp_path, monkeypatch):
    sets = []
    # One generation's first rendering is off, the other's is not.
    for name, amplitude in (("a", "0.6 if n == 0 else 0.5"), ("b", "0.5")):
        bin_folder = tmp_path / f"bin-{name}"
        bin_folder.mkdir()
        fake_espeak(bin_folder, amplitude)
        monkeypatch.setenv("PATH", f"{bin_folder}:{os.environ['PATH']}")
        sets.append(files(make_material_set("spoken-digits", tmp_path / name, videos=10, seed=0, layouts=False).root))
    assert sets[0] == sets[1]


def test_a_synthesiser_that_never_renders_the_same_way_twice_is_refused(tmp_path, monkeypatch):
    fake_espeak(tmp_path, "0.1 + 0.01 * n")
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    with pytest.raises(DataError, match="rendered differently on each of 4 tries"):
        make_material_set("spoken-digits", tmp_path / "set", videos=10, seed=0)
    assert not (tmp_path / "set").exists()


def test_spoken_digits_never_show_the_same_scanned_digit_twice(tmp_path):
    summary = make_material_set("spoken-digits", tmp_path / "set", videos=20, seed=0, layouts=False)
    first_frames = [decode(summary.root / "videos" / f"vid_{i:05d}.mp4")[0][0] for i in range(20)]
    assert len({frame.tobytes() for frame in first_frames}) == 20


@pytest.mark.parametrize("kwargs,message", [
    ({"kind": "faces"}, "unknown material set"),
    ({"videos": 3}, "at least the 10 classes"),
    ({"mismatch": 1.0}, "mismatch must be in"),
])
def test_it_refuses_bad_arguments_and_writes_nothing(tmp_path, kwargs, message):
    args = {"kind": "spoken-digits", "videos": 12, **kwargs}
    with pytest.raises(DataError, match=message):
        make_material_set(args.pop("kind"), tmp_path / "set", **args)
    assert not (tmp_path / "set").exists()


def test_it_refuses_to_overwrite_a_dataset(tmp_path):
    make_material_set("spoken-digits", tmp_path / "set", videos=10, seed=0, layouts=False)
    with pytest.raises(DataError, match="already holds a dataset"):
        make_material_set("instrument-glyphs", tmp_path / "set", videos=10, seed=0)


def test_a_missing_synthesiser_is_named_with_its_package(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # neither espeak-ng nor fluidsynth on it
    for kind, package in (("spoken-digits", "espeak-ng"), ("instrument-glyphs", "fluidsynth")):
        with pytest.raises(DataError, match=f"Debian package {package}"):
            make_material_set(kind, tmp_path / kind, videos=12)
        assert not (tmp_path / kind).exists()
