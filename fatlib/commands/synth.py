"""``python -m fatlib synth``: write a synthetic FSDKaggle2019-format data set."""
from __future__ import annotations

from .. import synth as _doc
from ..synth import SIZES, make_dataset


def register(subparsers) -> None:
    p = subparsers.add_parser("synth", help="write a synthetic FSDKaggle2019-format data set",
                              description=_doc.__doc__.splitlines()[0])
    p.add_argument("out", help="output folder (e.g. input/)")
    p.add_argument("--size", choices=sorted(SIZES), default="tiny",
                   help="preset (default: tiny): " + "; ".join(
                       f"{k}: " + ", ".join(f"{n}={'real lengths' if v is None else v}" for n, v in d.items())
                       for k, d in SIZES.items()))
    for arg, typ in (("n-classes", int), ("n-curated", int), ("n-noisy", int), ("n-test", int),
                     ("max-seconds", float)):
        p.add_argument(f"--{arg}", type=typ, default=None, help="overrides the --size preset (default: the preset's)")
    p.add_argument("--noise-rate", type=float, default=0.3, help="share of noisy clips with a wrong/missing label")
    p.add_argument("--sample-rate", type=int, default=44100, help="Hz")
    p.add_argument("--seed", type=int, default=0, help="same seed, same bytes (default: 0)")
    p.add_argument("--jobs", type=int, default=None, help="threads (default: automatic)")
    p.set_defaults(func=_cli)


def _cli(args) -> int:
    from ..preflight import check_writable

    kw = dict(SIZES[args.size])
    for key in ("n_classes", "n_curated", "n_noisy", "n_test", "max_seconds"):
        if getattr(args, key) is not None:
            kw[key] = getattr(args, key)
    longest = int((kw["max_seconds"] or 30.0) * args.sample_rate * 2) + 44  # 16-bit PCM
    n_clips = kw["n_curated"] + kw["n_noisy"] + kw["n_test"]
    check_writable(args.out, expected_bytes=n_clips * longest // 2, largest_file_bytes=longest, what="output folder")
    out = make_dataset(args.out, noise_rate=args.noise_rate, sample_rate=args.sample_rate, seed=args.seed,
                       progress=True, n_jobs=args.jobs, **kw)
    print(f"wrote {kw['n_curated']} curated, {kw['n_noisy']} noisy, {kw['n_test']} test clips "
          f"({kw['n_classes']} classes) to {out}")
    return 0
