"""Batched log-mel on torch (:class:`LogMel`): the numbers of :func:`fatlib.features.log_mel` for batches of
waveforms on the CPU or a GPU (the feature cache, inference and the on-the-fly waveform path)."""
from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from torch import nn

from .errors import DataError
from .features import AMIN, TOP_DB, MelConfig, _check_cfg

MEL_BLOCK = 16  # mel filters per block of the banded projection in LogMel
CPU_CHUNK_FRAMES = 512  # STFT frames per chunk of a CPU batch in LogMel (cache-sized work; 1 thread: 3x faster)


_POOL: tuple[int, ThreadPoolExecutor] | None = None  # (pid, pool): a forked child makes its own
_POOL_LOCK = threading.Lock()


def _one_torch_thread() -> None:
    torch.set_num_threads(1)  # this thread's OpenMP and MKL settings (and torch's default for new threads)


def _cpu_threads(tasks: list) -> None:
    """Runs ``fn(*args)`` for each ``(fn, *args)`` of ``tasks`` at once, each on a thread of its own that
    uses one torch thread, and waits for all; the caller's thread count is restored afterwards."""
    global _POOL
    n = torch.get_num_threads()
    with _POOL_LOCK:
        if _POOL is None or _POOL[0] != os.getpid() or _POOL[1]._max_workers < len(tasks):
            _POOL = (os.getpid(), ThreadPoolExecutor(max_workers=max(len(tasks), n), initializer=_one_torch_thread,
                                                     thread_name_prefix="fatlib-logmel"))
        pool = _POOL[1]
    inference = torch.is_inference_mode_enabled()

    def run(task):
        with torch.inference_mode(inference), torch.no_grad():
            task[0](*task[1:])

    try:
        futures = [pool.submit(run, t) for t in tasks]
        for f in futures:
            f.result()
    finally:
        torch.set_num_threads(n)  # a new pool thread's initializer set torch's default for new threads to 1


def _overdrive(waves: torch.Tensor, gain: torch.Tensor | None) -> torch.Tensor:
    """``tanh(gain * y)`` for the clips of (B, samples) ``waves`` with a gain > 0, a new tensor; the rest as
    they are (``waves`` itself when no clip has a gain)."""
    if gain is None:
        return waves
    on = gain > 0
    if not bool(on.any()):
        return waves
    if bool(on.all()):
        return torch.tanh(waves * gain[:, None])
    return torch.where(on[:, None], torch.tanh(waves * gain[:, None]), waves)


class LogMel(nn.Module):
    """Batched log-mel on torch: (batch, samples) -> (batch, n_mels, frames) dB, same numbers as :func:`log_mel`.

    Periodic Hann window, centred frames with zero padding (librosa >= 0.10), the mel filter bank of
    ``librosa.filters.mel`` as a buffer (moves with ``.to(device)``), and the top-80-dB clamp per clip.
    A 1-D input is treated as a batch of one.
    """

    def __init__(self, cfg: MelConfig):
        import librosa

        super().__init__()
        self.cfg = _check_cfg(cfg)
        # several STFT sizes: one LogMel per size, outputs stacked along the mel axis (as log_mel)
        self.parts = nn.ModuleList([LogMel(cfg.replace(n_fft=n, n_ffts=(), channels=1)) for n in cfg.n_ffts])
        if cfg.n_ffts:
            return
        fb = librosa.filters.mel(
            sr=cfg.sample_rate, n_fft=cfg.n_fft, n_mels=cfg.n_mels, fmin=cfg.fmin, fmax=cfg.fmax
        )
        self.register_buffer("mel_fb", torch.from_numpy(np.ascontiguousarray(fb, dtype=np.float32)))
        self.register_buffer("window", torch.hann_window(cfg.n_fft, periodic=True, dtype=torch.float32))
        # The triangular filters are banded: each group of MEL_BLOCK filters is non-zero on one short
        # run of FFT bins, so the projection is done block by block over those bins only (about 1/8 of
        # the dense multiply-adds at 128 mels, the same sums). Blocks are stored (bins, filters) for the
        # (frames, bins) layout torch.stft's output has in memory.
        self._bins: list[tuple[int, int]] = []
        for i, r0 in enumerate(range(0, cfg.n_mels, MEL_BLOCK)):
            rows = fb[r0:r0 + MEL_BLOCK]
            nz = np.flatnonzero(np.abs(rows).sum(axis=0))
            c0, c1 = (int(nz[0]), int(nz[-1]) + 1) if len(nz) else (0, 1)
            self._bins.append((c0, c1))
            self.register_buffer(f"mel_block{i}", torch.from_numpy(np.ascontiguousarray(rows[:, c0:c1].T, np.float32)),
                                 persistent=False)

    def forward(self, waves: torch.Tensor) -> torch.Tensor:
        if waves.dim() == 1:
            waves = waves.unsqueeze(0)
        if waves.dim() != 2:
            raise DataError(f"LogMel expects (batch, samples) waveforms, got shape {tuple(waves.shape)}")
        if len(self.parts):
            return torch.cat([part(waves) for part in self.parts], dim=1)
        return self._mel_power(waves, center=True, db=True)

    def long_clip(self, wave: torch.Tensor, *, frames_per_pass: int) -> torch.Tensor:
        """One 1-D waveform -> (n_mels, frames) dB, the same numbers as ``self(wave)[0]``, with the STFT
        taken ``frames_per_pass`` frames at a time: memory grows with the clip's mel frames only (a
        10-minute clip: 20 MB of mel power instead of about 1 GB of complex STFT)."""
        if wave.dim() != 1:
            raise DataError(f"LogMel.long_clip expects one (samples,) waveform, got shape {tuple(wave.shape)}")
        if len(self.parts):
            return torch.cat([part.long_clip(wave, frames_per_pass=frames_per_pass) for part in self.parts], dim=0)
        n_fft, hop = self.cfg.n_fft, self.cfg.hop_length
        padded = torch.nn.functional.pad(wave.to(self.window.dtype), (n_fft // 2, n_fft // 2))
        n_frames = 1 + (len(padded) - n_fft) // hop
        step = max(1, int(frames_per_pass))
        parts = [
            self._mel_power(padded[None, a * hop : (min(a + step, n_frames) - 1) * hop + n_fft], center=False)
            for a in range(0, n_frames, step)
        ]
        return self._to_db(torch.cat(parts, dim=-1))[0]

    def mel_power(self, waves: torch.Tensor, *, filters: torch.Tensor | None = None,
                  drive: torch.Tensor | None = None) -> torch.Tensor:
        """(B, samples) -> mel power (B, n_mels, frames), before the log. ``filters``: one filter bank per
        clip (B, n_fft // 2 + 1, n_mels) instead of the mel bank (``fatlib.wave_batch`` warps them for pitch
        shifts). ``drive``: per-clip overdrive gains (B,) (linear; 0: none): the STFT of ``tanh(gain * y)``
        for clips with a gain, applied chunk by chunk (no copy of the batch). One STFT size only (a
        multi-resolution LogMel: call it on each of ``parts``)."""
        if len(self.parts):
            raise DataError("LogMel.mel_power: several STFT sizes; call it on each of LogMel.parts")
        if waves.dim() != 2 or (filters is not None and (filters.dim() != 3 or len(filters) != len(waves))):
            raise DataError(f"LogMel.mel_power expects (batch, samples) waveforms and (batch, bins, n_mels) filters, "
                            f"got {tuple(waves.shape)}" + ("" if filters is None else f" and {tuple(filters.shape)}"))
        ranges = None
        if filters is not None:  # per-clip banks, still banded: each block of filters over the bins any bank uses
            ranges = []
            for r0 in range(0, self.cfg.n_mels, MEL_BLOCK):
                nz = torch.nonzero(filters[:, :, r0:r0 + MEL_BLOCK].abs().sum(dim=(0, 2))).flatten()
                ranges.append((int(nz[0]), int(nz[-1]) + 1) if len(nz) else (0, 1))
        if drive is not None and (drive.dim() != 1 or len(drive) != len(waves)):
            raise DataError(f"LogMel.mel_power: drive must be one gain per clip ({len(waves)},), got {tuple(drive.shape)}")
        return self._mel_power(waves, center=True, filters=filters, ranges=ranges, drive=drive)

    def _mel_power(self, waves: torch.Tensor, *, center: bool, filters: torch.Tensor | None = None,
                   ranges: list | None = None, db: bool = False, drive: torch.Tensor | None = None) -> torch.Tensor:
        """(B, samples) -> mel power (B, n_mels, frames), or its dB (``db``: :meth:`_to_db`). On the CPU the
        batch goes through in chunks of about CPU_CHUNK_FRAMES frames: each chunk's STFT, power, projection
        (and dB) stay in the caches, and no complex STFT of the whole batch is kept. With several torch
        threads the clips are split into one contiguous share per thread, each share computed with one
        thread (:func:`_cpu_threads`): one hand-over per call instead of a barrier per operation per chunk
        (on 2 cores: 2.1x less wall time than the per-op parallelism, and no stalls when a core is busy)."""
        waves = waves.to(self.window.dtype)
        if drive is not None:
            drive = drive.to(waves.device, waves.dtype)
        if waves.device.type != "cpu" or len(waves) == 1:
            mel = self._power(_overdrive(waves, drive), center=center, filters=filters, ranges=ranges)
            return self._to_db(mel) if db else mel
        n_fft, hop = self.cfg.n_fft, self.cfg.hop_length
        frames = 1 + (waves.shape[-1] + (n_fft // 2) * 2 * center - n_fft) // hop
        step = max(1, CPU_CHUNK_FRAMES // max(1, frames))
        out = waves.new_empty(len(waves), self.cfg.n_mels, frames)
        grad = torch.is_grad_enabled() and (waves.requires_grad or (filters is not None and filters.requires_grad))

        def share(a: int, b: int) -> None:
            for i in range(a, b, step):
                j = min(i + step, b)
                chunk = _overdrive(waves[i:j], None if drive is None else drive[i:j])
                sub = None if filters is None else filters[i:j]
                if grad:
                    mel = self._power(chunk, center=center, ranges=ranges, filters=sub)
                    out[i:j] = self._to_db(mel) if db else mel
                else:  # the projection written straight into the output's rows, the dB in place there
                    mel = self._power(chunk, center=center, ranges=ranges, filters=sub, out=out[i:j])
                    if db:
                        self._to_db(mel, inplace=True)

        if grad:  # autograd through out's slices: the plain loop on this thread
            share(0, len(waves))
            return out
        n_threads = min(torch.get_num_threads(), len(waves) // step)
        if n_threads < 2 or len(waves) * frames < 2 * CPU_CHUNK_FRAMES:
            share(0, len(waves))
            return out
        bounds = np.linspace(0, len(waves), n_threads + 1).round().astype(int)
        _cpu_threads([(share, int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:]) if b > a])
        return out

    def _power(self, waves: torch.Tensor, *, center: bool, filters: torch.Tensor | None = None,
               ranges: list | None = None, out: torch.Tensor | None = None) -> torch.Tensor:
        """Mel power (B, n_mels, frames) of a batch in one pass; ``out``: a contiguous tensor of that shape to
        write it into (returned)."""
        if waves.device.type == "cpu" and len(waves) == 1 and center:
            span = self._content_frames(waves[0])
            if span is not None:  # a zero-padded clip: only the frames that see its samples
                mel = self._span_power(waves, span, filters, ranges)
                return mel if out is None else out.copy_(mel)
        spec = torch.stft(
            waves, n_fft=self.cfg.n_fft, hop_length=self.cfg.hop_length,
            window=self.window, center=center, pad_mode="constant", return_complex=True,
        )
        parts = torch.view_as_real(spec.transpose(1, 2))  # (B, frames, bins, 2), contiguous in memory
        power = parts[..., 0].square()
        power.addcmul_(parts[..., 1], parts[..., 1])  # (B, frames, bins)
        del spec, parts
        if filters is None:
            blocks = [(c0, c1, getattr(self, f"mel_block{i}")) for i, (c0, c1) in enumerate(self._bins)]
        else:  # per-clip banks over the bins of ``ranges`` (from mel_power: the whole batch's)
            blocks = [(c0, c1, filters[:, c0:c1, r0:r0 + MEL_BLOCK].to(power.dtype))
                      for r0, (c0, c1) in zip(range(0, self.cfg.n_mels, MEL_BLOCK), ranges)]
        # (filters, bins) x (bins, frames) per block (transposed operands: no copies): (B, n_mels, frames)
        mel = [torch.matmul(w.mT, power[..., c0:c1].mT) for c0, c1, w in blocks]
        return torch.cat(mel, dim=1) if out is None else torch.cat(mel, dim=1, out=out)

    def _content_frames(self, wave: torch.Tensor) -> tuple[int, int, int] | None:
        """(first, end, total) centred frames of a 1-D waveform that overlap its non-zero samples, when
        at least a quarter of the frames see only zeros (padding: their power is exactly 0); else None."""
        n_fft, hop = self.cfg.n_fft, self.cfg.hop_length
        total = 1 + len(wave) // hop
        if len(wave) < 4 * hop or wave[0] != 0 or wave[-1] != 0:  # centred zero padding leaves both ends 0
            return None
        n_blocks = len(wave) // hop  # which blocks of hop samples hold a non-zero sample: one pass, then small
        blocks = torch.cat([(wave[: n_blocks * hop] != 0).view(n_blocks, hop).any(dim=1),
                            (wave[n_blocks * hop :] != 0).any().view(1)])
        if not bool(blocks.any()):
            return 0, 0, total
        k0 = int(blocks.to(torch.uint8).argmax())
        k1 = len(blocks) - 1 - int(blocks.flip(0).to(torch.uint8).argmax())
        head, tail = wave[k0 * hop : (k0 + 1) * hop] != 0, wave[k1 * hop : (k1 + 1) * hop] != 0
        a = k0 * hop + int(head.to(torch.uint8).argmax())
        b = k1 * hop + len(tail) - int(tail.flip(0).to(torch.uint8).argmax())
        first = max(0, -(-(a - n_fft // 2 + 1) // hop))  # frame t covers [t*hop - n_fft/2, t*hop + n_fft/2)
        end = min(total, -(-(b + n_fft // 2) // hop))
        return (first, end, total) if 4 * (total - (end - first)) >= total else None

    def _span_power(self, waves: torch.Tensor, span: tuple[int, int, int], filters, ranges) -> torch.Tensor:
        """Mel power (1, n_mels, total) of a one-clip batch whose frames outside [first, end) are all zeros."""
        first, end, total = span
        n_fft, hop = self.cfg.n_fft, self.cfg.hop_length
        out = waves.new_zeros(1, self.cfg.n_mels, total)
        if end > first:
            padded = torch.nn.functional.pad(waves, (n_fft // 2, n_fft // 2))
            piece = padded[:, first * hop : (end - 1) * hop + n_fft]
            out[..., first:end] = self._power(piece, center=False, filters=filters, ranges=ranges)
        return out

    def _to_db(self, mel: torch.Tensor, *, inplace: bool = False) -> torch.Tensor:
        """Mel power -> dB clamped to 80 dB below each clip's peak (or ``log(mel + log_offset)``); ``inplace``:
        overwrites ``mel`` (a chunk's own power: no new tensors)."""
        if self.cfg.log_offset is not None:  # log(mel + offset) scaling (3rd place), no dB or clamp
            return mel.add_(self.cfg.log_offset).log_() if inplace else torch.log(mel + self.cfg.log_offset)
        if inplace:
            db = mel.clamp_(min=AMIN).log10_().mul_(10.0)
            return torch.maximum(db, db.amax(dim=(-2, -1), keepdim=True).sub_(TOP_DB), out=db)
        db = 10.0 * torch.log10(mel.clamp(min=AMIN))
        peak = db.amax(dim=(-2, -1), keepdim=True)
        return torch.maximum(db, peak - TOP_DB)

    def extra_repr(self) -> str:
        c = self.cfg
        if c.n_ffts:
            return f"n_mels={c.n_mels}, n_ffts={list(c.n_ffts)}, hop_length={c.hop_length}, sample_rate={c.sample_rate}"
        return f"n_mels={c.n_mels}, n_fft={c.n_fft}, hop_length={c.hop_length}, sample_rate={c.sample_rate}"
