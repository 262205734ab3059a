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

MEL_BLOCK = 8  # mel filters per block of the banded projection in LogMel (8: fewest multiply-adds per call)
CPU_CHUNK_FRAMES = 512  # at most this many STFT frames per projection pass on the CPU (bounds the per-thread buffers)
FFT_FRAMES = 64  # STFT frames windowed and transformed per FFT call on the CPU (the windowed frames stay in L2)
SCRATCH_KEEP_BYTES = 64 << 20  # a thread keeps its CPU work buffers between calls up to this size


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


_SCRATCH = threading.local()  # per thread: LogMel's CPU work buffers, kept between calls (see _scratch)


def _scratch(*shapes) -> list[torch.Tensor | None]:
    """Work buffers of these shapes for this thread: float32, except a complex64 third one (the FFT's output);
    the first is zero-filled (a clip's padded samples: the padding stays zero). Kept for the next call while
    they total at most SCRATCH_KEEP_BYTES (a thread then faults in no new pages per call)."""
    key = (os.getpid(), shapes)
    held = getattr(_SCRATCH, "held", None)
    if held is not None and held[0] == key:
        return held[1]
    made = [None if shape is None else torch.zeros(shape) if k == 0 else
            torch.empty(shape, dtype=torch.complex64 if k == 2 else torch.float32) for k, shape in enumerate(shapes)]
    size = sum(t.numel() * t.element_size() for t in made if t is not None)
    _SCRATCH.held = (key, made) if size <= SCRATCH_KEEP_BYTES else None
    return made


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
        # run of FFT bins, so the projection is done block by block over those bins only (at 128 mels about
        # a tenth of the dense multiply-adds, the same sums). The STFT's real and imaginary parts are squared
        # where they lie (one contiguous pass) and each weight is stored twice, once per part, so the
        # projection also adds re^2 + im^2: blocks are (filters, 2 * bins) over interleaved (re, im) columns.
        self._bins: list[tuple[int, int]] = []
        for i, r0 in enumerate(range(0, cfg.n_mels, MEL_BLOCK)):
            rows = fb[r0:r0 + MEL_BLOCK]
            nz = np.flatnonzero(np.abs(rows).sum(axis=0))
            c0, c1 = (int(nz[0]), int(nz[-1]) + 1) if len(nz) else (0, 1)
            self._bins.append((c0, c1))
            block = np.repeat(rows[:, c0:c1], 2, axis=1)
            self.register_buffer(f"mel_block{i}", torch.from_numpy(np.ascontiguousarray(block, np.float32)),
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
        """(B, samples) -> mel power (B, n_mels, frames), or its dB (``db``: :meth:`_to_db`).

        On the CPU without autograd the batch goes clip by clip (:meth:`_cpu_clips`): each clip's frames,
        FFT, squares and projection reuse one set of work buffers per thread, so nothing of the size of the
        batch's STFT is allocated (or page-faulted) per call. With several torch threads the clips are split
        into one contiguous share per thread, each share computed with one thread (:func:`_cpu_threads`):
        one hand-over per call instead of a barrier per operation (on 2 cores: 2.1x less wall time than the
        per-op parallelism, and no stalls when a core is busy). A GPU, autograd, or a single clip (whose
        silent frames :meth:`_power` skips): the whole batch at once."""
        waves = waves.to(self.window.dtype)
        if drive is not None:
            drive = drive.to(waves.device, waves.dtype)
        grad = torch.is_grad_enabled() and (waves.requires_grad or (filters is not None and filters.requires_grad))
        if waves.device.type != "cpu" or len(waves) == 1 or grad:
            mel = self._power(_overdrive(waves, drive), center=center, filters=filters, ranges=ranges)
            return self._to_db(mel) if db else mel
        n_fft, hop = self.cfg.n_fft, self.cfg.hop_length
        frames = 1 + (waves.shape[-1] + (n_fft // 2) * 2 * center - n_fft) // hop
        out = waves.new_empty(len(waves), self.cfg.n_mels, frames)
        args = (waves, out, center, filters, ranges, drive, db)
        n_threads = min(torch.get_num_threads(), len(waves))
        if n_threads < 2 or len(waves) * frames < 2 * CPU_CHUNK_FRAMES:
            self._cpu_clips(*args, 0, len(waves))
            return out
        bounds = np.linspace(0, len(waves), n_threads + 1).round().astype(int)
        _cpu_threads([(self._cpu_clips, *args, int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:]) if b > a])
        return out

    def _cpu_clips(self, waves, out, center, filters, ranges, drive, db, first: int, end: int) -> None:
        """Writes the mel power (or dB) of clips ``first:end`` of ``waves`` into ``out`` on this thread: per
        clip, the (padded, overdriven) samples into a buffer, windowed frames and their FFT FFT_FRAMES at a
        time, the squares of the real and imaginary parts in place, and the banded projection straight into
        the clip's output rows (at most CPU_CHUNK_FRAMES frames per pass); the dB of the share at the end."""
        n_fft, hop, n_mels = self.cfg.n_fft, self.cfg.hop_length, self.cfg.n_mels
        samples, frames = waves.shape[-1], out.shape[-1]
        pad = n_fft // 2 if center else 0
        step = min(frames, CPU_CHUNK_FRAMES)
        padded, windowed, spec, part = _scratch((samples + 2 * pad,), (min(step, FFT_FRAMES), n_fft),
                                                 (step, n_fft // 2 + 1), (n_mels * step,) if step < frames else None)
        squares = torch.view_as_real(spec).view(step, -1)  # (frames, 2 * bins): re, im interleaved
        fixed = [(c0, c1, getattr(self, f"mel_block{i}")) for i, (c0, c1) in enumerate(self._bins)]
        for i in range(first, end):
            body = padded[pad:pad + samples]
            body.copy_(waves[i])
            if drive is not None and drive[i] > 0:
                body.mul_(drive[i]).tanh_()  # overdrive: tanh(gain * y), as _overdrive
            if filters is None:
                blocks = fixed
            else:  # this clip's bank, each weight twice (re, im), over the bins of ``ranges``
                bank = filters[i].to(spec.real.dtype).repeat_interleave(2, dim=0)  # (2 * bins, n_mels)
                blocks = [(c0, c1, bank[2 * c0:2 * c1, r0:r0 + MEL_BLOCK].mT)
                          for r0, (c0, c1) in zip(range(0, n_mels, MEL_BLOCK), ranges)]
            all_frames = padded.unfold(0, n_fft, hop)
            for a in range(0, frames, step):
                n = min(step, frames - a)
                for f in range(0, n, FFT_FRAMES):
                    k = min(FFT_FRAMES, n - f)
                    torch.mul(all_frames[a + f:a + f + k], self.window, out=windowed[:k])
                    torch.fft.rfft(windowed[:k], dim=-1, out=spec[f:f + k])
                sq = squares[:n].square_()
                dest = out[i] if n == frames else part[:n_mels * n].view(n_mels, n)
                for r0, (c0, c1, w) in zip(range(0, n_mels, MEL_BLOCK), blocks):
                    torch.matmul(w, sq[:, 2 * c0:2 * c1].mT, out=dest[r0:r0 + MEL_BLOCK])
                if n < frames:
                    out[i, :, a:a + n] = dest
        if db:
            self._to_db(out[first:end], inplace=True)

    def _power(self, waves: torch.Tensor, *, center: bool, filters: torch.Tensor | None = None,
               ranges: list | None = None) -> torch.Tensor:
        """Mel power (B, n_mels, frames) of a whole batch in one pass (GPU, autograd, a single clip)."""
        if waves.device.type == "cpu" and len(waves) == 1 and center:
            span = self._content_frames(waves[0])
            if span is not None:  # a zero-padded clip: only the frames that see its samples
                return self._span_power(waves, span, filters, ranges)
        spec = torch.stft(
            waves, n_fft=self.cfg.n_fft, hop_length=self.cfg.hop_length,
            window=self.window, center=center, pad_mode="constant", return_complex=True,
        )
        parts = torch.view_as_real(spec.transpose(1, 2))  # (B, frames, bins, 2), contiguous in memory
        squares = parts.square().flatten(-2)  # (B, frames, 2 * bins): re^2, im^2 interleaved
        del spec, parts
        if filters is None:
            blocks = [(c0, c1, getattr(self, f"mel_block{i}")) for i, (c0, c1) in enumerate(self._bins)]
        else:  # per-clip banks over the bins of ``ranges`` (from mel_power: the whole batch's), weights twice
            bank = filters.to(squares.dtype).repeat_interleave(2, dim=1)  # (B, 2 * bins, n_mels)
            blocks = [(c0, c1, bank[:, 2 * c0:2 * c1, r0:r0 + MEL_BLOCK].mT)
                      for r0, (c0, c1) in zip(range(0, self.cfg.n_mels, MEL_BLOCK), ranges)]
        # (filters, 2 * bins) x (2 * bins, frames) per block (transposed operand: no copy): (B, n_mels, frames)
        return torch.cat([torch.matmul(w, squares[..., 2 * c0:2 * c1].mT) for c0, c1, w in blocks], dim=1)

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
