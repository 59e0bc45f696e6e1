"""Retrain everything the embedded model needs, from scratch, on CPU, with one command.

Commands::

    python -m magnet_demo.train.all --out assets/embedded            # the full run (see FULL_MINUTES)
    python -m magnet_demo.train.all --out assets/embedded --resume   # continue interrupted trainings
    python -m magnet_demo.train.all --quick --out /tmp/micro/model   # micro version, about a minute

Steps, in order; each is skipped when its output exists, unless ``--force``:

1. corpus      ``build_corpus``                    -> DATA/corpus/ (audio.npy, meta.jsonl, corpus.json)
2. codec       ``train_codec``                     -> OUT/compression_state_dict.bin
3. decoder     ``train_codec --decoder-only``      -> OUT/compression_state_dict.bin again, with
               learned phase frequencies; encoder and codebooks frozen, so the tokens do not change;
               in legs (FURTHER_LEGS; done when the last leg's RUNS/decoder_5/metrics.json exists)
4. tokens      ``train_codec encode``              -> DATA/tokens.npy
5. magnet      ``train_magnet``                    -> OUT/state_dict.bin; in legs (FURTHER_LEGS; done
               when the last leg's RUNS/magnet_2/metrics.json exists)
6. rescorer    ``train_rescorer``                  -> OUT/rescorer/ (state_dict.bin + codec copy)
7. classifier  ``train_classifier``                -> OUT/../classifier.pt (beside the model folder)

``--resume`` is passed to the four trainers (codec, decoder, magnet, rescorer) and makes them run even
when their output exists: each continues its run folder (RUNS/<name>/last.pt, one per leg) up to
its budget, or just re-exports when the budget is spent. ``--quick`` trains a micro version of everything (a few
clips rendered with the small TimGM6mb SoundFont, tiny models, seconds of training per step) into
OUT, with its data and runs beside it (OUT/../quick_data, OUT/../quick_runs). ``--device`` picks
where the codec, its decoder, MAGNeT and the rescorer train (``auto``: the GPU when torch sees one,
so the same command uses it; the budgets stay minutes of wall time, so a GPU run takes many more
steps); the corpus, the tokens and the classifier stay on the CPU. The shipped model was trained on
CPU (``--device cpu`` reproduces it on a GPU machine).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from magnet_demo.checkpoints import COMPRESSION_FILE, LM_FILE

log = logging.getLogger("train_all")

#: training budgets of the full run, in minutes of wall time (time in optimiser steps; the trainers'
#: evaluations add a few %): those of the shipped model, trained on 2 idle AMD EPYC (Zen 5) cores
#: with bfloat16 autocast (codec 11.7 steps/s, MAGNeT 4.0 steps/s). Not budgeted: the corpus
#: (~3 min on 2 idle cores) and the tokens (~1 min). With the FURTHER_LEGS (decoder 132 min more,
#: MAGNeT 80 min more) about 6 hours in all. The trainers run alone:
#: a second job on the same 2 cores slowed the MAGNeT training ~8x (its threads wait for each other).
FULL_MINUTES = {"codec": 40.0, "decoder": 8.0, "magnet": 66.0, "rescorer": 14.0, "classifier": 6.0}
#: the codec's training: bfloat16 autocast where the CPU multiplies bfloat16 in hardware, and the
#: decoder head's own log-magnitude loss
CODEC_ARGS = ["--precision", "auto", "--loss-weight", "mag=1"]
#: the decoder-only step: the head's px channel becomes each bin's instantaneous frequency,
#: fitted to the true phase advance, at half the codec's learning rate
DECODER_ARGS = ["--decoder-only", "--codec-arg", "phase=frequency", "--lr", "5e-4"]
#: further legs of a trainer step in the full run, after its first training (FULL_MINUTES):
#: (minutes, trainer arguments). Each starts from the weights the step has exported so far
#: (``--init``) with a fresh learning-rate schedule, in its own run folder (RUNS/<step>_2, ...):
#: how the shipped decoder was continued once its first training was evaluated. Its legs ran
#: beside another job with one thread each (8.6, 8.0, 5.8 and 5.8 steps/s: 12,963, 19,237, 11,046
#: and 12,069 steps), so a run alone on 2 threads makes more steps. The last two add the ``fine``
#: log-mel term (4096-point STFT), which lifted the reconstructions from 0.88 to 0.90 of real.
#: The MAGNeT's leg (80 min more at 7e-4, decay over the last 30%, one thread beside another job:
#: 8,474 steps at 1.7 steps/s) draws its mask rates biased to the first decoding steps
#: (``--rate-power 2``): generated clips 0.486 -> 0.520 mean accuracy (a gap the size of the
#: score's seed noise). The same leg with the paper's rates lowered the held-out cross-entropy
#: but not that accuracy (docs/embedded_model.md).
FURTHER_LEGS: dict[str, tuple[tuple[float, list[str]], ...]] = {
    "decoder": (
        (25.0, ["--lr", "3e-4"]),
        (40.0, ["--lr", "2e-4"]),
        (32.0, ["--lr", "2e-4", "--loss-weight", "fine=1"]),
        (35.0, ["--lr", "2e-4", "--loss-weight", "fine=3"]),
    ),
    "magnet": ((80.0, ["--lr", "7e-4", "--decay", "0.3", "--rate-power", "2"]),),
}
FULL_CLIPS = 5000
#: the micro run: clips, share held out, seconds of training per trained step
QUICK_CLIPS = 10
QUICK_HELD_OUT = 0.25
QUICK_SECONDS = 8.0
QUICK_SOUNDFONT = "TimGM6mb.sf2"
STEPS = ("corpus", "codec", "decoder", "tokens", "magnet", "rescorer", "classifier")
RESUMABLE = ("codec", "decoder", "magnet", "rescorer")


def quick_soundfont() -> Path | None:
    """The small TimGM6mb SoundFont (Debian's or pretty_midi's copy), None if neither is there."""
    import pretty_midi

    for folder in ("/usr/share/sounds/sf2", "/usr/share/soundfonts", Path(pretty_midi.__file__).parent):
        path = Path(folder) / QUICK_SOUNDFONT
        if path.is_file():
            return path
    return None


class Pipeline:
    """The seven steps, with their paths and budgets, for a full or a quick run."""

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.out = Path(args.out)
        quick = args.quick
        self.data = Path(args.data or (self.out.parent / "quick_data" if quick else "data"))
        self.runs = Path(args.runs or (self.out.parent / "quick_runs" if quick else "runs"))
        self.corpus = self.data / "corpus"
        self.tokens = self.data / "tokens.npy"
        self.rescorer = self.out / "rescorer"
        self.classifier = Path(args.classifier or self.out.parent / "classifier.pt")
        seconds = args.quick_seconds / 60
        self.minutes = {k: seconds for k in FULL_MINUTES} if quick else dict(FULL_MINUTES)
        self.threads = ["--threads", str(args.threads)]

    def outputs(self) -> dict[str, Path]:
        return {
            "corpus": self.corpus / "meta.jsonl",
            "codec": self.out / COMPRESSION_FILE,
            "decoder": self.runs / self.legs("decoder")[-1][0] / "metrics.json",
            "tokens": self.tokens,
            "magnet": self.runs / self.legs("magnet")[-1][0] / "metrics.json",
            "rescorer": self.rescorer / LM_FILE,
            "classifier": self.classifier,
        }

    def legs(self, name: str) -> list[tuple[str, float, list[str]]]:
        """(run folder name, minutes, extra trainer arguments) of each leg of a trainer step: its
        first training, then in the full run its :data:`FURTHER_LEGS`."""
        legs = [(name, self.minutes[name], [])]
        if not self.args.quick:
            further = FURTHER_LEGS.get(name, ())
            legs += [(f"{name}_{i}", minutes, extra) for i, (minutes, extra) in enumerate(further, start=2)]
        return legs

    def _trainer_args(self, run: str, minutes: float) -> list[str]:
        """The options every trainer (codec, decoder, MAGNeT, rescorer) takes from the run."""
        extra = ["--quick"] if self.args.quick else []
        extra += ["--resume"] if self.args.resume else []
        return extra + [
            "--minutes",
            str(minutes),
            "--run-dir",
            str(self.runs / run),
            *self.threads,
            "--device",
            self.args.device,
        ]

    # ---------------------------------------------------------------- the steps
    def corpus_step(self):
        from magnet_demo.train.corpus import HELD_OUT, build_corpus

        if self.args.quick:
            build_corpus(
                self.corpus,
                QUICK_CLIPS,
                soundfont=quick_soundfont(),
                workers=1,
                held_out=QUICK_HELD_OUT,
                overwrite=True,
            )
        else:
            build_corpus(
                self.corpus, self.args.clips, workers=self.args.threads, held_out=HELD_OUT, overwrite=True
            )

    def codec_step(self):
        from magnet_demo.train import train_codec

        argv = ["--corpus", str(self.corpus), "--out", str(self.out), *CODEC_ARGS]
        train_codec.main(argv + self._trainer_args("codec", self.minutes["codec"]))

    def decoder_step(self):
        from magnet_demo.train import train_codec

        argv = ["--corpus", str(self.corpus), "--out", str(self.out), "--init", str(self.out)]
        for run, minutes, extra in self.legs("decoder"):  # each leg starts from the last export
            train_codec.main(argv + CODEC_ARGS + DECODER_ARGS + extra + self._trainer_args(run, minutes))

    def tokens_step(self):
        from magnet_demo.train import train_codec

        argv = ["encode", "--corpus", str(self.corpus), "--codec", str(self.out), "--out", str(self.tokens)]
        train_codec.main(argv + self.threads)

    def _lm_args(self, run: str, minutes: float, out: Path) -> list[str]:
        data = ["--tokens", str(self.tokens), "--corpus", str(self.corpus), "--codec", str(self.out)]
        return data + ["--out", str(out), *self._trainer_args(run, minutes)]

    def magnet_step(self):
        from magnet_demo.train import train_magnet

        for i, (run, minutes, extra) in enumerate(self.legs("magnet")):
            init = ["--init", str(self.out)] if i else []  # later legs start from the last export
            train_magnet.main(self._lm_args(run, minutes, self.out) + init + extra)

    def rescorer_step(self):
        from magnet_demo.train import train_rescorer

        train_rescorer.main(self._lm_args("rescorer", self.minutes["rescorer"], self.rescorer))

    def classifier_step(self):
        from magnet_demo.train.classifier import train_classifier

        train_classifier(self.corpus, self.classifier, self.minutes["classifier"], threads=self.args.threads)

    # ---------------------------------------------------------------- running
    def run(self, only: list[str] | None = None) -> dict[str, float]:
        """Run the steps (or ``only`` those); returns seconds per step run."""
        outputs, seconds = self.outputs(), {}
        for name in STEPS:
            if only and name not in only:
                continue
            done = outputs[name].exists()
            if done and not self.args.force and not (self.args.resume and name in RESUMABLE):
                log.info("[%s] skipped: %s exists (--force to redo)", name, outputs[name])
                continue
            log.info("[%s] -> %s", name, outputs[name])
            t0 = time.monotonic()
            getattr(self, f"{name}_step")()
            seconds[name] = round(time.monotonic() - t0, 1)
            log.info("[%s] done in %.1f s", name, seconds[name])
        return seconds


def main(argv: list[str] | None = None) -> dict[str, float]:
    from magnet_demo.train.device import add_device_argument

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="assets/embedded", help="model folder (codec, MAGNeT, rescorer/)")
    p.add_argument("--data", default=None, help="corpus and tokens folder (default data/)")
    p.add_argument("--runs", default=None, help="training run folders (default runs/)")
    p.add_argument("--classifier", default=None, help="classifier file (default OUT/../classifier.pt)")
    p.add_argument("--clips", type=int, default=FULL_CLIPS, help="corpus size of the full run")
    p.add_argument("--only", default=None, help=f"comma-separated subset of {','.join(STEPS)}")
    p.add_argument("--force", action="store_true", help="redo steps whose output exists")
    p.add_argument("--resume", action="store_true", help="continue the trainers' run folders")
    p.add_argument("--quick", action="store_true", help="micro version of everything")
    p.add_argument("--quick-seconds", type=float, default=QUICK_SECONDS, help="training seconds per step")
    p.add_argument("--threads", type=int, default=2)
    add_device_argument(  # refused at parsing, not after the corpus and the codec have been trained
        p, help="of the codec, MAGNeT and the rescorer: cpu, cuda or auto (corpus, tokens, classifier: CPU)"
    )
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stdout)
    only = args.only.split(",") if args.only else None
    unknown = set(only or []) - set(STEPS)
    if unknown:
        p.error(f"unknown steps {sorted(unknown)}; choose from {', '.join(STEPS)}")
    seconds = Pipeline(args).run(only)
    log.info("steps run (seconds): %s", seconds)
    return seconds


if __name__ == "__main__":
    main()
