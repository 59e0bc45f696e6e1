"""Where does the codec lose what the attribute classifier hears: magnitude or phase?

Every row rebuilds the same held-out clips with the codec's STFT grid (n_fft 1024, hop 320) from
one magnitude and one phase, then asks the attribute classifier (trained on real audio) for
instrument family, drums, tempo band and mode:

- magnitude: the true one (``|STFT(x)|``) or the codec's (decoder head from the clip's codes);
- phase: the true one, or one of the codec's phase modes (``SpectralCodec.phase_of``): the learned
  phase head, :func:`magnet_demo.codec.vocoder_phase` rebuilt from that magnitude, or (codecs with
  ``phase="frequency"``) the vocoder with the head's learned frequencies.

Writes ``assets/codec_diagnosis.json``::

    .venv/bin/python -m bench.codec_diagnosis [--clips 48] [--codec assets/embedded]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from magnet_demo.codec import load_codec
from magnet_demo.train.classifier import accuracy, load_classifier, predict, prepare_audio
from magnet_demo.train.corpus import load_corpus
from magnet_demo.train.train_codec import logmel_l1

ASSETS = Path(__file__).resolve().parent.parent / "assets"
BATCH = 8
#: (row name, magnitude source, phase source)
ROWS = (
    ("true magnitude, true phase (STFT round trip)", "true", "true"),
    ("true magnitude, vocoder phase", "true", "vocoder"),
    ("true magnitude, codec's learned phase", "true", "learned"),
    ("codec magnitude, true phase", "codec", "true"),
    ("codec magnitude, learned phase", "codec", "learned"),
    ("codec magnitude, vocoder phase", "codec", "vocoder"),
)
#: rows for a codec with ``phase="frequency"``
FREQUENCY_ROWS = (
    ("true magnitude, learned frequencies", "true", "frequency"),
    ("codec magnitude, learned frequencies", "codec", "frequency"),
)


@torch.no_grad()
def rebuild(codec, x: torch.Tensor, magnitude: str, phase: str) -> torch.Tensor:
    """Audio [B, 1, F * hop] from clips x [B, 1, T] with the given magnitude and phase sources."""
    target = codec.stft(x)  # [B, n_freq, F]
    log_mag, phase_head = codec.spectrum(codec.decode_latent(codec.encode(x)[0]))
    log_mag = codec.log_magnitude(target) if magnitude == "true" else log_mag
    if phase == "true":
        unit = target / target.abs().clamp(min=1e-8)
    else:
        unit = codec.phase_of(phase, log_mag, phase_head)
    return codec.istft(torch.exp(log_mag) * unit)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--codec", default="assets/embedded")
    parser.add_argument("--corpus", default="data/corpus")
    parser.add_argument("--classifier", default=str(ASSETS / "classifier.pt"))
    parser.add_argument("--clips", type=int, default=48)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=str(ASSETS / "codec_diagnosis.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    codec = load_codec(args.codec)
    classifier = load_classifier(args.classifier)
    audio, meta = load_corpus(args.corpus)
    test = [i for i, m in enumerate(meta) if m["split"] == "test"][: args.clips]
    labels = [meta[i]["labels"] for i in test]
    real = prepare_audio(np.asarray(audio[test], dtype=np.float32) / 32768.0)
    x = torch.from_numpy(real)[:, None]
    results = {"clips": len(test), "codec": args.codec, "rows": {}}
    print(f"{len(test)} held-out clips; codec {args.codec}")
    rows = ROWS + (FREQUENCY_ROWS if codec.phase == "frequency" else ())
    for name, magnitude, phase in rows:
        out = torch.cat([rebuild(codec, x[s : s + BATCH], magnitude, phase) for s in range(0, len(x), BATCH)])
        clips = out[:, 0, : real.shape[1]].numpy()
        scores = accuracy(predict(classifier, prepare_audio(clips)), labels)
        scores["logmel_l1"] = float(np.mean([logmel_l1(a, b) for a, b in zip(clips, real, strict=True)]))
        results["rows"][name] = scores
        print(f"  {name:46s} " + "  ".join(f"{k} {v:.3f}" for k, v in scores.items()), flush=True)
    Path(args.out).write_text(json.dumps(results, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
