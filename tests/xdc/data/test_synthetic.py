"""The synthetic dataset: real decodable media, the UCF101 and ESC-50 layouts, determinism and class structure."""

import csv
import math
from pathlib import Path

import av
import numpy as np
import pytest

from xdc.data.synthetic import make_synthetic, write_bad_media, write_media
from xdc.errors import DataError

FPS = 12.0
SAMPLE_RATE = 16000
SIZE = (96, 72)


@pytest.fixture(scope="module")
def dataset24(tmp_path_factory):
    """The smallest set the split guarantees cover: 4 videos in each of 6 classes."""
    root = tmp_path_factory.mktemp("synthetic24")
    return make_synthetic(root, videos=24, classes=6, duration=2.0, fps=FPS, size=SIZE, sample_rate=SAMPLE_RATE,
                          mismatch=0.25, seed=3)


@pytest.fixture(scope="module")
def dataset30(tmp_path_factory):
    """5 clips per class: the smallest set in which every ESC-50 fold can hold every class."""
    root = tmp_path_factory.mktemp("synthetic30")
    return make_synthetic(root, videos=30, classes=6, duration=0.5, mismatch=0.2, seed=4)


@pytest.fixture(scope="module")
def bad_media(tmp_path_factory):
    return write_bad_media(tmp_path_factory.mktemp("bad"), seed=0)


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def decode_video(path: Path) -> np.ndarray:
    with av.open(str(path)) as container:
        return np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)])


def decode_audio(path: Path) -> tuple[np.ndarray, int]:
    with av.open(str(path)) as container:
        rate = container.streams.audio[0].codec_context.sample_rate
        samples = [frame.to_ndarray().astype(np.float32).reshape(-1) for frame in container.decode(audio=0)]
    return np.concatenate(samples), rate


def dominant_frequency(samples: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.argmax(spectrum) * rate / len(samples))


def stripe_orientation_degrees(frame: np.ndarray) -> float:
    """Direction across the stripes, from the peak of the zero-padded, windowed 2-D spectrum of the grey image."""
    grey = frame.astype(np.float64) @ [0.299, 0.587, 0.114]
    grey -= grey.mean()
    grey *= np.outer(np.hanning(grey.shape[0]), np.hanning(grey.shape[1]))
    spectrum = np.abs(np.fft.fft2(grey, s=(256, 256)))
    spectrum[:, 128:] = 0  # a real image's spectrum is symmetric: keep the half with fx >= 0
    fy, fx = np.unravel_index(np.argmax(spectrum), spectrum.shape)
    fy = fy - 256 if fy >= 128 else fy
    return math.degrees(math.atan2(fy, fx)) % 180


def nearest_class(value: float, class_values: list[float], *, period: float | None = None) -> int:
    distances = [abs(value - v) if period is None else min(abs(value - v) % period, -abs(value - v) % period)
                 for v in class_values]
    return int(np.argmin(distances))


# --------------------------------------------------------------------------------------------------- media files


def test_it_writes_decodable_videos_of_the_requested_shape_and_length(dataset24):
    rows = read_csv(dataset24.root / "labels.csv")
    assert len(rows) == 24
    for row in rows[:6]:
        frames = decode_video(dataset24.root / row["path"])
        samples, rate = decode_audio(dataset24.root / row["path"])
        assert frames.shape[1:] == (SIZE[1], SIZE[0], 3)
        assert abs(len(frames) - 2.0 * FPS) <= 1
        assert rate == SAMPLE_RATE
        assert abs(len(samples) / rate - 2.0) < 0.1


def test_it_keeps_every_encoded_frame_and_keyframes_every_second(dataset24):
    with av.open(str(dataset24.root / "videos" / "vid_00000.mp4")) as container:
        keyframes = [packet.is_keyframe for packet in container.demux(video=0) if packet.size]
    assert len(keyframes) == 24
    assert sum(keyframes) == 2


def test_write_media_round_trips_other_containers_and_codecs(tmp_path):
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, size=(6, 32, 48, 3), dtype=np.uint8)
    audio = (0.5 * np.sin(2 * np.pi * 440 * np.arange(8000) / 8000)).astype(np.float32)
    write_media(tmp_path / "a.mkv", frames=frames, fps=6.0, audio=audio, sample_rate=8000, video_codec="mpeg4",
                audio_codec="pcm_s16le")
    write_media(tmp_path / "a.wav", frames=None, fps=6.0, audio=audio, sample_rate=8000, audio_codec="pcm_s16le")
    assert decode_video(tmp_path / "a.mkv").shape == (6, 32, 48, 3)
    samples, rate = decode_audio(tmp_path / "a.wav")
    assert rate == 8000
    np.testing.assert_allclose(samples / 32768, audio, atol=1e-4)


@pytest.mark.parametrize("name, kwargs", [
    ("a.webm", {}),  # webm cannot carry h264/aac
    ("a.mov", {}),
    ("a.mp4", {"frames": np.zeros((4, 31, 32, 3), np.uint8)}),
    ("a.mp4", {"frames": np.zeros((4, 32, 32, 3), np.float32)}),
    ("a.mp4", {"frames": None, "audio": None}),
])
def test_write_media_refuses_what_it_cannot_encode(tmp_path, name, kwargs):
    arguments = {"frames": np.zeros((4, 32, 32, 3), np.uint8), "fps": 4.0, "audio": np.zeros(800, np.float32),
                 "sample_rate": 8000, **kwargs}
    with pytest.raises(DataError):
        write_media(tmp_path / name, **arguments)


# --------------------------------------------------------------------------------------------------- labels


def test_it_labels_every_clip_and_mismatches_the_requested_fraction(dataset24):
    rows = read_csv(dataset24.root / "labels.csv")
    assert list(rows[0]) == ["path", "label", "audio_label", "mismatched"]
    assert all((dataset24.root / row["path"]).is_file() for row in rows)
    assert {row["label"] for row in rows} == set(dataset24.classes)
    mismatched = [row for row in rows if row["mismatched"] == "1"]
    assert len(mismatched) == dataset24.mismatched == 6
    assert all(row["label"] != row["audio_label"] for row in mismatched)
    assert all(row["label"] == row["audio_label"] for row in rows if row["mismatched"] == "0")


def test_it_balances_classes_and_names_them_in_camel_case(dataset24):
    rows = read_csv(dataset24.root / "labels.csv")
    assert [sum(row["label"] == name for row in rows) for name in dataset24.classes] == [4] * 6
    assert all(name.isalnum() and name[0].isupper() for name in dataset24.classes)


def test_it_is_deterministic_given_the_seed(tmp_path):
    small = {"videos": 6, "classes": 2, "duration": 0.5, "layouts": False}
    first = make_synthetic(tmp_path / "first", seed=7, **small)
    again = make_synthetic(tmp_path / "again", seed=7, **small)
    other = make_synthetic(tmp_path / "other", seed=8, **small)
    labels = [(run.root / "labels.csv").read_bytes() for run in (first, again, other)]
    frames = [decode_video(run.root / "videos" / "vid_00000.mp4")[0].astype(int) for run in (first, again, other)]
    assert labels[0] == labels[1]
    assert np.abs(frames[0] - frames[1]).max() <= 1
    assert labels[0] != labels[2] or np.abs(frames[0] - frames[2]).mean() > 10


def test_it_refuses_to_overwrite_a_dataset(tmp_path):
    make_synthetic(tmp_path, videos=2, classes=2, duration=0.25, layouts=False)
    with pytest.raises(DataError, match="already holds a dataset"):
        make_synthetic(tmp_path, videos=2, classes=2, duration=0.25, layouts=False)


@pytest.mark.parametrize("kwargs", [
    {"videos": 6, "classes": 1},
    {"videos": 3, "classes": 4},
    {"videos": 6, "duration": 0},
    {"videos": 6, "fps": 2},
    {"videos": 6, "size": (97, 72)},
    {"videos": 6, "sample_rate": 4000},
    {"videos": 6, "mismatch": 1.0},
    {"videos": 6, "mismatch": -0.1},
])
def test_it_refuses_bad_arguments(tmp_path, kwargs):
    arguments = {"classes": 2, **kwargs}
    with pytest.raises(DataError):
        make_synthetic(tmp_path, **arguments)
    assert not any(tmp_path.iterdir())


# --------------------------------------------------------------------------------------------------- class structure


def test_each_clips_sound_carries_the_pitch_of_its_audio_class(dataset24):
    """Pitch identifies the sound class, mismatched clips included: the class structure is real and recorded."""
    rows = read_csv(dataset24.root / "labels.csv")
    peaks = {}
    for row in rows:
        samples, rate = decode_audio(dataset24.root / row["path"])
        peaks[row["path"]] = dominant_frequency(samples, rate)
    class_pitches = [np.median([peaks[r["path"]] for r in rows if r["audio_label"] == name])
                     for name in dataset24.classes]
    assert np.all(np.diff(class_pitches) / class_pitches[:-1] > 0.2)  # distinct, well separated pitches
    for row in rows:
        assert dataset24.classes[nearest_class(math.log(peaks[row["path"]]), list(np.log(class_pitches)))] == \
            row["audio_label"]


def test_each_clips_stripes_carry_the_orientation_of_its_visual_class(dataset24):
    rows = read_csv(dataset24.root / "labels.csv")
    class_angles = [180 * c / len(dataset24.classes) for c in range(len(dataset24.classes))]
    for row in rows:
        angle = stripe_orientation_degrees(decode_video(dataset24.root / row["path"])[0])
        assert dataset24.classes[nearest_class(angle, class_angles, period=180)] == row["label"]


def test_colour_varies_within_a_class(dataset24):
    """Colour is a nuisance: clips of one class must not share a colour a model could cluster on."""
    rows = read_csv(dataset24.root / "labels.csv")
    for name in dataset24.classes:
        mean_colours = [decode_video(dataset24.root / r["path"])[0].reshape(-1, 3).mean(axis=0)
                        for r in rows if r["label"] == name]
        assert np.std(mean_colours, axis=0).max() > 10


# --------------------------------------------------------------------------------------------------- UCF101 layout


def ucf_list(root: Path, name: str) -> list[str]:
    return (root / "ucf101" / "ucfTrainTestlist" / name).read_text().splitlines()


def test_ucf101_lists_name_existing_files_of_known_classes(dataset24):
    class_index = {line.split()[1]: int(line.split()[0]) for line in ucf_list(dataset24.root, "classInd.txt")}
    assert list(class_index) == dataset24.classes and sorted(class_index.values()) == list(range(1, 7))
    for split in (1, 2, 3):
        for line in ucf_list(dataset24.root, f"trainlist0{split}.txt"):
            path, label = line.split(" ")
            assert (dataset24.root / "ucf101" / "UCF-101" / path).is_file()
            assert class_index[path.split("/")[0]] == int(label)
        for path in ucf_list(dataset24.root, f"testlist0{split}.txt"):
            assert (dataset24.root / "ucf101" / "UCF-101" / path).is_file()


def test_ucf101_splits_are_disjoint_complete_and_cover_every_class(dataset24):
    all_videos = {str(p.relative_to(dataset24.root / "ucf101" / "UCF-101"))
                  for p in (dataset24.root / "ucf101" / "UCF-101").rglob("*.avi")}
    assert len(all_videos) == 24
    for split in (1, 2, 3):
        train = {line.split(" ")[0] for line in ucf_list(dataset24.root, f"trainlist0{split}.txt")}
        test = set(ucf_list(dataset24.root, f"testlist0{split}.txt"))
        assert not train & test and train | test == all_videos
        assert {path.split("/")[0] for path in test} == set(dataset24.classes)
        assert {path.split("/")[0] for path in train} == set(dataset24.classes)
        test_groups = {int(path.split("_g")[1][:2]) for path in test}
        assert test_groups <= set(range(7 * split - 6, 7 * split + 1))


def test_ucf101_videos_are_avi_with_pcm_sound(dataset24):
    path = next((dataset24.root / "ucf101" / "UCF-101").rglob("*.avi"))
    with av.open(str(path)) as container:
        assert container.streams.video[0].codec_context.name == "h264"
        assert container.streams.audio[0].codec_context.name == "pcm_s16le"
    assert decode_video(path).shape == (24, SIZE[1], SIZE[0], 3)


# --------------------------------------------------------------------------------------------------- ESC-50 layout


def test_esc50_meta_matches_the_audio_files(dataset30):
    esc = dataset30.root / "esc50"
    rows = read_csv(esc / "meta" / "esc50.csv")
    assert list(rows[0]) == ["filename", "fold", "target", "category", "esc10", "src_file", "take"]
    assert sorted(row["filename"] for row in rows) == sorted(p.name for p in (esc / "audio").iterdir())
    for row in rows:
        assert dataset30.classes[int(row["target"])] == row["category"]
        assert row["filename"].startswith(f"{row['fold']}-{row['src_file']}-{row['take']}")
        assert row["esc10"] == "False"


def test_esc50_folds_each_hold_every_class(dataset30):
    rows = read_csv(dataset30.root / "esc50" / "meta" / "esc50.csv")
    for fold in "12345":
        assert {row["category"] for row in rows if row["fold"] == fold} == set(dataset30.classes)


def test_esc50_clips_are_the_sound_tracks_labelled_by_sound(dataset30):
    labels = {row["path"]: row for row in read_csv(dataset30.root / "labels.csv")}
    esc_rows = read_csv(dataset30.root / "esc50" / "meta" / "esc50.csv")
    assert sorted(row["category"] for row in esc_rows) == sorted(row["audio_label"] for row in labels.values())
    first = min(esc_rows, key=lambda row: int(row["src_file"]))
    samples, rate = decode_audio(dataset30.root / "esc50" / "audio" / first["filename"])
    with av.open(str(dataset30.root / "esc50" / "audio" / first["filename"])) as container:
        assert container.streams.audio[0].codec_context.channels == 1
    assert rate == 16000 and len(samples) == 8000
    assert labels["videos/vid_00000.mp4"]["audio_label"] == first["category"]


# --------------------------------------------------------------------------------------------------- bad media


@pytest.mark.parametrize("kind", ["corrupt", "truncated"])
def test_broken_files_cannot_be_decoded(bad_media, kind):
    with pytest.raises(av.FFmpegError):
        with av.open(str(bad_media[kind])) as container:
            for _ in container.decode(video=0):
                pass


def test_silent_file_has_an_all_zero_audio_track(bad_media):
    samples, _ = decode_audio(bad_media["silent"])
    assert len(samples) > 0 and np.abs(samples).max() < 1e-4
    assert len(decode_video(bad_media["silent"])) > 0


def test_no_audio_file_has_video_only(bad_media):
    with av.open(str(bad_media["no_audio"])) as container:
        assert len(container.streams.audio) == 0 and len(container.streams.video) == 1
    assert len(decode_video(bad_media["no_audio"])) > 0


def test_short_file_is_valid_but_under_half_a_second(bad_media):
    with av.open(str(bad_media["short"])) as container:
        assert container.duration / av.time_base < 0.5
        assert len(container.streams.audio) == 1
    assert len(decode_video(bad_media["short"])) >= 1


def test_a_single_mismatched_clip_still_gets_another_class_sound(tmp_path):
    summary = make_synthetic(tmp_path, videos=4, classes=2, duration=0.25, mismatch=0.25, layouts=False, seed=1)
    rows = read_csv(tmp_path / "labels.csv")
    assert summary.mismatched == 1
    assert [row["label"] != row["audio_label"] for row in rows].count(True) == 1
