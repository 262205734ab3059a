"""``python -m fatlib cache``: build the feature caches ahead of training."""
from __future__ import annotations

from .options import add_input_roots_argument


def register(subparsers) -> None:
    """``python -m fatlib cache``: build the feature caches of a data set's splits ahead of training."""
    p = subparsers.add_parser("cache", help="precompute the float16 log-mel cache of the data splits",
                              description="Build the float16 log-mel caches of a data set's splits ahead of "
                              "training (a complete cache is reused, an interrupted build resumes).")
    p.add_argument("--data", "--data-dir", dest="data_dir", default=None, help="FSDKaggle2019-format folder (default: input/ or Kaggle's)")
    p.add_argument("--splits", nargs="+", default=["curated", "noisy", "test"], help="splits to cache: curated, noisy, test (default: all three)")
    p.add_argument("--preset", default="cnn128", help="mel preset (fatlib.features.PRESETS)")
    p.add_argument("--cache-dir", default="cache", help="output folder (default: cache)")
    p.add_argument("--jobs", type=int, default=None, help="processes (default: all cores)")
    add_input_roots_argument(p)
    p.set_defaults(func=_cli)


def _cli(args) -> int:
    from ..cache import FeatureCache, missing_cache_bytes
    from ..dataset import FatData
    from ..features import get_preset
    from ..guards import check_output_not_input, data_inputs
    from ..preflight import check_writable

    data = FatData.from_dir(args.data_dir)
    check_output_not_input(args.cache_dir, inputs=data_inputs(data), what="--cache-dir", folder=True)  # fatlib.guards
    cfg = get_preset(args.preset)
    todo = [missing_cache_bytes(data.split(n).paths(), cfg, cache_dir=args.cache_dir, name=n,
                                input_roots=args.input_roots) for n in args.splits]
    if sum(todo):  # twice the size while a cache is assembled from its shards
        check_writable(args.cache_dir, expected_bytes=2 * sum(todo), largest_file_bytes=max(todo), what="--cache-dir")
    for name in args.splits:
        split = data.split(name)
        if not split.fnames:
            print(f"{name}: no clips, skipped")
            continue
        cache = FeatureCache.build(split.paths(), cfg, cache_dir=args.cache_dir, name=name, n_jobs=args.jobs,
                                   input_roots=args.input_roots)
        size_mb = cache.data_path.stat().st_size / 2**20
        print(f"{name}: {len(cache)} clips, {int(cache.lengths.sum())} frames, {size_mb:.1f} MiB -> {cache.data_path}")
    return 0
