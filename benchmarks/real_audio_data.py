"""A labelled data set of real recorded sounds in the FSDKaggle2019 layout, built from Debian packages.

Used by ``benchmarks/real_audio.py``; not by CI. Sources (``apt-get download`` + ``dpkg-deb -x``; run
as root after one ``apt-get update``), labels taken only from folder, file and instrument names:

- ``hydrogen-drumkits``: each acoustic kit's ``drumkit.xml`` instrument names (kick, snare, hi-hat,
  tom, crash / ride cymbal, closed / open / pedal hi-hat, clap, cowbell, tambourine, side stick); the
  electronic kits are skipped.
- ``sonic-pi-samples``: the acoustic ``drum_*`` hits and the ``tabla_*`` strokes.
- ``bucklespring-data``: key press and key release recordings of one keyboard (``<key>-<0|1>.wav``).
- ``hedgewars-data``: voice packs (Laugh, PoisonCough, and a few spoken lines per pack as speech).
- ``scratch``: Media/Sounds (animals, human sounds, percussion, effects).
- ``tuxpaint-stamps-default``: stamp sounds (animals, instruments), without ``_desc`` narration or
  localised files.
- ``gcompris-qt-data``: farm and world animal recordings inside Qt ``.rcc`` resource files.

Every clip belongs to a *group* (one drum kit, one voice actor, one sample family, one file), and
the test split is made of whole groups, stratified by label (sklearn's StratifiedGroupKFold), so no
kit or voice is on both sides. Labels with fewer than ``min_clips`` clips, or present on only one
side, are dropped. The test split also gets 2-3-clip mixtures with the joined labels. Output:

    <out>/train_curated/*.wav  train_curated.csv  train_noisy.csv (header only)  train_noisy/
    <out>/test/*.wav  sample_submission.csv  test_labels.csv (fname,labels,kind,group)
    <out>/manifest.json (sources, counts, parameters); a rerun with the same parameters is a no-op.
"""
from __future__ import annotations

import hashlib
import json
import re
import shutil
import struct
import subprocess
import xml.etree.ElementTree as ET
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

PACKAGES = ("hydrogen-drumkits", "sonic-pi-samples", "bucklespring-data", "hedgewars-data", "scratch",
            "tuxpaint-stamps-default", "gcompris-qt-data")
SAMPLE_RATE = 44100
MAX_SECONDS = 10.0  # longer recordings are cut to their first 10 s
AUDIO_EXT = (".wav", ".flac", ".ogg", ".mp3", ".aif", ".aiff")


@dataclass
class Clip:
    source: str  # package
    group: str  # recording source: a kit, a voice pack, a sample family, a file
    label: str
    path: Path | None = None  # audio file, or
    data: bytes | None = None  # audio bytes (from a .rcc resource)
    name: str = ""


# ------------------------------------------------------------------------------------- packages
def fetch_packages(root: Path, packages=PACKAGES) -> dict[str, Path]:
    """Download and unpack each package once into ``root/<package>/`` (returns package -> folder)."""
    root.mkdir(parents=True, exist_ok=True)
    out = {}
    for pkg in packages:
        dest = root / pkg
        if not (dest / ".unpacked").exists():
            debs = sorted(root.glob(f"{pkg}_*.deb"))
            if not debs:
                subprocess.run(["apt-get", "download", pkg], cwd=root, check=True)
                debs = sorted(root.glob(f"{pkg}_*.deb"))
            shutil.rmtree(dest, ignore_errors=True)
            dest.mkdir()
            subprocess.run(["dpkg-deb", "-x", str(debs[-1]), str(dest)], check=True)
            (dest / ".unpacked").write_text(debs[-1].name)
        out[pkg] = dest
    return out


# -------------------------------------------------------------------------------------- sources
ELECTRONIC_KITS = {"ElectricEmpireKit", "HardElectro1", "VariBreaks"}
DRUM_RULES = [  # instrument name (lower case) -> label; the first match wins
    (r"cowbell", "cowbell"),
    (r"tambourine", "tambourine"),
    (r"clap", "clap"),
    (r"(side ?)?stick|rim ?click", "side stick"),
    (r"(hi-?hat|\bhh\b|\bhat\b).*(open|swish)|open.*(hi-?hat|\bhh\b|hat)|^hh2", "open hi-hat"),
    (r"(hi-?hat|\bhh\b|\bhat\b).*(pedal|foot)|pedal.*(hi-?hat|\bhh\b|hat)", "pedal hi-hat"),
    (r"hi-?hat|\bhh\b|\bhat\b", "closed hi-hat"),
    (r"kick|bass ?drum|bassdrum|\bbd\b", "kick"),
    (r"snare", "snare"),
    (r"\btom|tom\b|tomhi|floor tom", "tom"),
    (r"ride", "ride cymbal"),
    (r"crash|splash|china|cymbal", "crash cymbal"),
]


def _rule_label(text: str, rules) -> str | None:
    text = text.lower()
    for pattern, label in rules:
        if re.search(pattern, text):
            return label
    return None


def hydrogen_clips(root: Path) -> list[Clip]:
    clips = []
    for xml in sorted(root.glob("usr/share/hydrogen/data/drumkits/*/drumkit.xml")):
        kit = xml.parent
        if kit.name in ELECTRONIC_KITS:
            continue
        tree = ET.parse(xml).getroot()
        ns = re.match(r"\{.*\}", tree.tag)
        ns = ns.group(0) if ns else ""
        seen = set()
        for ins in tree.iter(ns + "instrument"):
            label = _rule_label(ins.findtext(ns + "name") or "", DRUM_RULES)
            if label is None:  # unnamed instruments (e.g. BJA_Pacific's HH2_*): the file names
                label = _rule_label(" ".join(e.text or "" for e in ins.iter(ns + "filename")), DRUM_RULES)
            if label is None:
                continue
            for f in ins.iter(ns + "filename"):
                path = kit / (f.text or "")
                if path.is_file() and path.name != "emptySample.flac" and path not in seen:
                    seen.add(path)
                    clips.append(Clip("hydrogen-drumkits", f"hydrogen/{kit.name}", label, path=path))
    return clips


SONIC_PI_RULES = [
    (r"^drum_cymbal_closed", "closed hi-hat"),
    (r"^drum_cymbal_open", "open hi-hat"),
    (r"^drum_cymbal_pedal", "pedal hi-hat"),
    (r"^drum_(cymbal|splash)", "crash cymbal"),
    (r"^drum_(bass|heavy_kick)", "kick"),
    (r"^drum_snare", "snare"),
    (r"^drum_tom", "tom"),
    (r"^drum_cowbell", "cowbell"),
    (r"^tabla_", "tabla"),
]


def sonic_pi_clips(root: Path) -> list[Clip]:
    clips = []
    for path in sorted(root.glob("usr/share/sonic-pi/samples/*.flac")):
        label = _rule_label(path.stem, SONIC_PI_RULES)
        if label:  # group: the sample family (tabla_ghe1..8 together; drum_tom_* together)
            family = re.sub(r"[_\d]*(hard|soft|[a-z])?\d*$", "", path.stem) if label == "tabla" else path.stem
            family = re.sub(r"_(hard|soft)$", "", family)
            clips.append(Clip("sonic-pi-samples", f"sonic-pi/{family}", label, path=path))
    return clips


def bucklespring_clips(root: Path) -> list[Clip]:
    # <scancode>-<0 press|1 release>.wav of one IBM Model M: group by key, so press and release stay together
    return [Clip("bucklespring-data", f"buckle/{p.stem.split('-')[0]}",
                 "key press" if p.stem.endswith("-0") else "key release", path=p)
            for p in sorted(root.glob("usr/share/buckle/wav/*.wav"))]


SPEECH_LINES = ("Hello", "Byebye", "Excellent", "Incoming", "Missed", "Oops", "Revenge", "Victory")


def hedgewars_clips(root: Path) -> list[Clip]:
    clips = []
    for pack in sorted(root.glob("usr/share/games/hedgewars/Data/Sounds/voices/*")):
        for path in sorted(pack.glob("*.ogg")):
            label = ("laugh" if path.stem == "Laugh" else "cough" if path.stem == "PoisonCough"
                     else "speech" if path.stem in SPEECH_LINES else None)
            if label:  # one voice actor per pack
                clips.append(Clip("hedgewars-data", f"hedgewars/{pack.name}", label, path=path))
    return clips


NAME_RULES = [  # file or folder names of scratch / tuxpaint / gcompris -> label
    (r"laugh", "laugh"),
    (r"cough", "cough"),
    (r"sneeze", "sneeze"),
    (r"scream", "scream"),
    (r"footstep", "footsteps"),
    (r"\bdog\b|dog\d|puppy|bark", "dog"),
    (r"\bcat\b|meow|kitten", "cat"),
    (r"rooster|hen\b|chicken|\bbird|\bowl|duck|drake|goose|gander|crow|cuckoo|blackbird|lark|seagull|"
     r"penguin|turkey|vulture|tucan|quetzal|heron|nandou|parrot|pigeon", "bird"),
    (r"\bcow|bull\b|cow_white", "cow"),
    (r"horse", "horse"),
    (r"sheep|lamb|\bram\b|goat", "sheep"),
    (r"\bpig", "pig"),
    (r"cricket|grasshopper|\bbee\b|hornet|mosquito|xanthia|insect", "insect"),
    (r"ride_?cymbal", "ride cymbal"),
    (r"cymbal|crash", "crash cymbal"),
    (r"handclap|hand_clap", "clap"),
    (r"tomtom", "tom"),
    (r"door", "door"),
    (r"water|bubbles|drip|plunge|ripples", "water"),
    (r"car_?passing|motorcycle|engine", "engine"),
]


def scratch_clips(root: Path) -> list[Clip]:
    clips = []
    for path in sorted(root.glob("usr/share/scratch/Media/Sounds/*/*")):
        if path.suffix.lower() in AUDIO_EXT and path.parent.name in {"Animal", "Human", "Percussion", "Effects"}:
            label = _rule_label(re.sub(r"(?<=[a-z])(?=[A-Z])", "_", path.stem), NAME_RULES)
            if label:
                clips.append(Clip("scratch", f"scratch/{path.stem}", label, path=path))
    return clips


LOCALISED = re.compile(r"_[a-z]{2,3}(_[A-Z]{2})?$")


def tuxpaint_clips(root: Path) -> list[Clip]:
    clips = []
    for path in sorted(root.glob("usr/share/tuxpaint/stamps/**/*.ogg")):
        if path.stem.endswith("_desc") or LOCALISED.search(path.stem):
            continue
        rel = path.relative_to(root / "usr/share/tuxpaint/stamps")
        if rel.parts[0] not in {"animals", "hobbies", "household", "seasonal"}:
            continue
        label = _rule_label(path.stem.replace("-", "_"), NAME_RULES)
        if label is None and rel.parts[0] == "animals" and "birds" in rel.parts:
            label = "bird"
        if label:
            clips.append(Clip("tuxpaint-stamps-default", f"tuxpaint/{path.stem}", label, path=path))
    return clips


def read_rcc(path: Path) -> dict[str, bytes]:
    """Files inside a Qt resource (``.rcc``, format versions 1-3): {"dir/name": bytes}."""
    buf = path.read_bytes()
    if buf[:4] != b"qres":
        raise ValueError(f"{path}: not a Qt resource file")
    version, tree, data, names = struct.unpack(">IIII", buf[4:20])
    node_size = 14 if version == 1 else 22

    def name_at(off: int) -> str:
        n = struct.unpack(">H", buf[names + off : names + off + 2])[0]
        return buf[names + off + 6 : names + off + 6 + 2 * n].decode("utf-16-be")

    out: dict[str, bytes] = {}

    def walk(node: int, prefix: str) -> None:
        base = tree + node * node_size
        name_off, flags = struct.unpack(">IH", buf[base : base + 6])
        name = name_at(name_off) if node else ""
        if flags & 0x02:  # directory
            count, first = struct.unpack(">II", buf[base + 6 : base + 14])
            for child in range(first, first + count):
                walk(child, f"{prefix}{name}/" if node else "")
            return
        off = struct.unpack(">I", buf[base + 10 : base + 14])[0]
        size = struct.unpack(">I", buf[data + off : data + off + 4])[0]
        blob = buf[data + off + 4 : data + off + 4 + size]
        if flags & 0x01:  # zlib, behind a 4-byte uncompressed length
            blob = zlib.decompress(blob[4:])
        elif flags & 0x04:  # zstd: not used for audio in practice
            return
        out[prefix + name] = blob

    walk(0, "")
    return out


def gcompris_clips(root: Path) -> list[Clip]:
    clips = []
    for rcc in sorted(root.glob("usr/share/gcompris-qt/rcc/*.rcc")):
        if not re.search(r"animal|memory-sound", rcc.stem):
            continue
        for name, blob in sorted(read_rcc(rcc).items()):
            stem = Path(name).stem
            if Path(name).suffix.lower() not in AUDIO_EXT or LOCALISED.search(stem) or "voices" in name:
                continue
            label = _rule_label(stem.replace("-", "_"), NAME_RULES)
            if label:
                clips.append(Clip("gcompris-qt-data", f"gcompris/{stem}", label, data=blob, name=f"{rcc.stem}-{stem}"))
    return clips


COLLECTORS = {
    "hydrogen-drumkits": hydrogen_clips, "sonic-pi-samples": sonic_pi_clips, "bucklespring-data": bucklespring_clips,
    "hedgewars-data": hedgewars_clips, "scratch": scratch_clips, "tuxpaint-stamps-default": tuxpaint_clips,
    "gcompris-qt-data": gcompris_clips,
}


# ----------------------------------------------------------------------------------------- audio
def _load(clip: Clip) -> np.ndarray | None:
    import io

    import librosa
    import soundfile as sf

    try:
        src = io.BytesIO(clip.data) if clip.data is not None else str(clip.path)
        y, sr = sf.read(src, dtype="float32", always_2d=True)
    except (RuntimeError, sf.LibsndfileError):
        return None
    y = y.mean(axis=1)
    if sr != SAMPLE_RATE:
        y = librosa.resample(y, orig_sr=sr, target_sr=SAMPLE_RATE)
    y = y[: int(MAX_SECONDS * SAMPLE_RATE)]
    peak = float(np.abs(y).max()) if len(y) else 0.0
    if len(y) < SAMPLE_RATE // 20 or not np.isfinite(peak) or peak < 1e-4:
        return None  # shorter than 50 ms, silent or broken: not a usable recording
    return (y / peak * 0.9).astype(np.float32)


def _write_wav(path: Path, y: np.ndarray) -> None:
    import soundfile as sf

    sf.write(str(path), y, SAMPLE_RATE, subtype="PCM_16")


# ----------------------------------------------------------------------------------------- split
def split_groups(labels: list[str], groups: list[str], *, test_share: float, seed: int) -> np.ndarray:
    """Boolean test mask: whole groups, stratified by label (StratifiedGroupKFold, 1/test_share folds)."""
    from sklearn.model_selection import StratifiedGroupKFold

    n_splits = max(2, round(1 / test_share))
    skf = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    _, test_idx = next(iter(skf.split(np.zeros(len(labels)), labels, groups)))
    mask = np.zeros(len(labels), bool)
    mask[test_idx] = True
    return mask


def _mix(waves: list[np.ndarray], rng: np.random.Generator) -> np.ndarray:
    n = max(len(w) for w in waves)
    out = np.zeros(n, np.float32)
    for w in waves:
        off = int(rng.integers(0, n - len(w) + 1))
        out[off : off + len(w)] += w * float(rng.uniform(0.5, 1.0))
    return (out / max(1e-6, np.abs(out).max()) * 0.9).astype(np.float32)


def build_dataset(out: Path, *, packages_dir: Path, min_clips: int = 10, max_per_label_source: int = 40,
                  test_share: float = 0.25, n_mixtures: int | None = None, seed: int = 0) -> dict:
    """Build (once) the data set in ``out``; returns its manifest. A rerun with the same parameters
    does nothing; other parameters rebuild it (only a folder this function made is replaced)."""
    params = dict(packages=list(PACKAGES), min_clips=min_clips, max_per_label_source=max_per_label_source,
                  test_share=test_share, n_mixtures=n_mixtures, seed=seed, max_seconds=MAX_SECONDS, version=2)
    manifest_path = out / "manifest.json"
    if manifest_path.exists():
        old = json.loads(manifest_path.read_text())
        if old.get("params") == params:
            return old
        shutil.rmtree(out)
    elif out.exists() and any(out.iterdir()):
        raise SystemExit(f"{out}: exists and was not made by this script; choose another --data-dir")
    rng = np.random.default_rng(seed)
    roots = fetch_packages(packages_dir)
    clips: list[Clip] = []
    for pkg, collect in COLLECTORS.items():
        found = collect(roots[pkg])
        by_label: dict[str, list[Clip]] = {}
        for c in found:
            by_label.setdefault(c.label, []).append(c)
        for cs in by_label.values():  # cap each (label, package): no source dominates a label
            if len(cs) > max_per_label_source:
                cs = [cs[i] for i in sorted(rng.choice(len(cs), max_per_label_source, replace=False))]
            clips += cs
    waves = []
    kept = []
    for c in clips:
        y = _load(c)
        if y is not None:
            waves.append(y)
            kept.append(c)
    clips = kept
    counts: dict[str, int] = {}
    for c in clips:
        counts[c.label] = counts.get(c.label, 0) + 1
    keep = {lab for lab, n in counts.items() if n >= min_clips}
    idx = [i for i, c in enumerate(clips) if c.label in keep]
    test = split_groups([clips[i].label for i in idx], [clips[i].group for i in idx], test_share=test_share,
                        seed=seed)
    train_labels = {clips[i].label for i, t in zip(idx, test) if not t}
    test_labels = {clips[i].label for i, t in zip(idx, test) if t}
    vocab = sorted(train_labels & test_labels)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    for d in ("train_curated", "train_noisy", "test"):
        (tmp / d).mkdir(parents=True)
    cur_rows, test_rows, singles = [], [], []
    for i, t in zip(idx, test):
        c = clips[i]
        if c.label not in vocab:
            continue
        fname = hashlib.sha1(f"{c.group}/{c.path or c.name}".encode()).hexdigest()[:10] + ".wav"
        _write_wav(tmp / ("test" if t else "train_curated") / fname, waves[i])
        (test_rows if t else cur_rows).append((fname, c.label, "single", c.group))
        if t:
            singles.append((i, fname))
    n_mix = n_mixtures if n_mixtures is not None else len(singles) // 2
    for m in range(n_mix):  # 2-3 test clips of different labels and groups, summed at random offsets
        k = int(rng.integers(2, 4))
        picks: list[int] = []
        for j in rng.permutation(len(singles)):
            c = clips[singles[j][0]]
            if all(c.label != clips[singles[p][0]].label and c.group != clips[singles[p][0]].group for p in picks):
                picks.append(int(j))
            if len(picks) == k:
                break
        labs = sorted({clips[singles[p][0]].label for p in picks})
        fname = f"mix{m:04d}.wav"
        _write_wav(tmp / "test" / fname, _mix([waves[singles[p][0]] for p in picks], rng))
        test_rows.append((fname, ",".join(labs), "mixture", "+".join(clips[singles[p][0]].group for p in picks)))
    import pandas as pd

    pd.DataFrame(cur_rows, columns=["fname", "labels", "kind", "group"])[["fname", "labels"]].to_csv(
        tmp / "train_curated.csv", index=False)
    pd.DataFrame(columns=["fname", "labels"]).to_csv(tmp / "train_noisy.csv", index=False)
    tl = pd.DataFrame(test_rows, columns=["fname", "labels", "kind", "group"])
    tl.to_csv(tmp / "test_labels.csv", index=False)
    sub = pd.DataFrame(0.0, index=range(len(tl)), columns=vocab)
    sub.insert(0, "fname", tl["fname"])
    sub.to_csv(tmp / "sample_submission.csv", index=False)
    per_label = {lab: {"train": sum(r[1] == lab for r in cur_rows),
                       "test": sum(r[1] == lab for r in test_rows if r[2] == "single")} for lab in vocab}
    manifest = {
        "params": params, "vocab": vocab, "n_train": len(cur_rows), "n_test_single": len(singles),
        "n_test_mixture": n_mix, "per_label": per_label,
        "groups": {"train": len({r[3] for r in cur_rows}), "test": len({r[3] for r in test_rows if r[2] == "single"})},
        "dropped_labels": sorted(set(counts) - set(vocab)),
        "sources": {pkg: (roots[pkg] / ".unpacked").read_text() for pkg in PACKAGES},
    }
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1))
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    return manifest
