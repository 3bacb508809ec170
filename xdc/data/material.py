"""Labelled audio-visual sets built from real material, for measuring what the method learns beyond our generator.

Two sets, each written as real encoded media in the same trees as the synthetic set (a folder of videos with
labels.csv, a UCF101 tree with three splits, an ESC-50 tree of the sound tracks), with a factors.csv per tree that
names each clip's nuisances, so pretraining can report whether its clusters follow the class or a nuisance:

- `spoken-digits`: real handwriting (the 1,797 scanned digits of the UCI optical-recognition set that scikit-learn
  ships), one distinct image per clip, drifting over crops of real photographs (scikit-learn's sample images); the
  sound is the digit's English word spoken again and again by espeak-ng's formant synthesiser, with voices of
  several accents and registers, random speed, pitch, loudness and noise. Nuisances: ink colour, background, drift
  direction, speaker, loudness.
- `instrument-glyphs`: a letter set in one of 21 real typefaces (the DejaVu, STIX and Computer Modern faces that
  matplotlib ships), spinning, pulsing or drifting over the photographs; the sound is a random melody played by the
  class's instrument from the FluidR3 General MIDI sound font (recorded instrument samples) through fluidsynth, in
  a random register, tempo and loudness. Nuisances: typeface, colour, background, motion, register, tempo, loudness.

A `mismatch` fraction of clips carry another class's sound, as footage whose sound is off-screen does. The speech
and instrument renderers are Debian's espeak-ng, fluidsynth and fluid-soundfont-gm (`deploy/system-packages.sh`
installs them); a missing one is a DataError that says which package to install.
"""

from __future__ import annotations

import math
import shutil
import struct
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np

from xdc.data.synthetic import ClipPlan, RenderedClip, SyntheticSummary, plan_clips, write_av_dataset
from xdc.errors import DataError

FPS = 8.0
SAMPLE_RATE = 16000
SIZE = 64  # frames are SIZE x SIZE, like the small clips of a low-resolution benchmark
DURATION = 3.0

INK_COLOURS = {"white": (240, 240, 240), "red": (235, 60, 50), "green": (70, 220, 80), "blue": (80, 120, 255),
               "yellow": (245, 225, 60), "magenta": (230, 70, 220)}
# Fixed crops (top, left, side) of scikit-learn's two sample photographs: each is one "background" value.
BACKGROUNDS = {"china-temple": ("china.jpg", 40, 180, 220), "china-trees": ("china.jpg", 200, 0, 220),
               "china-roof": ("china.jpg", 0, 400, 220), "flower-petals": ("flower.jpg", 100, 150, 220),
               "flower-leaves": ("flower.jpg", 200, 420, 220), "flower-centre": ("flower.jpg", 120, 260, 200)}
DRIFTS = {"east": (1.0, 0.0), "west": (-1.0, 0.0), "north": (0.0, -1.0), "south": (0.0, 1.0)}
LOUDNESS = {"quiet": (0.03, 0.1), "medium": (0.1, 0.3), "loud": (0.3, 0.8)}

DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
# espeak-ng voices: a language (accent) plus a voice variant (register and timbre).
SPEAKERS = ("en-us+m3", "en-us+f2", "en-gb+m1", "en-gb+f4", "en-gb-scotland+m5", "en-029+f1", "en-gb-x-rp+m7",
            "en-us-nyc+f5")

LETTERS = ("A", "H", "K", "M", "R", "S", "W", "X")
# (class name, General MIDI program): eight timbre families, one per letter class.
INSTRUMENTS = (("Piano", 0), ("Violin", 40), ("Trumpet", 56), ("Flute", 73), ("Guitar", 25), ("Organ", 19),
               ("Marimba", 12), ("Saxophone", 65))
TYPEFACES = ("DejaVuSans", "DejaVuSans-Bold", "DejaVuSans-Oblique", "DejaVuSans-BoldOblique", "DejaVuSansMono",
             "DejaVuSansMono-Bold", "DejaVuSansMono-Oblique", "DejaVuSansMono-BoldOblique", "DejaVuSerif",
             "DejaVuSerif-Bold", "DejaVuSerif-Italic", "DejaVuSerif-BoldItalic", "STIXGeneral", "STIXGeneralBol",
             "STIXGeneralItalic", "STIXGeneralBolIta", "cmr10", "cmb10", "cmss10", "cmti10", "cmtt10")
MOTIONS = ("spin", "pulse", "drift")
REGISTERS = {"low": 43, "mid-low": 52, "mid": 60, "mid-high": 67, "high": 74}  # lowest MIDI note of the melody
TEMPI = {"slow": (1.5, 2.5), "moderate": (2.5, 4.0), "fast": (4.0, 6.0)}  # notes per second
PENTATONIC = (0, 2, 4, 7, 9, 12, 14)
BANK_NOTES = range(40, 96)  # the pitches rendered once per instrument
BANK_HOLD, BANK_STRIDE = 1.0, 1.6  # seconds each bank note is held, seconds between bank note onsets
SOUND_FONT = Path("/usr/share/sounds/sf2/FluidR3_GM.sf2")


@dataclass(frozen=True)
class MaterialSet:
    name: str
    classes: tuple[str, ...]
    make_renderer: Callable[[Path, list[ClipPlan], int], Callable[[ClipPlan], RenderedClip]]
    tools: tuple[str, ...]  # programs it runs, checked before anything is written


def make_material_set(kind: str, out: Path, *, videos: int, seed: int = 0, mismatch: float = 0.15,
                      layouts: bool = True) -> SyntheticSummary:
    """Write `videos` clips of the real-material set `kind` under `out`, deterministically from `seed`."""
    if kind not in MATERIAL_SETS:
        raise DataError(f"unknown material set {kind!r}; known: {', '.join(MATERIAL_SETS)}")
    spec = MATERIAL_SETS[kind]
    if not videos >= len(spec.classes):
        raise DataError(f"videos must be at least the {len(spec.classes)} classes of {kind}, got {videos}")
    if not 0 <= mismatch < 1:
        raise DataError(f"mismatch must be in [0, 1), got {mismatch}")
    _check_tools(spec.tools)
    out = Path(out)
    if (out / "labels.csv").exists():
        raise DataError(f"{out} already holds a dataset (labels.csv exists); choose an empty folder")
    plans = plan_clips(videos=videos, classes=len(spec.classes), mismatch=mismatch, seed=seed)
    with tempfile.TemporaryDirectory(prefix="xdc-material-") as scratch:
        render = spec.make_renderer(Path(scratch), plans, seed)
        return write_av_dataset(out, plans, list(spec.classes), render, fps=FPS, sample_rate=SAMPLE_RATE,
                                layouts=layouts)


def _check_tools(tools: tuple[str, ...]) -> None:
    packages = {"espeak-ng": "espeak-ng", "fluidsynth": "fluidsynth"}
    for tool in tools:
        if shutil.which(tool) is None:
            raise DataError(f"{tool} is not installed (Debian package {packages[tool]}; "
                            f"deploy/system-packages.sh installs it)")
    if "fluidsynth" in tools and not SOUND_FONT.is_file():
        raise DataError(f"the sound font {SOUND_FONT} is missing (Debian package fluid-soundfont-gm; "
                        f"deploy/system-packages.sh installs it)")


# --------------------------------------------------------------------------------------------------- pictures


@cache
def _photo(name: str) -> np.ndarray:
    from sklearn.datasets import load_sample_image

    return load_sample_image(name)


@cache
def _background(name: str) -> np.ndarray:
    """The background crop as float32 H x W x 3, a little larger than a frame so it can pan."""
    from PIL import Image

    file, top, left, side = BACKGROUNDS[name]
    crop = _photo(file)[top:top + side, left:left + side]
    image = Image.fromarray(crop).resize((SIZE + 16, SIZE + 16), Image.Resampling.BILINEAR)
    return np.asarray(image, dtype=np.float32)


def _panned_backgrounds(name: str, frame_count: int, rng: np.random.Generator) -> np.ndarray:
    """T x SIZE x SIZE x 3 float32: the background dimmed (so the foreground stands out) and slowly panning."""
    photo = _background(name) * rng.uniform(0.35, 0.6)
    start, end = rng.integers(0, 17, size=(2, 2))
    out = np.empty((frame_count, SIZE, SIZE, 3), dtype=np.float32)
    for t in range(frame_count):
        y, x = np.round(start + (end - start) * t / max(1, frame_count - 1)).astype(int)
        out[t] = photo[y:y + SIZE, x:x + SIZE]
    return out


def _composite(background: np.ndarray, mask: np.ndarray, top: int, left: int, colour: np.ndarray) -> None:
    """Paint `colour` through `mask` (h x w in [0, 1]) onto `background` (H x W x 3) at (top, left), clipped."""
    h, w = mask.shape
    y0, x0 = max(0, top), max(0, left)
    y1, x1 = min(SIZE, top + h), min(SIZE, left + w)
    if y1 <= y0 or x1 <= x0:
        return
    alpha = mask[y0 - top:y1 - top, x0 - left:x1 - left, None]
    region = background[y0:y1, x0:x1]
    background[y0:y1, x0:x1] = region * (1 - alpha) + colour * alpha


def _finish_frames(frames: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    noise = rng.uniform(2, 8)
    frames += (rng.random(frames.shape, dtype=np.float32) - 0.5) * np.float32(noise * math.sqrt(12))
    return np.clip(frames, 0, 255).astype(np.uint8)


def _drift_positions(frame_count: int, extent: int, direction: tuple[float, float],
                     rng: np.random.Generator) -> list[tuple[int, int]]:
    """Top-left corners of a foreground of side `extent` crossing the frame along `direction`, inside the frame."""
    room = SIZE - extent
    speed = rng.uniform(0.5, 1.0) * room / max(1, frame_count - 1)
    dx, dy = direction
    start_x = rng.uniform(0, room) if dx == 0 else (0 if dx > 0 else room)
    start_y = rng.uniform(0, room) if dy == 0 else (0 if dy > 0 else room)
    start_x += rng.uniform(0, 0.3) * room * dx
    start_y += rng.uniform(0, 0.3) * room * dy
    ys = np.clip(start_y + dy * speed * np.arange(frame_count), 0, room).round().astype(int)
    xs = np.clip(start_x + dx * speed * np.arange(frame_count), 0, room).round().astype(int)
    return list(zip(ys.tolist(), xs.tolist()))


# --------------------------------------------------------------------------------------------------- sounds


def _fill_track(pieces: list[np.ndarray], rng: np.random.Generator, *, gap: tuple[float, float]) -> np.ndarray:
    """Lay the pieces end to end with random gaps, from a random offset, until the clip's sound track is full."""
    total = round(DURATION * SAMPLE_RATE)
    track = np.zeros(total, dtype=np.float32)
    at = int(rng.uniform(0, 0.4) * SAMPLE_RATE)
    while at < total:
        piece = pieces[int(rng.integers(len(pieces)))]
        end = min(total, at + len(piece))
        track[at:end] += piece[:end - at]
        at = end + int(rng.uniform(*gap) * SAMPLE_RATE)
    return track


def _level_and_noise(track: np.ndarray, loudness: str, rng: np.random.Generator) -> np.ndarray:
    peak = float(np.abs(track).max()) or 1.0
    track = track * (rng.uniform(*LOUDNESS[loudness]) / peak)
    snr_db = rng.uniform(8, 25)
    noise = rng.normal(0, 1, len(track)).astype(np.float32)
    noise = np.cumsum(noise) * 0.02 + noise  # a little brown noise under the white: room tone rather than hiss
    noise -= noise.mean()
    noise *= np.sqrt(np.mean(track**2)) / 10 ** (snr_db / 20) / max(float(np.std(noise)), 1e-9)
    return np.clip(track + noise, -1, 1).astype(np.float32)


def _resample(samples: np.ndarray, rate: int) -> np.ndarray:
    from scipy.signal import resample_poly

    if rate == SAMPLE_RATE:
        return samples.astype(np.float32)
    common = math.gcd(rate, SAMPLE_RATE)
    return resample_poly(samples, SAMPLE_RATE // common, rate // common).astype(np.float32)


def _read_wav(path: Path) -> tuple[np.ndarray, int]:
    """Mono float32 samples of a 16-bit PCM WAV, tolerating the unset length fields of streamed output."""
    data = path.read_bytes()
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise DataError(f"{path} is not a WAV file")
    at, rate, channels, samples = 12, 0, 1, None
    while at + 8 <= len(data):
        chunk, size = data[at:at + 4], struct.unpack("<I", data[at + 4:at + 8])[0]
        if chunk == b"fmt ":
            channels, rate = struct.unpack("<HI", data[at + 10:at + 16])
        elif chunk == b"data":
            body = data[at + 8:] if size in (0, 0xFFFFFFFF) or at + 8 + size > len(data) else data[at + 8:at + 8 + size]
            samples = np.frombuffer(body[:len(body) // 2 * 2], dtype="<i2").astype(np.float32) / 32768
            break
        at += 8 + size + (size & 1)
    if samples is None or not rate:
        raise DataError(f"{path} holds no PCM samples")
    return samples.reshape(-1, channels).mean(axis=1), rate


def _run(command: list[str], what: str) -> None:
    try:
        subprocess.run(command, check=True, capture_output=True, timeout=600)
    except subprocess.CalledProcessError as exc:
        detail = exc.stderr.decode(errors="replace").strip().splitlines()
        raise DataError(f"{what} failed: {detail[-1] if detail else exc}") from None
    except subprocess.TimeoutExpired:
        raise DataError(f"{what} did not finish in 10 minutes") from None


# --------------------------------------------------------------------------------------------------- spoken digits


@cache
def _digit_images() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    return digits.images.astype(np.float32) / 16.0, digits.target  # 1797 x 8 x 8 in [0, 1], 1797


def _spoken_digits_renderer(scratch: Path, plans: list[ClipPlan], seed: int) -> Callable[[ClipPlan], RenderedClip]:
    images, targets = _digit_images()
    rng = np.random.default_rng([seed, 1])
    # The n-th clip of a class takes the n-th image of its shuffled pool: no image is seen twice until a class has
    # more clips than scanned digits (about 180 each).
    pools = {digit: rng.permutation(np.flatnonzero(targets == digit)) for digit in range(10)}
    seen: dict[int, int] = {}
    image_of = {}
    for plan in plans:
        order = seen.get(plan.label, 0)
        seen[plan.label] = order + 1
        image_of[plan.index] = int(pools[plan.label][order % len(pools[plan.label])])
    utterances = _Utterances(scratch)

    def render(plan: ClipPlan) -> RenderedClip:
        rng = np.random.default_rng(plan.seed)
        frame_count = round(DURATION * FPS)
        factors = {"ink": _pick(rng, INK_COLOURS), "background": _pick(rng, BACKGROUNDS),
                   "drift": _pick(rng, DRIFTS), "speaker": _pick(rng, SPEAKERS), "loudness": _pick(rng, LOUDNESS)}
        frames = _panned_backgrounds(factors["background"], frame_count, rng)
        side = int(rng.integers(24, 34))
        mask = _scaled_mask(images[image_of[plan.index]], side)
        colour = np.array(INK_COLOURS[factors["ink"]], dtype=np.float32) * rng.uniform(0.85, 1.0)
        for t, (top, left) in enumerate(_drift_positions(frame_count, side, DRIFTS[factors["drift"]], rng)):
            _composite(frames[t], mask, top, left, colour)
        speed, pitch = int(rng.integers(130, 200)), int(rng.integers(25, 75))
        word = utterances.get(DIGIT_WORDS[plan.audio_label], factors["speaker"], speed, pitch)
        track = _fill_track([word], rng, gap=(0.05, 0.35))
        return RenderedClip(_finish_frames(frames, rng), _level_and_noise(track, factors["loudness"], rng), factors)

    return render


def _scaled_mask(image: np.ndarray, side: int) -> np.ndarray:
    from PIL import Image

    scaled = Image.fromarray((image * 255).astype(np.uint8)).resize((side, side), Image.Resampling.BICUBIC)
    return np.clip(np.asarray(scaled, dtype=np.float32) / 255 * 1.3, 0, 1)


class _Utterances:
    """espeak-ng renderings of (word, voice, speed, pitch), trimmed of silence and resampled, made once each.

    A rendering is kept once two renderings in a row agree sample for sample. espeak-ng now and then renders an
    utterance slightly differently (seen on a process's first utterance, correlation 0.999 with the usual one), and a
    set's files must be a function of its seed: two generations are one experiment only if their digests match."""

    TRIES = 4

    def __init__(self, scratch: Path):
        self.scratch = scratch
        self.made: dict[tuple, np.ndarray] = {}

    def get(self, word: str, voice: str, speed: int, pitch: int) -> np.ndarray:
        key = (word, voice, speed, pitch)
        if key not in self.made:
            self.made[key] = self._agreed(word, voice, speed, pitch)
        return self.made[key]

    def _agreed(self, word: str, voice: str, speed: int, pitch: int) -> np.ndarray:
        what = f"espeak-ng saying {word!r} as {voice} (speed {speed}, pitch {pitch})"
        path = self.scratch / "utterance.wav"
        previous = None
        for _ in range(self.TRIES):
            _run(["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch), "-w", str(path), word], what)
            samples, rate = _read_wav(path)
            rendering = (samples.tobytes(), rate)
            if rendering == previous:
                return _trim(_resample(samples, rate))
            previous = rendering
        raise DataError(f"{what} rendered differently on each of {self.TRIES} tries; the set would not be "
                        f"reproducible from its seed")


def _trim(samples: np.ndarray, floor: float = 0.02) -> np.ndarray:
    loud = np.flatnonzero(np.abs(samples) > floor * max(float(np.abs(samples).max()), 1e-9))
    if not len(loud):
        raise DataError("the speech synthesiser produced silence")
    return samples[loud[0]:loud[-1] + 1]


# --------------------------------------------------------------------------------------------------- instrument glyphs


def _instrument_glyphs_renderer(scratch: Path, plans: list[ClipPlan], seed: int) -> Callable[[ClipPlan],
                                                                                             RenderedClip]:
    bank = _NoteBank(scratch)

    def render(plan: ClipPlan) -> RenderedClip:
        rng = np.random.default_rng(plan.seed)
        frame_count = round(DURATION * FPS)
        factors = {"typeface": _pick(rng, TYPEFACES), "ink": _pick(rng, INK_COLOURS),
                   "background": _pick(rng, BACKGROUNDS), "motion": _pick(rng, MOTIONS),
                   "register": _pick(rng, REGISTERS), "tempo": _pick(rng, TEMPI), "loudness": _pick(rng, LOUDNESS)}
        frames = _panned_backgrounds(factors["background"], frame_count, rng)
        colour = np.array(INK_COLOURS[factors["ink"]], dtype=np.float32) * rng.uniform(0.85, 1.0)
        for t, (mask, top, left) in enumerate(_glyph_motion(LETTERS[plan.label], factors, frame_count, rng)):
            _composite(frames[t], mask, top, left, colour)
        notes = bank.notes(INSTRUMENTS[plan.audio_label][1])
        track = _melody(notes, REGISTERS[factors["register"]], TEMPI[factors["tempo"]], rng)
        return RenderedClip(_finish_frames(frames, rng), _level_and_noise(track, factors["loudness"], rng), factors)

    return render


@cache
def _font(typeface: str, size: int):
    from PIL import ImageFont
    import matplotlib

    return ImageFont.truetype(str(Path(matplotlib.get_data_path()) / "fonts" / "ttf" / f"{typeface}.ttf"), size)


def _glyph_mask(letter: str, typeface: str, size: int, angle: float) -> np.ndarray:
    """The letter drawn white on black in a square canvas, rotated by `angle` degrees, as a float mask in [0, 1]."""
    from PIL import Image, ImageDraw

    canvas = Image.new("L", (2 * size, 2 * size), 0)
    draw = ImageDraw.Draw(canvas)
    draw.text((size, size), letter, fill=255, font=_font(typeface, size), anchor="mm")
    canvas = canvas.rotate(angle, resample=Image.Resampling.BILINEAR)
    box = canvas.getbbox() or (0, 0, 1, 1)
    return np.asarray(canvas.crop(box), dtype=np.float32) / 255


def _glyph_motion(letter: str, factors: dict[str, str], frame_count: int,
                  rng: np.random.Generator) -> list[tuple[np.ndarray, int, int]]:
    """(mask, top, left) per frame: the letter spinning in place, pulsing in size, or drifting across."""
    size = int(rng.integers(30, 40))
    tilt = rng.uniform(-20, 20)
    turn = rng.choice([-1, 1]) * rng.uniform(60, 120)  # degrees over the clip, when spinning
    direction = list(DRIFTS.values())[int(rng.integers(len(DRIFTS)))]
    centre = rng.uniform(SIZE * 0.4, SIZE * 0.6, size=2)
    out = []
    for t in range(frame_count):
        phase = t / max(1, frame_count - 1)
        angle, scale = tilt, 1.0
        if factors["motion"] == "spin":
            angle = tilt + turn * phase
        elif factors["motion"] == "pulse":
            scale = 0.8 + 0.2 * math.sin(2 * math.pi * 0.75 * phase * DURATION)  # 0.75 pulses per second
        mask = _glyph_mask(letter, factors["typeface"], max(12, int(size * scale)), angle)
        h, w = mask.shape
        cy, cx = centre
        if factors["motion"] == "drift":
            cy, cx = centre + np.array(direction[::-1]) * (phase - 0.5) * (SIZE - max(h, w)) * 0.8
        out.append((mask, int(round(cy - h / 2)), int(round(cx - w / 2))))
    return out


class _NoteBank:
    """Every pitch of BANK_NOTES rendered once per General MIDI program by fluidsynth, sliced into notes."""

    def __init__(self, scratch: Path):
        self.scratch = scratch
        self.banks: dict[int, dict[int, np.ndarray]] = {}

    def notes(self, program: int) -> dict[int, np.ndarray]:
        if program not in self.banks:
            midi, wav = self.scratch / f"bank{program}.mid", self.scratch / f"bank{program}.wav"
            midi.write_bytes(_bank_midi(program))
            _run(["fluidsynth", "-ni", "-q", "-r", str(SAMPLE_RATE), "-g", "0.6", "-F", str(wav), str(SOUND_FONT),
                  str(midi)], f"fluidsynth rendering General MIDI program {program}")
            samples, rate = _read_wav(wav)
            samples = _resample(samples, rate)
            stride = round(BANK_STRIDE * SAMPLE_RATE)
            self.banks[program] = {note: samples[i * stride:(i + 1) * stride] for i, note in enumerate(BANK_NOTES)}
        return self.banks[program]


def _bank_midi(program: int) -> bytes:
    """A one-track MIDI file: `program` on channel 0, each bank note held BANK_HOLD s, one every BANK_STRIDE s."""
    ticks = 480  # per beat; at the default 120 bpm one second is 960 ticks
    hold, rest = round(BANK_HOLD * 2 * ticks), round((BANK_STRIDE - BANK_HOLD) * 2 * ticks)
    events = _vlq(0) + bytes([0xC0, program])
    for i, note in enumerate(BANK_NOTES):
        events += _vlq(0 if i == 0 else rest) + bytes([0x90, note, 100])
        events += _vlq(hold) + bytes([0x80, note, 0])
    events += _vlq(rest) + b"\xff\x2f\x00"
    return (b"MThd" + struct.pack(">IHHH", 6, 0, 1, ticks) + b"MTrk" + struct.pack(">I", len(events)) + events)


def _vlq(value: int) -> bytes:
    out = [value & 0x7F]
    value >>= 7
    while value:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    return bytes(reversed(out))


def _melody(notes: dict[int, np.ndarray], lowest: int, tempo: tuple[float, float],
            rng: np.random.Generator) -> np.ndarray:
    """Random pentatonic notes above `lowest`, each cut to its length with a short fade, one after another."""
    total = round(DURATION * SAMPLE_RATE)
    track = np.zeros(total, dtype=np.float32)
    rate = rng.uniform(*tempo)
    at = int(rng.uniform(0, 0.2) * SAMPLE_RATE)
    fade = int(0.08 * SAMPLE_RATE)
    while at < total:
        length = int(SAMPLE_RATE / rate * rng.uniform(0.8, 1.25))
        pitch = min(BANK_NOTES[-1], lowest + PENTATONIC[int(rng.integers(len(PENTATONIC)))])
        note = notes[pitch][:length + fade].copy()
        tail = min(fade, len(note))
        note[len(note) - tail:] *= np.linspace(1, 0, tail, dtype=np.float32)
        end = min(total, at + len(note))
        track[at:end] += note[:end - at] * rng.uniform(0.7, 1.0)
        at += length
    return track


def _pick(rng: np.random.Generator, options) -> str:
    names = list(options)
    return names[int(rng.integers(len(names)))]


MATERIAL_SETS: dict[str, MaterialSet] = {
    "spoken-digits": MaterialSet("spoken-digits", tuple(word.capitalize() for word in DIGIT_WORDS),
                                 _spoken_digits_renderer, ("espeak-ng",)),
    "instrument-glyphs": MaterialSet("instrument-glyphs", tuple(f"{letter}{name}" for letter, (name, _)
                                                                 in zip(LETTERS, INSTRUMENTS)),
                                     _instrument_glyphs_renderer, ("fluidsynth",)),
}
