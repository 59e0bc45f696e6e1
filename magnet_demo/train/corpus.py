"""A corpus of procedurally composed, multi-instrument music rendered with FluidSynth.

Every clip is a pure function of ``(corpus seed, clip index)``: its attributes (instruments, drum
groove, tempo, key and mode, register, density, dynamics, room) are drawn from a generator seeded
with both, composed into MIDI notes (a chord progression in the key, a bass line on the roots, a
melody on scale notes, drums in the groove; held in ``pretty_midi`` objects) and rendered with a
General MIDI SoundFont through ``pyfluidsynth``. Each clip also gets several free-text captions
written from its attributes and class labels for the evaluation classifier (:data:`LABELS`).

Storage (other modules depend on it)::

    out_dir/audio.npy     int16 [N, CLIP_SAMPLES], 16 kHz mono, open with np.load(mmap_mode="r")
    out_dir/meta.jsonl    one JSON object per clip, same order: index, seed, split, caption,
                          captions, attributes, labels
    out_dir/corpus.json   sample_rate, clip_seconds, n, seed, soundfont, held_out, labels

CLI::

    python -m magnet_demo.train.corpus --out data/corpus --n 5000 --workers 2 \\
        --soundfont /usr/share/sounds/sf2/FluidR3_GM.sf2
"""

from __future__ import annotations

import argparse
import ctypes
import json
import multiprocessing
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pretty_midi

SAMPLE_RATE = 16_000
CLIP_SECONDS = 10
CLIP_SAMPLES = SAMPLE_RATE * CLIP_SECONDS
HELD_OUT = 0.05

#: class names of the evaluation classifier's heads; a clip's labels index into these tuples
LABELS: dict[str, tuple[str, ...]] = {
    "family": ("piano", "guitar", "strings", "brass", "organ", "synth", "woodwind"),
    "drums": ("no", "yes"),
    "tempo": ("slow", "medium", "fast"),
    "mode": ("major", "minor"),
}
#: tempo bands in bpm (inclusive): slow < 90, medium 90-130, fast > 130
TEMPO_BPM = {"slow": (56, 89), "medium": (90, 130), "fast": (131, 176)}

# --- loudness and rendering -------------------------------------------------------------------
TARGET_RMS = 0.1  # about -20 dBFS
LIMIT_KNEE = 0.6  # samples above this are compressed smoothly towards LIMIT_PEAK
LIMIT_PEAK = 0.97
INT16_SCALE = 32767
SYNTH_GAIN = 0.2
DRUM_CHANNEL = 9
DRUM_BANK = 128
TIMING_JITTER_S = 0.006
VELOCITY_JITTER = 6
STRUM_GAP_S = 0.012
# independent random streams of one clip, so that captions or splits never change the audio
AUDIO_STREAM, CAPTION_STREAM, SPLIT_STREAM = 0, 1, 2

SOUNDFONT_ENV = "MAGNET_DEMO_SOUNDFONT"
SOUNDFONT_CANDIDATES = (
    "/usr/share/sounds/sf2/FluidR3_GM.sf2",
    "/usr/share/soundfonts/FluidR3_GM.sf2",
    "/usr/share/sounds/sf2/TimGM6mb.sf2",
    "/usr/share/soundfonts/TimGM6mb.sf2",
)


# --- instruments --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Voice:
    """A General MIDI instrument: caption name, program number and playable pitch range."""

    name: str
    program: int
    low: int
    high: int


LEADS: dict[str, tuple[Voice, ...]] = {
    "piano": (
        Voice("piano", 0, 55, 86),
        Voice("acoustic piano", 1, 55, 86),
        Voice("electric piano", 4, 55, 84),
        Voice("harpsichord", 6, 55, 84),
    ),
    "guitar": (
        Voice("nylon-string guitar", 24, 52, 79),
        Voice("acoustic guitar", 25, 52, 79),
        Voice("jazz guitar", 26, 50, 77),
        Voice("clean electric guitar", 27, 52, 81),
        Voice("overdriven guitar", 29, 52, 81),
        Voice("distorted guitar", 30, 52, 81),
    ),
    "strings": (
        Voice("violin", 40, 57, 88),
        Voice("viola", 41, 50, 79),
        Voice("cello", 42, 43, 72),
        Voice("string section", 48, 52, 84),
        Voice("pizzicato strings", 45, 50, 81),
    ),
    "brass": (
        Voice("trumpet", 56, 57, 82),
        Voice("trombone", 57, 45, 72),
        Voice("french horn", 60, 48, 74),
        Voice("brass section", 61, 50, 79),
    ),
    "organ": (
        Voice("organ", 16, 52, 84),
        Voice("percussive organ", 17, 52, 84),
        Voice("rock organ", 18, 52, 84),
        Voice("church organ", 19, 48, 84),
    ),
    "synth": (
        Voice("square-wave synth lead", 80, 55, 86),
        Voice("sawtooth synth lead", 81, 55, 86),
        Voice("synth brass", 62, 52, 81),
        Voice("gritty synth lead", 84, 55, 84),
    ),
    "woodwind": (
        Voice("flute", 73, 62, 93),
        Voice("clarinet", 71, 52, 84),
        Voice("oboe", 68, 60, 86),
        Voice("alto saxophone", 65, 52, 80),
        Voice("tenor saxophone", 66, 46, 75),
    ),
}
COMPS = (
    Voice("piano", 0, 48, 72),
    Voice("electric piano", 4, 48, 72),
    Voice("acoustic guitar", 25, 48, 69),
    Voice("clean electric guitar", 27, 48, 69),
    Voice("organ", 16, 48, 72),
    Voice("strings", 48, 48, 76),
    Voice("warm synth pad", 89, 48, 76),
    Voice("choir", 52, 50, 74),
    Voice("harp", 46, 48, 76),
    Voice("vibraphone", 11, 53, 77),
)
BASSES = (
    Voice("upright bass", 32, 28, 52),
    Voice("electric bass", 33, 28, 52),
    Voice("picked bass", 34, 28, 52),
    Voice("fretless bass", 35, 28, 52),
    Voice("slap bass", 36, 28, 52),
    Voice("synth bass", 38, 28, 52),
)
#: accompaniment and bass of chamber groups, by lead family
CHAMBER = {
    "strings": ((Voice("viola", 41, 50, 74), Voice("strings", 48, 50, 76)), (Voice("cello", 42, 36, 60),)),
    "brass": (
        (Voice("french horn", 60, 48, 72), Voice("brass section", 61, 50, 74)),
        (Voice("tuba", 58, 28, 52),),
    ),
    "woodwind": ((Voice("clarinet", 71, 52, 76), Voice("oboe", 68, 58, 80)), (Voice("bassoon", 70, 34, 58),)),
}
CHAMBER_NAMES = {"strings": "string quartet", "brass": "brass quintet", "woodwind": "woodwind trio"}
SOLO_FAMILIES = ("piano", "guitar", "organ")
SUSTAINED_COMPS = (16, 48, 52, 89, 41, 60, 61, 71, 68)  # programs that hold chords rather than strike
GUITAR_PROGRAMS = range(24, 32)

# --- harmony ------------------------------------------------------------------------------------
KEY_NAMES = {
    "major": ("C", "Db", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B"),
    "minor": ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "G#", "A", "Bb", "B"),
}
SCALES = {"major": (0, 2, 4, 5, 7, 9, 11), "minor": (0, 2, 3, 5, 7, 8, 10)}
#: roman numeral -> (root in semitones above the tonic, quality)
CHORDS = {
    "I": (0, "maj"), "ii": (2, "min"), "iii": (4, "min"), "IV": (5, "maj"), "V": (7, "maj"),
    "vi": (9, "min"), "i": (0, "min"), "iv": (5, "min"), "v": (7, "min"), "III": (3, "maj"),
    "VI": (8, "maj"), "VII": (10, "maj"),
}  # fmt: skip
TRIADS = {"maj": (0, 4, 7), "min": (0, 3, 7)}
PROGRESSIONS = {
    "major": (("I", "V", "vi", "IV"), ("I", "IV", "V", "IV"), ("I", "vi", "IV", "V"), ("ii", "V", "I", "I"),
              ("I", "IV", "I", "V"), ("vi", "IV", "I", "V"), ("I", "iii", "IV", "V")),
    "minor": (("i", "VI", "III", "VII"), ("i", "iv", "v", "i"), ("i", "VII", "VI", "VII"),
              ("i", "iv", "VI", "V"), ("i", "VI", "iv", "V"), ("i", "iv", "i", "V")),
}  # fmt: skip

# --- drums --------------------------------------------------------------------------------------
KICK, RIM, SNARE, CLAP, CLOSED_HAT, OPEN_HAT, RIDE, CRASH = 36, 37, 38, 39, 42, 46, 51, 49
LOW_TOM, MID_TOM, HIGH_TOM = 45, 47, 50
#: groove -> drum note -> one bar on a step grid ('x' hit, 'g' ghost note, '.' rest)
GROOVES: dict[str, dict[int, str]] = {
    "rock": {KICK: "x.......x.x.....", SNARE: "....x.......x...", CLOSED_HAT: "x.x.x.x.x.x.x.x."},
    "funk": {KICK: "x..x..x...x..x..", SNARE: "....x..g.g..x..g", CLOSED_HAT: "xxxxxxxxxxxxxxxx"},
    "disco": {KICK: "x...x...x...x...", CLAP: "....x.......x...", CLOSED_HAT: "x...x...x...x...",
              OPEN_HAT: "..x...x...x...x."},
    "half-time": {KICK: "x.........x.....", SNARE: "........x.......", CLOSED_HAT: "x.x.x.x.x.x.x.x."},
    "shuffle": {KICK: "x.....x.....", SNARE: "...x.....x..", RIDE: "x.xx.xx.xx.x"},  # triplet grid
    "waltz": {KICK: "x...........", SNARE: "....x...x...", CLOSED_HAT: "x.x.x.x.x.x."},  # 3/4
    "ballad": {KICK: "x.......x.....x.", RIM: "....x.......x...", CLOSED_HAT: "x...x...x...x..."},
}  # fmt: skip
GROOVE_WORDS = {
    "rock": "rock", "funk": "funk", "disco": "disco", "half-time": "half-time", "shuffle": "shuffle",
    "waltz": "waltz", "ballad": "ballad",
}  # fmt: skip
STYLES = {
    "rock": ("rock song", "rock track"), "funk": ("funk groove", "funk track"), "disco": ("disco track",),
    "half-time": ("half-time groove",), "shuffle": ("shuffle", "blues shuffle"), "waltz": ("waltz",),
    "ballad": ("ballad", "pop ballad"),
}  # fmt: skip
GROOVES_BY_TEMPO = {
    "slow": ("rock", "half-time", "shuffle", "waltz", "ballad"),
    "medium": ("rock", "funk", "disco", "half-time", "shuffle", "waltz", "ballad"),
    "fast": ("rock", "funk", "disco", "shuffle", "waltz"),
}
#: FluidR3 drum kits (bank 128); SoundFonts without a kit fall back to kit 0
KITS = {"standard": 0, "room": 8, "power": 16, "electronic": 24, "808": 25, "jazz": 32, "brush": 40}
KITS_BY_GROOVE = {
    "rock": ("standard", "room", "power"), "funk": ("standard", "room"), "disco": ("standard", "electronic", "808"),
    "half-time": ("standard", "power", "808"), "shuffle": ("jazz", "standard"), "waltz": ("jazz", "brush", "standard"),
    "ballad": ("brush", "jazz", "standard"),
}  # fmt: skip
GHOST_SCALE = 0.45
CRASH_EVERY_BARS = 4

# --- patterns (onsets and durations in beats, within one bar) -----------------------------------
BASS_PATTERNS = {  # (onset, duration, chord degree: R root, 3 third, 5 fifth, 8 octave, A approach)
    "whole": {4: ((0, 4, "R"),), 3: ((0, 3, "R"),)},
    "half": {4: ((0, 2, "R"), (2, 2, "5")), 3: ((0, 2, "R"), (2, 1, "5"))},
    "eighths": {4: tuple((i / 2, 0.45, "R") for i in range(8)), 3: tuple((i / 2, 0.45, "R") for i in range(6))},
    "octaves": {4: tuple((i / 2, 0.4, "R8"[i % 2]) for i in range(8))},
    "funk": {4: ((0, 0.5, "R"), (0.75, 0.2, "8"), (1.5, 0.2, "R"), (2, 0.5, "5"), (2.75, 0.2, "R"),
                 (3.5, 0.4, "8"))},
    "walking": {4: ((0, 0.9, "R"), (1, 0.9, "3"), (2, 0.9, "5"), (3, 0.9, "A")),
                3: ((0, 0.9, "R"), (1, 0.9, "5"), (2, 0.9, "A"))},
    "waltz": {3: ((0, 1, "R"),)},
}  # fmt: skip
BASS_BY_GROOVE = {
    "rock": ("eighths", "half"), "funk": ("funk",), "disco": ("octaves",), "half-time": ("whole", "half"),
    "shuffle": ("walking", "half"), "waltz": ("waltz", "half"), "ballad": ("whole", "half"),
    "none": ("whole", "half", "walking"),
}  # fmt: skip
COMP_PATTERNS = {  # (onset, duration); "arpeggio" plays the chord's notes one after another
    "sustain": {4: ((0, 4),), 3: ((0, 3),)},
    "quarters": {4: tuple((b, 0.9) for b in range(4)), 3: tuple((b, 0.9) for b in range(3))},
    "offbeats": {4: tuple((b + 0.5, 0.4) for b in range(4)), 3: tuple((b + 0.5, 0.4) for b in range(3))},
    "arpeggio": {4: tuple((i / 2, 0.5) for i in range(8)), 3: tuple((i / 2, 0.5) for i in range(6))},
    "strum": {4: ((0, 1), (1, 0.5), (1.5, 1), (2.5, 0.5), (3, 0.5), (3.5, 0.5))},
    "stabs": {4: ((0.5, 0.2), (1.75, 0.2), (2.5, 0.2), (3.25, 0.2))},
    "charleston": {4: ((0, 1.5), (1.5, 2.5))},
    "waltz": {3: ((1, 0.9), (2, 0.9))},
}
COMP_BY_GROOVE = {
    "rock": ("quarters", "strum", "sustain"), "funk": ("stabs", "offbeats"), "disco": ("offbeats", "quarters"),
    "half-time": ("sustain", "arpeggio"), "shuffle": ("quarters", "charleston"), "waltz": ("waltz", "arpeggio"),
    "ballad": ("arpeggio", "sustain"), "none": ("sustain", "arpeggio", "quarters", "charleston", "waltz"),
}  # fmt: skip
#: melody note lengths in beats, and the chance of a rest instead of a note
MELODY_RHYTHMS = {
    "sparse": (2, 1.5, 1, 3),
    "medium": (1, 0.5, 1.5, 0.5, 2),
    "busy": (0.5, 0.25, 0.5, 1, 0.75),
}
REST_CHANCE = 0.12
MELODY_STEPS = (-2, -1, -1, 0, 1, 1, 2, -3, 3, -4, 4)
MELODY_STEP_P = np.array([8, 14, 14, 4, 14, 14, 8, 3, 3, 2, 2], dtype=float) / 86
PHRASE_BARS = 2
DYNAMICS_VELOCITY = {"soft": 55, "medium": 80, "loud": 105}
ROLE_VELOCITY = {"lead": 8, "comp": -14, "bass": 0, "drums": 0}
ROLE_VOLUME = {"lead": 110, "comp": 78, "bass": 96, "drums": 96}  # MIDI CC 7
VOLUME_CC = 7
ROOMS = {"dry": (0.2, 0.4, 0.05), "room": (0.4, 0.9, 0.12), "hall": (1.0, 2.0, 0.2)}  # rt60 s, wet


# --- composition -------------------------------------------------------------------------------
@dataclass
class Part:
    """One instrument of a clip: its role, voice and the notes it plays (seconds)."""

    role: str
    voice: Voice
    is_drum: bool = False
    kit: int = 0
    notes: list[pretty_midi.Note] = field(default_factory=list)


@dataclass
class Clip:
    """A composed clip: its attributes (JSON-able) and its parts."""

    attributes: dict
    parts: list[Part]

    def to_midi(self) -> pretty_midi.PrettyMIDI:
        """The clip as a PrettyMIDI object (for listening and debugging with other tools)."""
        midi = pretty_midi.PrettyMIDI(initial_tempo=float(self.attributes["bpm"]))
        for part in self.parts:
            program = part.kit if part.is_drum else part.voice.program
            instrument = pretty_midi.Instrument(program, is_drum=part.is_drum, name=part.role)
            instrument.notes = list(part.notes)
            midi.instruments.append(instrument)
        return midi


def _choice(rng: np.random.Generator, options):
    return options[int(rng.integers(len(options)))]


def sample_attributes(rng: np.random.Generator) -> dict:
    """Draw everything a clip varies: instrumentation, groove, tempo, key, mode and style."""
    drums = bool(rng.random() < 0.5)
    tempo = _choice(rng, LABELS["tempo"])
    bpm = int(rng.integers(TEMPO_BPM[tempo][0], TEMPO_BPM[tempo][1] + 1))
    mode = _choice(rng, LABELS["mode"])
    tonic = int(rng.integers(12))
    family = _choice(rng, LABELS["family"])
    lead = _choice(rng, LEADS[family])
    if drums:
        groove = _choice(rng, GROOVES_BY_TEMPO[tempo])
        arrangement = "trio" if rng.random() < 0.25 else "band"
    else:
        groove = "none"
        arrangement = _choice(rng, ("solo", "duo", "band", "chamber"))
        if arrangement == "solo" and family not in SOLO_FAMILIES:
            arrangement = "duo"
        if arrangement == "chamber" and family not in CHAMBER:
            arrangement = "band"
    meter = 3 if groove == "waltz" or (groove == "none" and rng.random() < 0.2) else 4

    if arrangement == "solo":
        comp, bass = lead, lead
    elif arrangement == "chamber":
        comps, basses = CHAMBER[family]
        comp = _choice(rng, [v for v in comps if v.program != lead.program] or comps)
        bass = _choice(rng, basses)
    else:
        comp = _choice(rng, [v for v in COMPS if v.program != lead.program])
        bass = _choice(rng, BASSES)
    if arrangement == "trio":
        comp = None
    if arrangement == "duo":
        bass = None

    bass_patterns = [p for p in BASS_BY_GROOVE[groove] if meter in BASS_PATTERNS[p]]
    comp_patterns = [p for p in COMP_BY_GROOVE[groove] if meter in COMP_PATTERNS[p]]
    if comp is not None and comp.program in SUSTAINED_COMPS and rng.random() < 0.6:
        comp_patterns = ["sustain"]
    if comp is not None and comp.program in GUITAR_PROGRAMS and meter == 4 and rng.random() < 0.5:
        comp_patterns = ["strum"]
    progression = _choice(rng, PROGRESSIONS[mode])
    room = _choice(rng, tuple(ROOMS))
    rt60_lo, rt60_hi, wet = ROOMS[room]
    return {
        "bpm": bpm,
        "tempo": tempo,
        "key": KEY_NAMES[mode][tonic],
        "tonic": tonic,
        "mode": mode,
        "meter": meter,
        "drums": drums,
        "groove": groove,
        "kit": _choice(rng, KITS_BY_GROOVE[groove]) if drums else None,
        "swing": groove == "shuffle",
        "arrangement": arrangement,
        "family": family,
        "lead": lead.name,
        "comp": None if comp is None else comp.name,
        "bass": None if bass is None else bass.name,
        "instruments": [v.name for v in dict.fromkeys(v for v in (lead, comp, bass) if v is not None)],
        "programs": {"lead": lead.program, "comp": comp and comp.program, "bass": bass and bass.program},
        "progression": list(progression),
        "chords": [_chord_name(tonic, numeral) for numeral in progression],
        "bars_per_chord": 2 if bpm > TEMPO_BPM["medium"][1] and rng.random() < 0.5 else 1,
        "sevenths": bool(rng.random() < 0.25),
        "bass_pattern": _choice(rng, bass_patterns),
        "comp_pattern": _choice(rng, comp_patterns),
        "density": _choice(rng, tuple(MELODY_RHYTHMS)),
        "dynamics": _choice(rng, tuple(DYNAMICS_VELOCITY)),
        "register": _choice(rng, ("low", "mid", "high")),
        "room": room,
        "rt60": round(float(rng.uniform(rt60_lo, rt60_hi)), 3),
        "reverb_wet": wet,
        "_voices": (lead, comp, bass),  # removed before the attributes are stored
    }


def _chord_name(tonic: int, numeral: str) -> str:
    root, quality = CHORDS[numeral]
    name = KEY_NAMES["minor" if quality == "min" else "major"][(tonic + root) % 12]
    return name + ("m" if quality == "min" else "")


def _chord_pitch_classes(attrs: dict, numeral: str) -> tuple[int, ...]:
    """Pitch classes of a chord, root first (a seventh added when the clip uses sevenths)."""
    root, quality = CHORDS[numeral]
    intervals = TRIADS[quality]
    if attrs["sevenths"]:
        seventh = 10 if quality == "min" or numeral == "V" else 11
        intervals = intervals + (seventh,)
    return tuple((attrs["tonic"] + root + i) % 12 for i in intervals)


def _scale_pitches(attrs: dict, numeral: str, low: int, high: int) -> list[int]:
    """Scale notes in [low, high]; over a major V in minor the leading tone replaces the 7th."""
    degrees = list(SCALES[attrs["mode"]])
    if attrs["mode"] == "minor" and numeral == "V":
        degrees[-1] = 11
    pcs = {(attrs["tonic"] + d) % 12 for d in degrees}
    return [p for p in range(low, high + 1) if p % 12 in pcs]


def _place(pitch_class: int, low: int) -> int:
    """The pitch of ``pitch_class`` in the octave [low, low + 12)."""
    return low + (pitch_class - low) % 12


class _Timeline:
    """Beats -> seconds, with optional swing (off-beat eighths delayed to the last triplet)."""

    def __init__(self, bpm: int, beats_per_bar: int, swing: bool):
        self.beat_s = 60.0 / bpm
        self.beats_per_bar = beats_per_bar
        self.swing = swing

    def seconds(self, bar: int, beat: float) -> float:
        whole, frac = divmod(beat, 1.0)
        if self.swing:  # map [0, 1/2] -> [0, 2/3] and [1/2, 1] -> [2/3, 1]
            frac = frac * 4 / 3 if frac <= 0.5 else 2 / 3 + (frac - 0.5) * 2 / 3
        return (bar * self.beats_per_bar + whole + frac) * self.beat_s


def _add(part: Part, rng: np.random.Generator, pitch: int, start: float, end: float, velocity: float):
    """Append one humanised note if it starts inside the clip."""
    start = max(0.0, start + rng.normal(0.0, TIMING_JITTER_S))
    if start >= CLIP_SECONDS:
        return
    velocity = int(np.clip(velocity + rng.integers(-VELOCITY_JITTER, VELOCITY_JITTER + 1), 1, 127))
    part.notes.append(pretty_midi.Note(velocity, int(pitch), start, max(end, start + 0.05)))


def compose(attrs: dict, rng: np.random.Generator) -> list[Part]:
    """Compose the notes of every part of a clip from its attributes."""
    lead_voice, comp_voice, bass_voice = attrs["_voices"]
    meter, base_velocity = attrs["meter"], DYNAMICS_VELOCITY[attrs["dynamics"]]
    timeline = _Timeline(attrs["bpm"], meter, attrs["swing"])
    n_bars = int(np.ceil(CLIP_SECONDS / (timeline.beat_s * meter))) + 1
    progression, per_chord = attrs["progression"], attrs["bars_per_chord"]
    chord_of_bar = [progression[(bar // per_chord) % len(progression)] for bar in range(n_bars + 1)]
    parts = [Part("lead", lead_voice)]
    parts[0].notes = _melody(attrs, rng, lead_voice, chord_of_bar, n_bars, timeline, base_velocity)
    if comp_voice is not None:
        parts.append(Part("comp", comp_voice))
        _comp(attrs, rng, parts[-1], chord_of_bar, n_bars, timeline, base_velocity)
    if bass_voice is not None:
        parts.append(Part("bass", bass_voice))
        _bass(attrs, rng, parts[-1], chord_of_bar, n_bars, timeline, base_velocity)
    if attrs["drums"]:
        parts.append(Part("drums", Voice("drums", 0, 0, 127), is_drum=True, kit=KITS[attrs["kit"]]))
        _drums(attrs, rng, parts[-1], n_bars, timeline, base_velocity)
    for part in parts:
        _untangle(part)
    return parts


def _melody(
    attrs, rng, voice: Voice, chord_of_bar, n_bars, timeline, base_velocity
) -> list[pretty_midi.Note]:
    """A melody on scale notes: two-bar phrases A A B A, whose rhythm and contour repeat."""
    span = voice.high - voice.low
    third = span // 3
    low = voice.low + {"low": 0, "mid": third // 2, "high": third}[attrs["register"]]
    high = min(voice.high, low + 2 * third + 4)
    phrase_beats = PHRASE_BARS * timeline.beats_per_bar
    motifs = {name: _phrase_rhythm(rng, attrs["density"], phrase_beats) for name in "AB"}
    contours = {name: rng.choice(MELODY_STEPS, size=len(motifs[name]), p=MELODY_STEP_P) for name in "AB"}
    part = Part("lead", voice)
    pitch = None
    velocity = base_velocity + ROLE_VELOCITY["lead"]
    for phrase in range(int(np.ceil(n_bars / PHRASE_BARS))):
        name = "AABA"[phrase % 4]
        for (onset, duration, rest), step in zip(motifs[name], contours[name], strict=True):
            bar = phrase * PHRASE_BARS + int(onset // timeline.beats_per_bar)
            beat = onset % timeline.beats_per_bar
            numeral = chord_of_bar[bar]
            scale = _scale_pitches(attrs, numeral, low, high)
            if pitch is None:
                pitch = scale[len(scale) // 2]
            index = int(np.argmin([abs(p - pitch) for p in scale])) + int(step)
            if index < 0 or index >= len(scale):  # bounce off the edges of the range
                index = -index if index < 0 else 2 * (len(scale) - 1) - index
                index = int(np.clip(index, 0, len(scale) - 1))
            pitch = scale[index]
            if beat in (0, timeline.beats_per_bar // 2):  # strong beats land on chord tones
                tones = [p for p in scale if p % 12 in _chord_pitch_classes(attrs, numeral)]
                pitch = min(tones, key=lambda p, q=pitch: (abs(p - q), p))
            if rest:
                continue
            start = timeline.seconds(bar, beat)
            accent = 6 if beat == 0 else 0
            _add(part, rng, pitch, start, start + duration * timeline.beat_s * 0.95, velocity + accent)
    return part.notes


def _phrase_rhythm(rng, density: str, phrase_beats: int) -> list[tuple[float, float, bool]]:
    """(onset beat, duration in beats, is rest) filling one phrase, the last note held to its end."""
    notes, cursor = [], 0.0
    while cursor < phrase_beats:
        duration = min(float(_choice(rng, MELODY_RHYTHMS[density])), phrase_beats - cursor)
        rest = bool(cursor > 0 and rng.random() < REST_CHANCE)
        notes.append((cursor, duration, rest))
        cursor += duration
    onset, _, _ = notes[-1]
    notes[-1] = (onset, phrase_beats - onset, False)
    return notes


def _comp(attrs, rng, part: Part, chord_of_bar, n_bars, timeline, base_velocity):
    """Chords in the clip's comping pattern, voiced close together above the comp's low range."""
    voice = part.voice
    bottom = max(voice.low, 50) if attrs["arrangement"] != "solo" else 48
    pattern = COMP_PATTERNS[attrs["comp_pattern"]][attrs["meter"]]
    strum = attrs["comp_pattern"] == "strum"
    velocity = base_velocity + ROLE_VELOCITY["comp"]
    for bar in range(n_bars):
        chord = sorted(_place(pc, bottom) for pc in _chord_pitch_classes(attrs, chord_of_bar[bar]))
        for i, (onset, duration) in enumerate(pattern):
            start = timeline.seconds(bar, onset)
            end = start + duration * timeline.beat_s * 0.95
            if attrs["comp_pattern"] == "arpeggio":
                cycle = chord + [chord[1] + 12] if len(chord) == 3 else chord
                _add(part, rng, cycle[i % len(cycle)], start, end, velocity)
                continue
            for k, pitch in enumerate(chord):
                _add(part, rng, pitch, start + (k * STRUM_GAP_S if strum else 0.0), end, velocity)


def _bass(attrs, rng, part: Part, chord_of_bar, n_bars, timeline, base_velocity):
    """A bass line on the chord roots (with fifths, octaves or a walking approach note)."""
    pattern = BASS_PATTERNS[attrs["bass_pattern"]][attrs["meter"]]
    low = part.voice.low + (4 if attrs["arrangement"] != "solo" else 8)
    velocity = base_velocity + ROLE_VELOCITY["bass"]
    for bar in range(n_bars):
        pcs = _chord_pitch_classes(attrs, chord_of_bar[bar])
        root = _place(pcs[0], low)
        next_root = _place(_chord_pitch_classes(attrs, chord_of_bar[bar + 1])[0], low)
        offsets = {"R": root, "3": root + (pcs[1] - pcs[0]) % 12, "5": root + 7, "8": root + 12,
                   "A": next_root - 1 if next_root > root else next_root + 1}  # fmt: skip
        for onset, duration, degree in pattern:
            start = timeline.seconds(bar, onset)
            _add(part, rng, offsets[degree], start, start + duration * timeline.beat_s * 0.95, velocity)


def _drums(attrs, rng, part: Part, n_bars, timeline, base_velocity):
    """The groove's one-bar pattern, with crashes every four bars and an occasional tom fill."""
    lanes = GROOVES[attrs["groove"]]
    steps = len(next(iter(lanes.values())))
    step_beats = timeline.beats_per_bar / steps
    no_swing = _Timeline(attrs["bpm"], timeline.beats_per_bar, swing=False)
    fill_every = CRASH_EVERY_BARS if rng.random() < 0.5 else 0
    for bar in range(n_bars):
        fill = fill_every and bar % fill_every == fill_every - 1
        if bar % CRASH_EVERY_BARS == 0 and (bar > 0 or rng.random() < 0.5):
            _add(part, rng, CRASH, no_swing.seconds(bar, 0), no_swing.seconds(bar, 1), base_velocity + 10)
        for note, lane in lanes.items():
            for step, hit in enumerate(lane):
                beat = step * step_beats
                if hit == "." or (fill and beat >= timeline.beats_per_bar - 1):
                    continue
                velocity = base_velocity * (GHOST_SCALE if hit == "g" else 1.0) + (8 if step == 0 else 0)
                start = no_swing.seconds(bar, beat)
                _add(part, rng, note, start, start + 0.1, velocity)
        if fill:
            for k, tom in enumerate((HIGH_TOM, HIGH_TOM, MID_TOM, LOW_TOM)):
                start = no_swing.seconds(bar, timeline.beats_per_bar - 1 + k / 4)
                _add(part, rng, tom, start, start + 0.1, base_velocity)


def _untangle(part: Part):
    """Sort notes and end each before the next onset of the same pitch (one channel per part)."""
    part.notes.sort(key=lambda n: (n.start, n.pitch))
    next_start: dict[int, float] = {}
    for note in reversed(part.notes):
        if note.pitch in next_start:
            note.end = max(note.start + 0.01, min(note.end, next_start[note.pitch] - 0.005))
        next_start[note.pitch] = note.start


# --- captions and labels -------------------------------------------------------------------------
TEMPO_WORDS = {
    "slow": ("slow", "unhurried", "laid-back", "relaxed", "slow-paced"),
    "medium": ("mid-tempo", "moderate", "steady", "medium-tempo"),
    "fast": ("fast", "upbeat", "lively", "quick", "driving", "up-tempo"),
}
MODE_WORDS = {
    "major": ("happy", "bright", "cheerful", "uplifting", "joyful", "sunny"),
    "minor": ("sad", "dark", "melancholic", "moody", "somber", "gloomy"),
}
DYNAMICS_WORDS = {
    "soft": ("soft", "gentle", "quiet"),
    "medium": ("",),
    "loud": ("loud", "punchy", "powerful"),
}
NO_DRUMS = ("no drums", "without drums", "without percussion", "drumless")
NOUNS = ("tune", "piece", "track", "instrumental", "song")


def clip_labels(attributes: dict) -> dict[str, int]:
    """Class index of each :data:`LABELS` head for a clip's attributes."""
    return {
        "family": LABELS["family"].index(attributes["family"]),
        "drums": int(bool(attributes["drums"])),
        "tempo": LABELS["tempo"].index(tempo_band(attributes["bpm"])),
        "mode": LABELS["mode"].index(attributes["mode"]),
    }


def tempo_band(bpm: float) -> str:
    """'slow' below 90 bpm, 'fast' above 130, else 'medium'."""
    if bpm < TEMPO_BPM["medium"][0]:
        return "slow"
    return "fast" if bpm > TEMPO_BPM["medium"][1] else "medium"


def _join(names: list[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def make_captions(attrs: dict, rng: np.random.Generator) -> list[str]:
    """Several captions of a clip, the first mentioning tempo, mode, instruments and drums."""
    tempo = _choice(rng, TEMPO_WORDS[attrs["tempo"]])
    mood = _choice(rng, MODE_WORDS[attrs["mode"]])
    bpm = f"{attrs['bpm']} bpm"
    key = f"{attrs['key']} {attrs['mode']}"
    dyn = _choice(rng, DYNAMICS_WORDS[attrs["dynamics"]])
    lead, drums = attrs["lead"], attrs["drums"]
    others = [name for name in attrs["instruments"][1:]]
    if attrs["arrangement"] == "solo":
        ensemble = f"solo {lead}"
    elif attrs["arrangement"] == "chamber":
        ensemble = f"{CHAMBER_NAMES[attrs['family']]} led by {lead}"
    else:
        ensemble = _join([lead, *others, *(["drums"] if drums else [])])
    if drums:
        style = _choice(rng, STYLES[attrs["groove"]])
    else:
        style = "waltz" if attrs["meter"] == 3 else _choice(rng, NOUNS)
    no_drums = _choice(rng, NO_DRUMS)
    drum_phrase = f"with a {GROOVE_WORDS[attrs['groove']]} drum beat" if drums else no_drums
    adjectives = ", ".join(w for w in (dyn, tempo, mood) if w)
    captions = [
        f"{_article(adjectives)} {adjectives} {style} with {ensemble}" + ("" if drums else f", {no_drums}"),
        f"{tempo} {style} with {_join([lead, *others])} at {bpm}, {mood}, {drum_phrase}",
        f"{attrs['mode']}-key {ensemble}, {tempo}" + ("" if drums else f", {no_drums}"),
        f"{lead} melody in {key}, {bpm}, {drum_phrase}",
        f"{mood} {lead} {style}" + (" with drums" if drums else ""),
    ]
    if not drums and attrs["arrangement"] == "solo":
        captions.append(f"{tempo}, {mood} solo {lead} {'ballad' if attrs['tempo'] == 'slow' else 'piece'}")
    if rng.random() < 0.3:
        captions.append(f"{_join([lead, *others])} playing {'-'.join(attrs['chords'])} in {key} at {bpm}")
    first, rest = captions[0], captions[1:]
    order = rng.permutation(len(rest))
    return [first] + [rest[i] for i in order]


def _article(phrase: str) -> str:
    return "an" if phrase[0] in "aeiou" else "a"


# --- rendering ----------------------------------------------------------------------------------
def default_soundfont(small: bool = False) -> Path:
    """$MAGNET_DEMO_SOUNDFONT, else FluidR3_GM, else TimGM6mb (Debian's or pretty_midi's copy).

    small: only TimGM6mb (5.7 MB, fast to load: for tests and quick runs).
    """
    candidates = [os.environ.get(SOUNDFONT_ENV, ""), *SOUNDFONT_CANDIDATES]
    candidates.append(str(Path(pretty_midi.__file__).parent / "TimGM6mb.sf2"))
    if small:
        candidates = [c for c in candidates if Path(c).name == "TimGM6mb.sf2"]
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    raise FileNotFoundError(
        "no General MIDI SoundFont found; install one (apt-get install fluid-soundfont-gm "
        f"timgm6mb-soundfont) or set {SOUNDFONT_ENV}. Looked in: {', '.join(c for c in candidates if c)}"
    )


class Renderer:
    """Renders parts to float audio with FluidSynth, a fresh synthesizer for every clip.

    A reused synthesizer is not a pure function of its input: voice slots keep a little state
    from earlier notes (measured: differences up to 1e-2 at note onsets after another clip, even
    after all-sounds-off and a system reset). A fresh synthesizer with dynamic sample loading costs
    ~30 ms (it reads only the presets a clip uses; the file stays in the page cache), against
    ~0.2 s for loading FluidR3 completely. Reverb and chorus are off inside FluidSynth: the room is
    added afterwards by :func:`add_room`.
    """

    def __init__(self, soundfont: str | Path, sample_rate: int = SAMPLE_RATE):
        import fluidsynth  # needs libfluidsynth; imported here so the rest of the module works without

        self._fluidsynth = fluidsynth
        self.soundfont = str(soundfont)
        self.sample_rate = sample_rate
        self._write_float = fluidsynth.cfunc(
            "fluid_synth_write_float", ctypes.c_int, ("synth", ctypes.c_void_p, 1), ("len", ctypes.c_int, 1),
            ("lout", ctypes.c_void_p, 1), ("loff", ctypes.c_int, 1), ("lincr", ctypes.c_int, 1),
            ("rout", ctypes.c_void_p, 1), ("roff", ctypes.c_int, 1), ("rincr", ctypes.c_int, 1),
        )  # fmt: skip
        self._new_synth()[0].delete()  # fail early on a SoundFont that does not load

    def _new_synth(self):
        settings = {"synth.reverb.active": 0, "synth.chorus.active": 0, "synth.dynamic-sample-loading": 1}
        synth = self._fluidsynth.Synth(gain=SYNTH_GAIN, samplerate=float(self.sample_rate), **settings)
        sfid = synth.sfload(self.soundfont)
        if sfid < 0:
            synth.delete()
            raise RuntimeError(f"FluidSynth could not load the SoundFont {self.soundfont}")
        return synth, sfid

    def render(self, parts: list[Part], n_samples: int = CLIP_SAMPLES) -> np.ndarray:
        """Mono float32 [n_samples] of all parts, one MIDI channel each."""
        synth, sfid = self._new_synth()
        try:
            events = []  # (sample, is_on, channel, pitch, velocity): note-offs sort before note-ons
            channels = [c for c in range(16) if c != DRUM_CHANNEL]
            for i, part in enumerate(parts):
                channel = DRUM_CHANNEL if part.is_drum else channels[i]
                if part.is_drum:
                    if synth.program_select(channel, sfid, DRUM_BANK, part.kit) < 0:
                        synth.program_select(channel, sfid, DRUM_BANK, 0)
                else:
                    synth.program_select(channel, sfid, 0, part.voice.program)
                synth.cc(channel, VOLUME_CC, ROLE_VOLUME[part.role])
                for note in part.notes:
                    events.append(
                        (round(note.start * self.sample_rate), 1, channel, note.pitch, note.velocity)
                    )
                    events.append((round(note.end * self.sample_rate), 0, channel, note.pitch, 0))
            events.sort()
            out = np.zeros((n_samples, 2), np.float32)
            cursor = 0
            for sample, is_on, channel, pitch, velocity in events:
                if sample >= n_samples:
                    break
                self._render_into(synth, out, cursor, sample)
                cursor = max(cursor, sample)
                if is_on:
                    synth.noteon(channel, pitch, velocity)
                else:
                    synth.noteoff(channel, pitch)
            self._render_into(synth, out, cursor, n_samples)
        finally:
            synth.delete()
        return out.mean(axis=1)

    def _render_into(self, synth, out: np.ndarray, start: int, stop: int):
        """Render samples [start, stop) into ``out`` (float32 [n, 2], C-contiguous)."""
        if stop > start:
            pointer = out.ctypes.data + start * out.strides[0]
            self._write_float(synth.synth, stop - start, pointer, 0, 2, pointer, 1, 2)


def add_room(audio: np.ndarray, rng: np.random.Generator, rt60: float, wet: float) -> np.ndarray:
    """Mix in a synthetic room: exponentially decaying, darkened noise as impulse response.

    audio: float [T] -> float [T] (the tail past T is cut).
    """
    length = int(min(rt60, 1.5) * SAMPLE_RATE)
    t = np.arange(length) / SAMPLE_RATE
    noise = rng.standard_normal(length)
    noise = np.convolve(noise, np.ones(4) / 4, mode="same")  # a gentle low-pass
    response = noise * np.exp(-6.9 * t / rt60)  # -60 dB after rt60 seconds
    response /= np.sqrt(np.sum(response**2))
    from scipy.signal import fftconvolve  # imported here: scipy.signal takes a second to import

    return audio + wet * fftconvolve(audio, response)[: len(audio)]


def normalise(audio: np.ndarray) -> np.ndarray:
    """Scale to TARGET_RMS, then limit peaks smoothly above LIMIT_KNEE towards LIMIT_PEAK.

    audio: float [T] -> int16 [T].
    """
    rms = float(np.sqrt(np.mean(audio**2)))
    audio = audio * (TARGET_RMS / rms) if rms > 0 else audio
    magnitude = np.abs(audio)
    over = magnitude > LIMIT_KNEE
    headroom = LIMIT_PEAK - LIMIT_KNEE
    magnitude[over] = LIMIT_KNEE + headroom * np.tanh((magnitude[over] - LIMIT_KNEE) / headroom)
    return np.round(np.sign(audio) * magnitude * INT16_SCALE).astype(np.int16)


def clip_split(seed: int, index: int, held_out: float = HELD_OUT) -> str:
    """'test' for about ``held_out`` of the clips, decided by (seed, index) alone."""
    return "test" if np.random.default_rng([seed, index, SPLIT_STREAM]).random() < held_out else "train"


def compose_clip(seed: int, index: int) -> Clip:
    """Attributes and notes of clip ``index`` of the corpus with ``seed`` (no rendering)."""
    rng = np.random.default_rng([seed, index, AUDIO_STREAM])
    attrs = sample_attributes(rng)
    parts = compose(attrs, rng)
    return Clip(attrs, parts)


def render_clip(
    renderer: Renderer, seed: int, index: int, held_out: float = HELD_OUT
) -> tuple[np.ndarray, dict]:
    """Clip ``index`` of corpus ``seed``: int16 audio [CLIP_SAMPLES] and its metadata record."""
    clip = compose_clip(seed, index)
    attrs = {k: v for k, v in clip.attributes.items() if not k.startswith("_")}
    room_rng = np.random.default_rng([seed, index, AUDIO_STREAM, 1])
    audio = renderer.render(clip.parts).astype(np.float64)
    audio = add_room(audio, room_rng, attrs["rt60"], attrs["reverb_wet"])
    captions = make_captions(attrs, np.random.default_rng([seed, index, CAPTION_STREAM]))
    meta = {
        "index": index,
        "seed": seed,
        "split": clip_split(seed, index, held_out),
        "caption": captions[0],
        "captions": captions,
        "attributes": attrs,
        "labels": clip_labels(attrs),
    }
    return normalise(audio), meta


# --- building and loading -----------------------------------------------------------------------
_WORKER: dict = {}


def _init_worker(soundfont: str):
    _WORKER["renderer"] = Renderer(soundfont)


def _render_task(task: tuple[int, int, float]) -> tuple[int, np.ndarray, dict]:
    seed, index, held_out = task
    audio, meta = render_clip(_WORKER["renderer"], seed, index, held_out)
    return index, audio, meta


def build_corpus(
    out_dir: str | Path,
    n_clips: int,
    seed: int = 0,
    soundfont: str | Path | None = None,
    workers: int = 2,
    held_out: float = HELD_OUT,
    overwrite: bool = False,
    log_every: int = 500,
) -> Path:
    """Render ``n_clips`` clips into ``out_dir`` (written to a ``.partial`` folder, then renamed)."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not overwrite:
        raise FileExistsError(f"{out_dir} exists; pass overwrite=True (--overwrite) to replace it")
    soundfont = Path(soundfont) if soundfont else default_soundfont()
    partial = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    audio = np.lib.format.open_memmap(partial / "audio.npy", "w+", np.int16, (n_clips, CLIP_SAMPLES))
    tasks = [(seed, i, held_out) for i in range(n_clips)]
    t0 = time.perf_counter()
    with open(partial / "meta.jsonl", "w") as meta_file:
        if workers <= 1:
            _init_worker(str(soundfont))
            results = map(_render_task, tasks)
            pool = None
        else:
            pool = multiprocessing.get_context("spawn").Pool(workers, _init_worker, (str(soundfont),))
            results = pool.imap(_render_task, tasks, chunksize=8)
        try:
            for done, (index, clip_audio, meta) in enumerate(results, start=1):
                audio[index] = clip_audio
                meta_file.write(json.dumps(meta) + "\n")
                if log_every and done % log_every == 0:
                    rate = done / (time.perf_counter() - t0)
                    print(f"rendered {done}/{n_clips} clips ({rate:.1f} clips/s)", flush=True)
        finally:
            if pool is not None:
                pool.close()
                pool.join()
    audio.flush()
    del audio
    info = {
        "sample_rate": SAMPLE_RATE,
        "clip_seconds": CLIP_SECONDS,
        "n": n_clips,
        "seed": seed,
        "soundfont": str(soundfont),
        "held_out": held_out,
        "labels": {k: list(v) for k, v in LABELS.items()},
        "render_seconds": round(time.perf_counter() - t0, 1),
    }
    (partial / "corpus.json").write_text(json.dumps(info, indent=2) + "\n")
    if out_dir.exists():
        shutil.rmtree(out_dir)
    partial.rename(out_dir)
    return out_dir


def load_corpus(corpus_dir: str | Path) -> tuple[np.ndarray, list[dict]]:
    """(int16 memmap [N, CLIP_SAMPLES], N metadata dicts in the same order)."""
    corpus_dir = Path(corpus_dir)
    audio = np.load(corpus_dir / "audio.npy", mmap_mode="r")
    with open(corpus_dir / "meta.jsonl") as f:
        meta = [json.loads(line) for line in f if line.strip()]
    if len(meta) != len(audio):
        raise ValueError(f"{corpus_dir}: {len(audio)} clips of audio but {len(meta)} metadata records")
    return audio, meta


def main(argv: list[str] | None = None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("data/corpus"))
    parser.add_argument("--n", type=int, default=5000, help="number of clips")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--soundfont", type=Path, default=None, help="General MIDI .sf2 (default: found)")
    parser.add_argument("--held-out", type=float, default=HELD_OUT)
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    out = build_corpus(
        args.out, args.n, args.seed, args.soundfont, args.workers, args.held_out, args.overwrite
    )
    seconds = time.perf_counter() - t0
    size_mb = sum(f.stat().st_size for f in out.iterdir()) / 2**20
    print(
        f"wrote {args.n} clips to {out} in {seconds:.1f} s ({args.n / seconds:.1f} clips/s, {size_mb:.0f} MiB)"
    )


if __name__ == "__main__":
    main()
