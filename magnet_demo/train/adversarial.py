"""A small adversarial loss for the codec's decoder: log-spectrogram discriminators at three resolutions.

The codec's regression losses (log-mel, log-STFT, head magnitude) reward the average of what the
tokens allow, which blurs harmonics and timbre. A discriminator that sees log-magnitude
spectrograms of real and decoded audio rewards sharp, plausible spectra instead. It sees magnitudes
only: the codec's phase comes from a vocoder or from learned frequencies, fitted by their own loss.

Each resolution is a stack of 2-D convolutions over [frequency, frame] (strided along frequency,
dilated along time), with weight normalisation and leaky ReLUs; it returns a map of logits and its
feature maps. Losses: hinge for the discriminator and the generator, and feature matching (L1
between the feature maps of real and decoded audio, each normalised by the real one's mean
magnitude).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

#: (n_fft, hop) of each resolution, for 16 kHz audio
RESOLUTIONS = ((512, 128), (1024, 256), (2048, 512))
FILTERS = 16
KERNEL = (3, 9)  # (frequency, time)
DILATIONS = (1, 2, 4)  # along time, one strided layer each
SLOPE = 0.2
LOG_FLOOR = 1e-5


class SpectrogramDiscriminator(nn.Module):
    """One resolution: audio [B, 1, T] -> (logits [B, 1, F', frames], feature maps)."""

    def __init__(self, n_fft: int, hop: int, filters: int = FILTERS):
        super().__init__()
        self.n_fft, self.hop = n_fft, hop
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)
        pad = (KERNEL[0] // 2, KERNEL[1] // 2)
        layers = [nn.Conv2d(1, filters, KERNEL, padding=pad)]
        for dilation in DILATIONS:
            layers.append(
                nn.Conv2d(
                    filters,
                    filters,
                    KERNEL,
                    stride=(2, 1),
                    dilation=(1, dilation),
                    padding=(KERNEL[0] // 2, dilation * (KERNEL[1] // 2)),
                )
            )
        layers.append(nn.Conv2d(filters, filters, 3, padding=1))
        self.layers = nn.ModuleList(weight_norm(layer) for layer in layers)
        self.post = weight_norm(nn.Conv2d(filters, 1, 3, padding=1))

    def log_spectrogram(self, audio: torch.Tensor) -> torch.Tensor:
        """Log-magnitude [B, 1, n_fft // 2 + 1, frames] of audio [B, 1, T] (float32 STFT)."""
        spec = torch.stft(
            audio[:, 0].float(), self.n_fft, self.hop, window=self.window, center=True, return_complex=True
        )
        return torch.log(spec.abs() + LOG_FLOOR)[:, None]

    def forward(self, audio: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        z, features = self.log_spectrogram(audio), []
        for layer in self.layers:
            z = F.leaky_relu(layer(z), SLOPE)
            features.append(z)
        return self.post(z), features


class MultiResolutionDiscriminator(nn.Module):
    """One :class:`SpectrogramDiscriminator` per entry of ``resolutions``."""

    def __init__(self, resolutions=RESOLUTIONS, filters: int = FILTERS):
        super().__init__()
        self.resolutions = tuple(tuple(r) for r in resolutions)
        self.discriminators = nn.ModuleList(
            SpectrogramDiscriminator(n, h, filters) for n, h in self.resolutions
        )

    def forward(self, audio: torch.Tensor) -> tuple[list[torch.Tensor], list[list[torch.Tensor]]]:
        """audio [B, 1, T] -> (logits per resolution, feature maps per resolution)."""
        outputs = [d(audio) for d in self.discriminators]
        return [logits for logits, _ in outputs], [features for _, features in outputs]


def discriminator_loss(real_logits: list[torch.Tensor], fake_logits: list[torch.Tensor]) -> torch.Tensor:
    """Hinge loss of the discriminator, summed over resolutions: mean relu(1 - real) + mean relu(1 + fake)."""
    return sum(
        F.relu(1 - r).mean() + F.relu(1 + f).mean() for r, f in zip(real_logits, fake_logits, strict=True)
    )


def generator_loss(fake_logits: list[torch.Tensor]) -> torch.Tensor:
    """Hinge loss of the generator, summed over resolutions: mean relu(1 - fake)."""
    return sum(F.relu(1 - f).mean() for f in fake_logits)


def feature_matching_loss(
    real_features: list[list[torch.Tensor]], fake_features: list[list[torch.Tensor]]
) -> torch.Tensor:
    """Mean over all feature maps of L1(fake, real) / mean |real| (real maps are targets, no gradient)."""
    terms = [
        F.l1_loss(f, r.detach()) / r.detach().abs().mean().clamp(min=1e-8)
        for real, fake in zip(real_features, fake_features, strict=True)
        for r, f in zip(real, fake, strict=True)
    ]
    return sum(terms) / len(terms)
