"""A small spectral codec for the embedded model: 16 kHz mono audio <-> 4 x 256 codes at 50 frames/s.

Pipeline (DESIGN.md section 8)::

    audio [B, 1, T] --STFT(1024/320)--> log|X| [B, 513, F] --ConvNeXt-1D--> latent [B, 64, F]
      --RVQ 4 x 256--> codes [B, 4, F]
    codes --lookup--> latent [B, 64, F] --ConvNeXt-1D--> log-magnitude + phase [B, 513, F]
      --inverse STFT--> audio [B, 1, F * 320]

The phase that goes into the inverse STFT comes from one of three ``phase`` modes, all reading the
same two head channels per bin (``px``, ``py``), so a checkpoint can switch modes without changing
shape:

- ``"learned"``: the head's phase direction ``atan2(py, px)``, frame by frame;
- ``"vocoder"`` (the default of new codecs): :func:`vocoder_phase`, a phase rebuilt from the
  predicted magnitude that stays coherent from frame to frame (each bin takes the frequency of its
  nearest spectral peak, refined by parabolic interpolation);
- ``"frequency"``: the same phase vocoder, but each peak's frequency is the head's *learned*
  instantaneous frequency (``px`` read as an offset from the bin centre, :meth:`SpectralCodec.
  frequency_offset`), fitted to the true phase advance by the ``frequency`` training loss. It is
  what a blurred magnitude cannot give: pitch finer than a bin (15.6 Hz, a semitone near 270 Hz).

On the held-out clips the vocoder phase kept more of what the attribute classifier hears than the
learned one (docs/embedded_model.md).

Frames are aligned to hops: the signal is padded by (n_fft - hop) / 2 on each side, so frame f is
centred on samples [f * hop, (f + 1) * hop) and F = ceil(T / hop) exactly (10 s = 500 frames).
The inverse STFT is a plain overlap-add normalised by the summed squared window, cropped back to
F * hop samples.

:class:`SpectralCodec` implements audiocraft's ``CompressionModel`` interface, so MAGNeT decodes
it like EnCodec. Its checkpoint (``compression_state_dict.bin``) carries an ``xp.cfg`` with
``compression_model: magnet_demo_spectral`` and every constructor argument; :func:`build_codec`
rebuilds the module from it.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from magnet_demo.checkpoints import COMPRESSION_FILE, FRAME_RATE, save_package
from magnet_demo.compat import import_audiocraft

import_audiocraft()
from audiocraft.models.encodec import CompressionModel  # noqa: E402
from audiocraft.quantization.base import QuantizedResult  # noqa: E402

#: the value of ``xp.cfg.compression_model`` that names this codec
CODEC_NAME = "magnet_demo_spectral"
SAMPLE_RATE = 16_000
HOP = SAMPLE_RATE // FRAME_RATE  # 320 samples = 20 ms
#: floor of the STFT magnitude before the log (the input feature)
LOG_EPS = 1e-5
#: cap on the predicted log-magnitude (exp(8) ~ 3000, above any 16-bit full-scale bin)
MAX_LOG_MAG = 8.0
#: kernel of each stack's input convolution (the encoder's input has 513 channels: keep it short)
IN_KERNEL = 3
#: initial bias of the predicted log-magnitude: quiet (exp(-5) ~ 0.007) rather than loud output at init
LOG_MAG_INIT = -5.0
#: a reset codebook entry starts with this multiple of the dead-code threshold as its EMA count
RESET_COUNT_FACTOR = 2.0
#: how the decoder gets its phase: the learned head, :func:`vocoder_phase` from the magnitude, or
#: the phase vocoder with the head's learned frequencies (module docstring)
PHASE_MODES = ("learned", "vocoder", "frequency")
#: momentum of the fast Griffin-Lim iterations (Perraudin et al. 2013's suggested 0.99)
GRIFFIN_LIM_MOMENTUM = 0.99


def codec_defaults() -> dict[str, Any]:
    """Constructor arguments of :class:`SpectralCodec` (the ``magnet_demo_spectral`` section)."""
    return {
        "sample_rate": SAMPLE_RATE,
        "n_fft": 1024,
        "hop_length": HOP,
        "dim": 256,
        "hidden": 768,
        "encoder_blocks": 4,
        "decoder_blocks": 4,
        "kernel_size": 7,
        "latent_dim": 64,
        "n_q": 4,
        "bins": 256,
        "ema_decay": 0.99,
        "dead_threshold": 0.05,
        "kmeans_iters": 10,
        "phase": "vocoder",
    }


def codec_config(**overrides: Any) -> dict[str, Any]:
    """The whole ``xp.cfg`` dict of a codec checkpoint; ``overrides`` replace constructor arguments."""
    section = codec_defaults()
    unknown = set(overrides) - set(section)
    if unknown:
        raise TypeError(f"unknown codec arguments: {sorted(unknown)}")
    section.update(overrides)
    return {
        "compression_model": CODEC_NAME,
        "sample_rate": section["sample_rate"],
        "channels": 1,
        "device": "cpu",
        "dtype": "float32",
        CODEC_NAME: section,
    }


def vocoder_phase(
    log_mag: torch.Tensor, n_fft: int, hop: int, frequency_offset: torch.Tensor | None = None
) -> torch.Tensor:
    """A phase that is coherent from frame to frame, made from the magnitude (a phase vocoder).

    Each bin takes the frequency of the spectral peak nearest to it in its frame (local maxima of
    the log-magnitude; bins of a frame without peaks keep their own centre frequency). A peak's
    frequency is its bin refined by parabolic interpolation, or, when ``frequency_offset`` is
    given, its bin plus that offset at the peak. A partial of frequency f advances its phase by
    ``2 pi f hop / sr`` per hop, so the phase at the window's centre is the running sum of those
    advances; the STFT of a frame that starts at the window's left edge adds ``-pi k`` at bin k
    (the centre is n_fft / 2 samples in).

    Args:
        log_mag: natural-log magnitude ``[B, n_freq, F]`` (n_freq = n_fft // 2 + 1).
        frequency_offset: optional ``[B, n_freq, F]``, each bin's instantaneous frequency minus
            its centre, in bins (:meth:`SpectralCodec.frequency_offset`).
    Returns:
        unit complex phase ``[B, n_freq, F]``.
    """
    B, K, T = log_mag.shape
    below, centre, above = log_mag[:, :-2], log_mag[:, 1:-1], log_mag[:, 2:]
    is_peak = F.pad((centre > below) & (centre >= above), (0, 0, 1, 1))  # [B, K, F]
    if frequency_offset is None:
        curvature = below - 2 * centre + above
        # vertex of the parabola through the three log-magnitudes, in bins from the centre bin
        offset = torch.where(curvature.abs() > 1e-9, 0.5 * (below - above) / curvature, 0.0)
        offset = F.pad(offset.clamp(-0.5, 0.5), (0, 0, 1, 1))
    else:
        offset = frequency_offset.to(log_mag.dtype)
    k = torch.arange(K, device=log_mag.device).view(1, K, 1).expand(B, K, T)
    none_left, none_right = -2 * K, 3 * K
    left = torch.where(is_peak, k, none_left).cummax(dim=1).values  # nearest peak at or below k
    right = torch.where(is_peak, k, none_right).flip(1).cummin(dim=1).values.flip(1)  # at or above
    nearest = torch.where(k - left <= right - k, left, right)
    no_peak = (nearest < 0) | (nearest >= K)
    nearest = nearest.clamp(0, K - 1)
    frequency = torch.where(no_peak, k.to(log_mag.dtype), nearest + offset.gather(1, nearest))  # in bins
    centre_phase = torch.cumsum(2 * math.pi * frequency * hop / n_fft, dim=2)
    angle = centre_phase - math.pi * k
    return torch.polar(torch.ones_like(angle), angle)


def true_frequency_offset(spec: torch.Tensor, n_fft: int, hop: int) -> torch.Tensor:
    """Instantaneous frequency minus bin centre, in bins, of a complex STFT ``[B, n_freq, F]``
    (frames starting every ``hop`` samples), from the phase advance into each frame:
    ``[B, n_freq, F - 1]`` for frames 1 .. F - 1, in ``[-n_fft / (2 hop), n_fft / (2 hop))``
    (beyond that range the advance aliases)."""
    advance = torch.angle(spec[..., 1:] * spec[..., :-1].conj())
    k = torch.arange(spec.shape[1], device=spec.device, dtype=advance.dtype).view(1, -1, 1)
    deviation = torch.remainder(advance - 2 * math.pi * k * hop / n_fft + math.pi, 2 * math.pi) - math.pi
    return deviation * n_fft / (2 * math.pi * hop)


class ConvNeXtBlock(nn.Module):
    """ConvNeXt block over time: depthwise conv, LayerNorm, pointwise MLP, scaled residual. [B, C, F]."""

    def __init__(self, dim: int, hidden: int, kernel_size: int, layer_scale: float = 1e-2):
        super().__init__()
        self.dwconv = nn.Conv1d(dim, dim, kernel_size, padding=kernel_size // 2, groups=dim)
        self.norm = nn.LayerNorm(dim)
        self.pw1 = nn.Linear(dim, hidden)
        self.pw2 = nn.Linear(hidden, dim)
        self.gamma = nn.Parameter(torch.full((dim,), layer_scale))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.dwconv(x).transpose(1, 2)  # [B, F, C]
        y = self.pw2(F.gelu(self.pw1(self.norm(y))))
        return x + (self.gamma * y).transpose(1, 2)


class ConvNeXtStack(nn.Module):
    """Input conv, ConvNeXt blocks, LayerNorm, output projection: [B, c_in, F] -> [B, c_out, F]."""

    def __init__(self, c_in: int, c_out: int, dim: int, hidden: int, blocks: int, kernel_size: int):
        super().__init__()
        self.proj_in = nn.Conv1d(c_in, dim, IN_KERNEL, padding=IN_KERNEL // 2)
        self.blocks = nn.ModuleList(ConvNeXtBlock(dim, hidden, kernel_size) for _ in range(blocks))
        self.norm = nn.LayerNorm(dim)
        self.proj_out = nn.Linear(dim, c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj_in(x)
        for block in self.blocks:
            x = block(x)
        return self.proj_out(self.norm(x.transpose(1, 2))).transpose(1, 2)


class ResidualVQ(nn.Module):
    """Residual vector quantiser with k-means init, EMA codebooks and dead-code reset.

    Codebooks are buffers (updated by EMA, not by the optimiser), so they live in the state dict.
    Latents are [B, D, F]; codes are [B, K, F] int64 with K the active number of codebooks.
    """

    def __init__(
        self,
        dim: int,
        n_q: int,
        bins: int,
        decay: float = 0.99,
        dead_threshold: float = 0.05,
        kmeans_iters: int = 10,
        eps: float = 1e-5,
    ):
        super().__init__()
        self.dim, self.n_q, self.bins = dim, n_q, bins
        self.decay, self.dead_threshold, self.kmeans_iters, self.eps = (
            decay,
            dead_threshold,
            kmeans_iters,
            eps,
        )
        self.active = n_q
        self.register_buffer("embed", torch.randn(n_q, bins, dim) * 0.1)  # [K, bins, D]
        self.register_buffer("cluster_size", torch.ones(n_q, bins))  # EMA of assignment counts
        self.register_buffer("embed_sum", self.embed.clone())  # EMA of summed assigned vectors
        self.register_buffer("inited", torch.zeros((), dtype=torch.bool))

    def _nearest(self, x: torch.Tensor, k: int) -> torch.Tensor:
        """Index of the closest entry of codebook k for each row of x [N, D] -> [N]."""
        e = self.embed[k]
        dist = x.pow(2).sum(1, keepdim=True) - 2 * x @ e.t() + e.pow(2).sum(1)[None]
        return dist.argmin(1)

    def _kmeans(self, x: torch.Tensor) -> torch.Tensor:
        """k-means (Lloyd) on rows of x [N, D]; returns centroids [bins, D]."""
        pick = torch.randint(len(x), (self.bins,), device=x.device)
        centroids = x[pick].clone()
        for _ in range(self.kmeans_iters):
            dist = torch.cdist(x, centroids)
            assign = dist.argmin(1)
            sums = torch.zeros_like(centroids).index_add_(0, assign, x)
            counts = torch.bincount(assign, minlength=self.bins).to(x.dtype)
            empty = counts == 0
            centroids = torch.where(empty[:, None], centroids, sums / counts.clamp(min=1)[:, None])
        return centroids

    @torch.no_grad()
    def kmeans_init(self, z: torch.Tensor) -> None:
        """Initialise every codebook by k-means on the residuals of latents z [B, D, F]."""
        residual = z.detach().transpose(1, 2).reshape(-1, self.dim)
        for k in range(self.n_q):
            self.embed[k] = self._kmeans(residual)
            self.embed_sum[k] = self.embed[k].clone()
            self.cluster_size[k] = 1.0
            residual = residual - self.embed[k][self._nearest(residual, k)]
        self.inited.fill_(True)

    @torch.no_grad()
    def _ema_update(self, x: torch.Tensor, idx: torch.Tensor, k: int) -> None:
        """EMA update of codebook k from vectors x [N, D] assigned to idx [N]; reset dead codes."""
        counts = torch.bincount(idx, minlength=self.bins).to(x.dtype)
        sums = torch.zeros(self.bins, self.dim, dtype=x.dtype, device=x.device).index_add_(0, idx, x)
        self.cluster_size[k].mul_(self.decay).add_(counts, alpha=1 - self.decay)
        self.embed_sum[k].mul_(self.decay).add_(sums, alpha=1 - self.decay)
        n = self.cluster_size[k].sum()
        smoothed = (self.cluster_size[k] + self.eps) / (n + self.bins * self.eps) * n  # Laplace smoothing
        self.embed[k] = self.embed_sum[k] / smoothed[:, None]
        dead = self.cluster_size[k] < self.dead_threshold
        n_dead = int(dead.sum())
        if n_dead:
            fresh = x[torch.randint(len(x), (n_dead,), device=x.device)]
            self.embed[k][dead] = fresh
            # a fresh entry gets ~70 steps (at decay 0.99) to win assignments before it is replaced again
            self.embed_sum[k][dead] = fresh * RESET_COUNT_FACTOR * self.dead_threshold
            self.cluster_size[k][dead] = RESET_COUNT_FACTOR * self.dead_threshold

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Quantise z [B, D, F]; returns (straight-through latent [B, D, F], codes [B, K, F], commitment loss)."""
        B, D, T = z.shape
        flat = z.transpose(1, 2).reshape(-1, D)  # [B*F, D]
        if self.training and not bool(self.inited):
            self.kmeans_init(z)
        residual = flat
        quantized = torch.zeros_like(flat)
        codes, commit = [], flat.new_zeros(())
        for k in range(self.active):
            idx = self._nearest(residual.detach(), k)
            if self.training:
                self._ema_update(residual.detach(), idx, k)
            q = self.embed[k][idx]
            commit = commit + F.mse_loss(residual, q.detach())
            quantized = quantized + q
            residual = residual - q.detach()
            codes.append(idx)
        zq = flat + (quantized - flat).detach()  # straight-through estimator
        codes_t = torch.stack(codes, 1).view(B, T, -1).transpose(1, 2)
        return zq.view(B, T, D).transpose(1, 2), codes_t, commit

    @torch.no_grad()
    def encode(self, z: torch.Tensor) -> torch.Tensor:
        """Codes [B, K, F] (int64) of latents z [B, D, F], K the active number of codebooks."""
        B, D, T = z.shape
        residual = z.transpose(1, 2).reshape(-1, D)
        codes = []
        for k in range(self.active):
            idx = self._nearest(residual, k)
            residual = residual - self.embed[k][idx]
            codes.append(idx)
        return torch.stack(codes, 1).view(B, T, -1).transpose(1, 2)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Latents [B, D, F] from codes [B, K, F], K <= n_q (sum of the first K codebooks' entries)."""
        K = codes.shape[1]
        if K > self.n_q:
            raise ValueError(f"{K} codebooks given, the quantiser has {self.n_q}")
        out = sum(self.embed[k][codes[:, k]] for k in range(K))  # [B, F, D]
        return out.transpose(1, 2)


class SpectralCodec(CompressionModel):
    """STFT -> ConvNeXt encoder -> RVQ -> ConvNeXt decoder -> magnitude + phase -> inverse STFT.

    ``encode(x [B, 1, T]) -> (codes [B, K, F] int64, None)``, F = ceil(T / hop);
    ``decode(codes [B, K, F]) -> audio [B, 1, F * hop]``. Mono only.
    """

    def __init__(
        self,
        sample_rate: int = SAMPLE_RATE,
        n_fft: int = 1024,
        hop_length: int = HOP,
        dim: int = 256,
        hidden: int = 768,
        encoder_blocks: int = 4,
        decoder_blocks: int = 4,
        kernel_size: int = 7,
        latent_dim: int = 64,
        n_q: int = 4,
        bins: int = 256,
        ema_decay: float = 0.99,
        dead_threshold: float = 0.05,
        kmeans_iters: int = 10,
        phase: str = "learned",
    ):
        super().__init__()
        if phase not in PHASE_MODES:
            raise ValueError(f"phase must be one of {PHASE_MODES}, got {phase!r}")
        #: constructor arguments, as written into the checkpoint's ``xp.cfg``
        self.arguments = {
            "sample_rate": sample_rate,
            "n_fft": n_fft,
            "hop_length": hop_length,
            "dim": dim,
            "hidden": hidden,
            "encoder_blocks": encoder_blocks,
            "decoder_blocks": decoder_blocks,
            "kernel_size": kernel_size,
            "latent_dim": latent_dim,
            "n_q": n_q,
            "bins": bins,
            "ema_decay": ema_decay,
            "dead_threshold": dead_threshold,
            "kmeans_iters": kmeans_iters,
            "phase": phase,
        }
        self.phase = phase
        #: Griffin-Lim iterations that refine the output phase at decode time (a run-time setting,
        #: not saved): 0 ships; more lowered the log-mel error but not the classifier's accuracy
        #: (docs/embedded_model.md)
        self.phase_refinement = 0
        if (n_fft - hop_length) % 2:
            raise ValueError("n_fft - hop_length must be even (frames are centred on hops)")
        self._sample_rate, self.n_fft, self.hop = sample_rate, n_fft, hop_length
        self.pad = (n_fft - hop_length) // 2
        n_freq = n_fft // 2 + 1
        self.n_freq = n_freq
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)
        self.encoder = ConvNeXtStack(n_freq, latent_dim, dim, hidden, encoder_blocks, kernel_size)
        self.quantizer = ResidualVQ(latent_dim, n_q, bins, ema_decay, dead_threshold, kmeans_iters)
        # head: log-magnitude, and the two components of a phase direction (angle = atan2(y, x))
        self.decoder = ConvNeXtStack(latent_dim, 3 * n_freq, dim, hidden, decoder_blocks, kernel_size)
        with torch.no_grad():
            self.decoder.proj_out.bias[:n_freq].fill_(LOG_MAG_INIT)

    # --- audiocraft's CompressionModel properties ---------------------------------------------
    @property
    def channels(self) -> int:
        return 1

    @property
    def frame_rate(self) -> float:
        return self._sample_rate / self.hop

    @property
    def sample_rate(self) -> int:
        return self._sample_rate

    @property
    def cardinality(self) -> int:
        return self.quantizer.bins

    @property
    def num_codebooks(self) -> int:
        return self.quantizer.active

    @property
    def total_codebooks(self) -> int:
        return self.quantizer.n_q

    def set_num_codebooks(self, n: int) -> None:
        if not 1 <= n <= self.quantizer.n_q:
            raise ValueError(f"num codebooks must be in [1, {self.quantizer.n_q}], got {n}")
        self.quantizer.active = n

    # --- signal processing ------------------------------------------------------------------
    def stft(self, x: torch.Tensor) -> torch.Tensor:
        """Complex STFT of audio [B, 1, T] -> [B, n_freq, F], F = ceil(T / hop), frames centred on hops."""
        if x.dim() != 3 or x.shape[1] != 1:
            raise ValueError(f"expected mono audio [B, 1, T], got {tuple(x.shape)}")
        length = x.shape[-1]
        frames = math.ceil(length / self.hop)
        x = F.pad(x, (0, frames * self.hop - length))
        mode = "reflect" if x.shape[-1] > self.pad else "constant"
        x = F.pad(x, (self.pad, self.pad), mode=mode)[:, 0]
        return torch.stft(x, self.n_fft, self.hop, window=self.window, center=False, return_complex=True)

    def istft(self, spec: torch.Tensor) -> torch.Tensor:
        """Overlap-add inverse of :meth:`stft`: [B, n_freq, F] complex -> audio [B, 1, F * hop]."""
        B, _, frames = spec.shape
        chunks = torch.fft.irfft(spec, n=self.n_fft, dim=1) * self.window[None, :, None]  # [B, n_fft, F]
        total = (frames - 1) * self.hop + self.n_fft
        out = F.fold(chunks, (1, total), (1, self.n_fft), stride=(1, self.hop))[:, 0, 0]  # [B, total]
        w2 = self.window.pow(2)[None, :, None].expand(1, -1, frames)
        env = F.fold(w2, (1, total), (1, self.n_fft), stride=(1, self.hop))[:, 0, 0]
        out = out / env.clamp(min=1e-8)
        return out[:, None, self.pad : self.pad + frames * self.hop]

    @staticmethod
    def log_magnitude(spec: torch.Tensor) -> torch.Tensor:
        """Floored natural-log magnitude [B, n_freq, F] of a complex STFT [B, n_freq, F]."""
        return torch.log(spec.abs().clamp(min=LOG_EPS))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Encoder input: log STFT magnitude [B, n_freq, F] of audio [B, 1, T]."""
        return self.log_magnitude(self.stft(x))

    def spectrum(self, latent: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Decoder head: latents [B, D, F] -> (log-magnitude [B, n_freq, F] capped at
        :data:`MAX_LOG_MAG`, phase channels [B, 2, n_freq, F] (px, py), read by
        :meth:`learned_phase` and :meth:`frequency_offset`)."""
        head = self.decoder(latent).float()  # float32 even when the decoder ran under autocast
        log_mag, px, py = head.split(self.n_freq, dim=1)
        return log_mag.clamp(max=MAX_LOG_MAG), torch.stack([px, py], dim=1)

    @staticmethod
    def learned_phase(phase_head: torch.Tensor) -> torch.Tensor:
        """Unit phase direction [B, n_freq, F] (complex) of the phase channels [B, 2, n_freq, F]."""
        px, py = phase_head.unbind(dim=1)
        norm = torch.sqrt(px.pow(2) + py.pow(2) + 1e-9)
        return torch.complex(px / norm, py / norm)

    @property
    def frequency_range(self) -> float:
        """Largest frequency offset the head can say, in bins: ``n_fft / (2 hop)``, where the phase
        advance from frame to frame stops being unambiguous."""
        return self.n_fft / (2 * self.hop)

    def frequency_offset(self, phase_head: torch.Tensor) -> torch.Tensor:
        """Learned instantaneous frequency minus bin centre, in bins, [B, n_freq, F]: ``px``
        squashed to +-:attr:`frequency_range` (``phase="frequency"``)."""
        return self.frequency_range * torch.tanh(phase_head[:, 0])

    def reset_frequency_head(self) -> None:
        """Zero the ``px`` rows of the head (offset 0: each peak at its bin's centre), for a codec
        switched to ``phase="frequency"`` from weights trained for another mode."""
        with torch.no_grad():
            rows = slice(self.n_freq, 2 * self.n_freq)
            self.decoder.proj_out.weight[rows].zero_()
            self.decoder.proj_out.bias[rows].zero_()

    def load_growing_decoder(self, state: dict[str, torch.Tensor]) -> int:
        """Load the state dict of a codec with fewer decoder blocks into this one: the blocks it
        lacks (those after its own, before the output norm) start with a layer scale of 0, so they
        are identities and the grown codec decodes exactly as the smaller one did. Returns how
        many blocks were added; any other mismatch raises ``ValueError``."""
        missing, unexpected = self.load_state_dict(state, strict=False)
        stray = [k for k in missing if not k.startswith("decoder.blocks.")]
        if unexpected or stray:
            raise ValueError(f"not a smaller decoder: unexpected {unexpected}, missing {stray}")
        added = sorted({int(k.split(".")[2]) for k in missing})
        with torch.no_grad():
            for i in added:
                self.decoder.blocks[i].gamma.zero_()
        return len(added)

    def phase_of(self, mode: str, log_mag: torch.Tensor, phase_head: torch.Tensor) -> torch.Tensor:
        """The phase [B, n_freq, F] (complex) that phase ``mode`` (one of :data:`PHASE_MODES`) makes
        from a log-magnitude and the phase channels: the learned head's direction,
        :func:`vocoder_phase` of ``log_mag``, or the vocoder with the learned frequencies."""
        if mode == "vocoder":
            return vocoder_phase(log_mag, self.n_fft, self.hop)
        if mode == "frequency":
            return vocoder_phase(log_mag, self.n_fft, self.hop, self.frequency_offset(phase_head))
        if mode == "learned":
            return self.learned_phase(phase_head)
        raise ValueError(f"phase must be one of {PHASE_MODES}, got {mode!r}")

    def output_phase(self, log_mag: torch.Tensor, phase_head: torch.Tensor) -> torch.Tensor:
        """The phase the audio is made with: :meth:`phase_of` this codec's ``phase`` mode. The
        vocoder modes give no gradient (peak picking): the magnitude learns from the audio losses,
        the frequencies from their own loss."""
        if self.phase == "learned":
            return self.learned_phase(phase_head)
        return self.phase_of(self.phase, log_mag.detach(), phase_head.detach())

    def griffin_lim(
        self,
        magnitude: torch.Tensor,
        phase: torch.Tensor | None = None,
        iters: int = 32,
        momentum: float = 0.0,
    ) -> torch.Tensor:
        """Griffin-Lim: a spectrum [B, n_freq, F] (complex) of ``magnitude`` [B, n_freq, F] whose
        phase is made consistent with the STFT of its own inverse, starting from ``phase`` (unit
        complex, default 0). ``momentum`` > 0 is fast Griffin-Lim (Perraudin et al. 2013)."""
        spec = magnitude.to(torch.complex64) if phase is None else magnitude * phase
        previous = spec
        for _ in range(iters):
            again = self.stft(self.istft(spec))
            projected = magnitude * again / again.abs().clamp(min=1e-8)
            spec = projected + momentum * (projected - previous)
            previous = projected
        return previous

    def synthesize(self, latent: torch.Tensor) -> torch.Tensor:
        """Decoder: latents [B, D, F] -> audio [B, 1, F * hop], with :meth:`output_phase` (refined
        by :attr:`phase_refinement` fast Griffin-Lim iterations when set)."""
        log_mag, phase_head = self.spectrum(latent)
        magnitude, phase = torch.exp(log_mag), self.output_phase(log_mag, phase_head)
        if self.phase_refinement:
            return self.istft(self.griffin_lim(magnitude, phase, self.phase_refinement, GRIFFIN_LIM_MOMENTUM))
        return self.istft(magnitude * phase)

    # --- audiocraft's CompressionModel interface ----------------------------------------------
    def forward(self, x: torch.Tensor) -> QuantizedResult:
        """Reconstruct audio [B, 1, T]; ``.x`` is the audio, ``.penalty`` the commitment loss."""
        length = x.shape[-1]
        latent = self.encoder(self.features(x))
        zq, codes, commit = self.quantizer(latent)
        out = self.synthesize(zq)[..., :length]
        bits = self.quantizer.active * math.log2(self.quantizer.bins) * self.frame_rate / 1000
        bandwidth = torch.full((x.shape[0],), bits, device=x.device)
        return QuantizedResult(out, codes, bandwidth, penalty=commit, metrics={})

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, None]:
        """Codes [B, K, F] (int64, values in [0, cardinality)) of audio x [B, 1, T]; no scale."""
        latent = self.encoder(self.features(x))
        return self.quantizer.encode(latent), None

    def decode(self, codes: torch.Tensor, scale: torch.Tensor | None = None) -> torch.Tensor:
        """Audio [B, 1, F * hop] from codes [B, K, F]; ``scale`` must be None (no renormalisation)."""
        if scale is not None:
            raise ValueError("SpectralCodec does not renormalise: scale must be None")
        return self.synthesize(self.decode_latent(codes))

    def decode_latent(self, codes: torch.Tensor) -> torch.Tensor:
        """Continuous latents [B, D, F] from codes [B, K, F]."""
        return self.quantizer.decode(codes.long())


def build_codec(cfg: Any) -> SpectralCodec:
    """Build a :class:`SpectralCodec` from an ``xp.cfg`` (dict, OmegaConf DictConfig or YAML string)."""
    from omegaconf import DictConfig, OmegaConf

    if isinstance(cfg, str):
        cfg = OmegaConf.create(cfg)
    if isinstance(cfg, DictConfig):
        cfg = OmegaConf.to_container(cfg, resolve=True)
    if cfg.get("compression_model") != CODEC_NAME:
        raise ValueError(f"not a {CODEC_NAME} config: compression_model={cfg.get('compression_model')!r}")
    return SpectralCodec(**cfg[CODEC_NAME])


def save_codec(codec: SpectralCodec, folder: str | Path) -> Path:
    """Export ``codec`` to ``folder/compression_state_dict.bin`` (audiocraft's package format)."""
    return save_package(codec.state_dict(), codec_config(**codec.arguments), Path(folder) / COMPRESSION_FILE)


def load_codec(folder_or_file: str | Path) -> SpectralCodec:
    """Load an exported codec (a folder holding ``compression_state_dict.bin``, or the file), in eval mode."""
    from magnet_demo.checkpoints import load_package

    path = Path(folder_or_file)
    if path.is_dir():
        path = path / COMPRESSION_FILE
    pkg = load_package(path)
    codec = build_codec(pkg["xp.cfg"])
    codec.load_state_dict(pkg["best_state"])
    return codec.eval()
