"""The human-readable form of a version diff (``infergate-registry diff`` without ``--json``).

This module owns only presentation: it turns the document of :func:`registry.diff.diff_versions` into
text, section by section (lineage, signature, validation metrics, reference profile). Changed values read
``old -> new``; numbers use 4 significant digits and deltas carry a sign; a missing value is ``-``. Long
hashes are shortened to 12 hex digits (``--json`` has them in full). Plain ASCII, so any terminal prints it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from registry.profile import STATS

__all__ = ["render_diff"]

_HASH_FIELDS = ("model_sha256", "data_sha256")


def render_diff(doc: dict[str, Any]) -> str:
    """The text of diff document ``doc``: one block per section, a trailing newline."""
    blocks = [
        f"{doc['model']}: version {doc['v1']} -> version {doc['v2']}",
        _lineage(doc["lineage"]),
        _signature(doc["signature"]),
        _metrics(doc["metrics"]),
        _reference(doc["reference"]),
    ]
    return "\n\n".join(blocks) + "\n"


def _value(value: Any, *, field: str = "") -> str:
    if value is None:
        return "-"
    if field in _HASH_FIELDS and isinstance(value, str):
        return value[:12]
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, str):
        return value if field != "notes" else json.dumps(value)
    return json.dumps(value, sort_keys=True)


def _change(a: Any, b: Any, changed: bool, field: str = "") -> str:
    if not changed:
        return f"{_value(a, field=field)} (same)"
    return f"{_value(a, field=field)} -> {_value(b, field=field)}"


def _lineage(section: dict[str, Any]) -> str:
    lines = ["Lineage"]
    width = max(len(f["field"]) for f in section["fields"]) + 2
    for f in section["fields"]:
        lines.append(f"  {f['field']:<{width}}{_change(f['v1'], f['v2'], f['changed'], f['field'])}")
    params = section["params"]
    differing = [p for p in params if p["change"] != "same"]
    same = [p["name"] for p in params if p["change"] == "same"]
    lines.append("  params" + ("" if params else ": none recorded"))
    name_width = max((len(p["name"]) for p in differing), default=0) + 2
    for p in differing:
        note = "" if p["change"] == "changed" else f" ({p['change']})"
        lines.append(f"    {p['name']:<{name_width}}{_value(p['v1'])} -> {_value(p['v2'])}{note}")
    if same:
        lines.append(f"    unchanged: {', '.join(same)}")
    return "\n".join(lines)


def _spec(spec: dict[str, Any]) -> str:
    return f"{spec['datatype']} {spec['shape']}"


def _signature(section: dict[str, Any]) -> str:
    if section["identical"]:
        return "Signature: identical"
    kind = "breaking" if section["breaking"] else "not breaking"
    lines = [f"Signature: {len(section['changes'])} change(s), {kind}"]
    for c in section["changes"]:
        label = f"{c['side']} {c['name']!r}"
        if c["change"] == "added":
            lines.append(f"  + {label}: {_spec(c['v2'])}")
        elif c["change"] == "removed":
            lines.append(f"  - {label}: {_spec(c['v1'])}")
        else:
            lines.append(f"  ~ {label}: {_spec(c['v1'])} -> {_spec(c['v2'])}")
    lines.extend(f"  breaking: {line}" for line in section["breaking"])
    return "\n".join(lines)


def _metrics(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "Validation metrics: none recorded"
    table = [["Validation metrics", "v1", "v2", "delta"]]
    table += [[f"  {r['name']}", _value(r["v1"]), _value(r["v2"]), _signed(r["delta"])] for r in rows]
    return _table(table)


def _signed(value: float | None) -> str:
    if value is None:
        return "-"
    return "0" if value == 0 else f"{value:+.4g}"


def _reference(section: dict[str, Any]) -> str:
    lines = ["Reference profile (input features)"]
    for key in ("v1", "v2"):
        side = section[key]
        if side["error"] is not None:
            lines.append(f"  {key}: {side['error']}")
        else:
            skipped = (
                f", skipped (not numeric or absent): {', '.join(side['skipped'])}" if side["skipped"] else ""
            )
            lines.append(f"  {key}: {side['rows']} rows, {side['columns']} input columns{skipped}")
    features = section["features"]
    if not features:
        return "\n".join(lines)
    header = ["  feature"] + [f"{stat} {col}" for stat in STATS for col in ("v1", "v2", "delta")]
    table = [header]
    for f in features:
        row = [f"  {f['feature']}"]
        for stat in STATS:
            a = None if f["v1"] is None else f["v1"][stat]
            b = None if f["v2"] is None else f["v2"][stat]
            row += [_value(a), _value(b), _signed(None if f["delta"] is None else f["delta"][stat])]
        table.append(row)
    lines.append(_table(table))
    nonfinite = []
    for f in features:
        counts = [None if f[k] is None else f[k]["nonfinite"] for k in ("v1", "v2")]
        if any(counts):
            nonfinite.append(f"{f['feature']} ({_value(counts[0])} / {_value(counts[1])})")
    if nonfinite:
        lines.append(f"  stats over finite values; NaN or inf counts (v1 / v2): {', '.join(nonfinite)}")
    if section["truncated"]:
        lines.append(f"  (showing the first {section['max_columns']} columns; --columns N shows more)")
    return "\n".join(lines)


def _table(rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True))
        ).rstrip()
        for r in rows
    )
