"""docs/FAITHFULNESS.md, generated from the shipped recipe files: per recipe, every value it sets with its
provenance, read from the comment on its line ("write-up: ...", "REFERENCE.md: ...", "not published: fatlib's
choice", "deviates: why"). ``python -m fatlib.faithfulness`` rewrites the file; ``tests/test_faithfulness.py``
fails when a recipe changes and the committed file does not. No torch here.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

# the provenance markers a comment can carry, in the order the table names them
MARKERS = (("deviates", r"\bdeviates\b"), ("write-up", r"write-up"), ("REFERENCE.md", r"REFERENCE\.md"),
           ("not published: fatlib's choice", r"not published"), ("fatlib's choice", r"fatlib's choice"))
DOC = Path(__file__).resolve().parents[1] / "docs" / "FAITHFULNESS.md"
SKIP = {("", "name"), ("", "title")}


def provenance(comment: str) -> str:
    """The markers ``comment`` carries, joined with " + " ("unmarked" when none; "no comment" when empty)."""
    if not comment:
        return "no comment"
    found = [name for name, pattern in MARKERS if re.search(pattern, comment)]
    if "not published: fatlib's choice" in found and "fatlib's choice" in found:
        found.remove("fatlib's choice")
    return " + ".join(found) or "unmarked"


def recipe_rows(path) -> list[dict]:
    """Every value ``path`` (a recipe file) sets, in file order: table, key, value, provenance, comment."""
    from .recipes import _key_lines, _parse

    path = Path(path)
    raw, _ = _parse(path)
    text = path.read_text(encoding="utf-8").splitlines()
    rows = []
    for (table, key), line in sorted(_key_lines("\n".join(text)).items(), key=lambda item: item[1]):
        if (table, key) in SKIP:
            continue
        value = raw
        for part in [*(table.split(".") if table else []), key]:
            value = value.get(part, {}) if isinstance(value, dict) else {}
        src = text[line - 1]
        comment = src.split("#", 1)[1].strip() if "#" in src.split("=", 1)[1] else ""
        rows.append({"table": table or "(top)", "key": key, "value": value, "provenance": provenance(comment),
                     "comment": comment})
    return rows


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def render(paths=None) -> str:
    """The markdown of docs/FAITHFULNESS.md for ``paths`` (default: every shipped recipe)."""
    from .recipes import HERE, list_recipes

    paths = [Path(p) for p in paths] if paths is not None else [HERE / f"{n}.toml" for n in list_recipes()]
    lines = ["# Faithfulness of the shipped recipes", "",
             "Generated from `fatlib/recipes/*.toml` by `python -m fatlib.faithfulness` (do not edit by hand; "
             "`tests/test_faithfulness.py` fails when a recipe changes and this file does not). Each row is a value "
             "a recipe sets and the provenance its comment gives: **write-up** (the solution's write-up states it), "
             "**REFERENCE.md** (only the condensed reference gives it), **not published: fatlib's choice**, "
             "**deviates** (the recipe departs from the write-up, and says why); *unmarked* or *no comment* rows "
             "are values whose comment names none of these (to review). Values a recipe does not set are "
             "StageConfig's defaults (`fatlib/settings.py`), fatlib's choices; `--plan` shows them per stage.", ""]
    for path in paths:
        rows = recipe_rows(path)
        counts: dict = {}
        for r in rows:
            counts[r["provenance"]] = counts.get(r["provenance"], 0) + 1
        lines += [f"## {path.stem}", "", "Values by provenance: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())),
                  "", "| table | key | value | provenance | comment |", "| --- | --- | --- | --- | --- |"]
        lines += [f"| {_cell(r['table'])} | {_cell(r['key'])} | `{_cell(json.dumps(r['value']))}` | {r['provenance']} | "
                  f"{_cell(r['comment'])} |" for r in rows]
        lines.append("")
    return "\n".join(lines)


def write(path=DOC) -> Path:
    from .atomic import write_text

    return write_text(path, render())


if __name__ == "__main__":
    print(write())
