"""Scenario ``servers`` (issue #14, target 2): our app under each ASGI server, against
the bare ``websockets`` ceiling at the same load.

Target: frames per server core-second >= 0.9 of the bare server's under the best
server, >= 0.7 under Daphne, both at everyday load and saturated. The servers
(``harness.SERVER_KINDS``): Daphne; Uvicorn with websockets, with wsproto, and with
websockets on uvloop and httptools, and with websockets' sans-I/O implementation on
them; Hypercorn; Granian (one worker). The ceiling is
``alternatives.bare`` (``bench/bare_ws.py``) under the same loads. Each server's own
ceiling is ``bench/bare_asgi.py`` under it: the bare server's protocol, jobs and
frames as a raw ASGI application (no Django, no Channels), measured the same way
(``alternatives.bare`` with that server). Ours over it is what the library costs
under that server; it over the bare server is what the server itself costs. The
original example's design (a loop in each consumer, under Daphne: what nothing of
ours should cost more per frame than) runs at the same loads.

Two loads: everyday, 1,000 watchers over 100 jobs at 1 update/s; saturated, 2,000
watchers over 200 jobs at 5 updates/s (10,000 frames/s offered). No page probe in
these runs (the other scenarios probe a page meanwhile): a Django page's CPU would be
counted as the frames' price, and a bare page's is not the same price.

Per row: the figures of ``watchers.run``, frames per server core-second, its ratio
to the bare server's at the same load and, for our app, its ratio to the ceiling of
the same server. Each server's ceiling is measured just before our app under it. A
server that fails to start or to serve is a failed row with its reason. Run only
when named (``--only servers``): thirty-two runs take ~6 min quick, ~17 min full.
``--watchers W`` scales both loads (W over W/10 jobs at 1/s, 2W over W/5 at 5/s),
``--window S`` sets the window.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from . import alternatives, fanout, harness
from .watchers import Load

NAME = "servers"
#: Our app's servers, in the order measured (keys of ``harness.SERVER_KINDS``).
KINDS = [
    "daphne",
    "uvicorn",
    "uvicorn-wsproto",
    "uvicorn-fast",
    "uvicorn-sansio",
    "hypercorn",
    "granian",
]
BARE = "bare websockets"
#: The original example's design (a loop in each consumer, Daphne): nothing of ours
#: should cost more per frame.
EXAMPLE = "example: loop in consumer (daphne)"
#: The row of ``bench/bare_asgi.py`` under one server: that server's ceiling.
CEILING = "bare ASGI under {}"
QUICK_WINDOW = 5.0
FULL_WINDOW = 15.0
#: Set by ``--watchers`` and ``--window`` (None: the defaults).
WATCHERS: int | None = None
WINDOW: float | None = None
#: Set by ``--server`` and ``--load``: only these of our servers (each with its
#: ceiling; the bare server and the example always run) and loads (None: all).
ONLY_KINDS: list[str] | None = None
ONLY_LOADS: list[str] | None = None
#: Ratio of frames/core-s to the bare server's that target 2 asks: best server, Daphne.
TARGET_BEST = 0.9
TARGET_DAPHNE = 0.7

COLUMNS = [
    ("load", "load"),
    ("variant", "server"),
    ("watchers", "W"),
    ("jobs", "J"),
    ("rate", "R/s"),
    ("frames_per_s", "frames/s"),
    ("delivered_pct", "deliv %"),
    ("server_cpu", "srv CPU"),
    ("frames_per_core_s", "frames/core-s"),
    ("ratio_to_bare", "/ bare"),
    ("ratio_error_pct", "+-%"),
    ("ratio_to_server_ceiling", "/ ceiling"),
    ("ceiling_error_pct", "+-%"),
    ("p50_ms", "p50 ms"),
    ("p99_ms", "p99 ms"),
    ("terminal_lost", "lost"),
    ("server_peak_rss_mb", "RSS peak MB"),
    ("client_cpu_max", "client CPU"),
    ("other_load", "other load"),
]


def loads(full: bool) -> dict[str, Load]:
    """The everyday and the saturated load, scaled by ``WATCHERS`` when set."""
    window = WINDOW or (FULL_WINDOW if full else QUICK_WINDOW)
    watchers = WATCHERS or 1000
    every = {
        "everyday": Load(watchers, max(1, watchers // 10), 1.0, window),
        "saturated": Load(2 * watchers, max(1, watchers // 5), 5.0, window),
    }
    return {name: load for name, load in every.items() if name in (ONLY_LOADS or every)}


def ceiling(kind: str) -> str:
    return CEILING.format(kind)


def measure(variant: str, load: Load, workdir: Path) -> dict[str, Any]:
    kinds = {ceiling(kind): kind for kind in KINDS}
    if variant == BARE:
        row = alternatives.bare(load, workdir, probe=False)
    elif variant == EXAMPLE:
        row = alternatives.example(load, workdir, probe=False)
    elif variant in kinds:
        server = harness.bare_asgi_server(kinds[variant], workdir)
        row = alternatives.bare(load, workdir, probe=False, server=server)
    else:
        row = fanout.measure_ours(variant, load, workdir)
    row = dict(row)
    row.pop("terminal_times", None)
    return alternatives.with_derived(variant, row)


def run(full: bool) -> dict[str, Any]:
    rows: list[dict[str, Any]] = []
    summary: list[str] = []
    chosen = loads(full)
    with tempfile.TemporaryDirectory(prefix="lp-bench-") as tmp:
        workdir = Path(tmp)
        for load_name, load in chosen.items():
            measured = []
            kinds = [kind for kind in KINDS if kind in (ONLY_KINDS or KINDS)]
            variants = [BARE, EXAMPLE, *(name for kind in kinds for name in (ceiling(kind), kind))]
            for variant in variants:
                harness.log(f"servers: {load_name}, {variant}")
                try:
                    row = measure(variant, load, workdir)
                except Exception as exc:
                    harness.log(f"servers: {variant} failed: {type(exc).__name__}: {exc}")
                    row = {
                        "variant": variant,
                        "failed": f"{type(exc).__name__}: {exc}",
                        "watchers": load.watchers,
                        "jobs": load.jobs,
                        "rate": load.rate,
                    }
                row["load"] = load_name
                measured.append(row)
            bare = measured[0]
            by_variant = {row["variant"]: row for row in measured}
            for row in measured:
                row["ratio_to_bare"] = harness.ratio(
                    bare.get("frames_per_core_s"), row.get("frames_per_core_s")
                )
                if row is not bare and row["ratio_to_bare"] is not None:
                    row["ratio_error_pct"] = round(100 * (_cpu_error(row) + _cpu_error(bare)), 1)
                if row["variant"] in KINDS:
                    top = by_variant[ceiling(row["variant"])]
                    row["ratio_to_server_ceiling"] = harness.ratio(
                        top.get("frames_per_core_s"), row.get("frames_per_core_s")
                    )
                    if row["ratio_to_server_ceiling"] is not None:
                        row["ceiling_error_pct"] = round(
                            100 * (_cpu_error(row) + _cpu_error(top)), 1
                        )
            rows += measured
            ours = [row for row in measured if row["variant"] in KINDS]
            summary.append(_verdict(load_name, ours))
            summary.append(_ceilings(load_name, ours, by_variant))
    window = next(iter(chosen.values())).window
    text = harness.table(
        f"Servers: our app under each server, each server's ceiling (bare ASGI) and the "
        f"bare websockets ceiling (window {window:g} s); / bare = frames per server "
        "core-second over the bare websockets server's, / ceiling = ours over the bare "
        "ASGI app's under the same server",
        COLUMNS,
        rows,
    )
    for line in [f"  {row['load']}, {row['variant']}: {row['failed']}" for row in rows
                 if row.get("failed")] + summary:  # fmt: skip
        print(line, flush=True)
        text += "\n" + line
    return {
        "loads": {name: vars(load) for name, load in chosen.items()},
        "targets": {"best": TARGET_BEST, "daphne": TARGET_DAPHNE},
        "rows": rows,
        "summary": summary,
        "table": text,
    }


def _cpu_error(row: dict[str, Any]) -> float:
    """Relative error of a row's server CPU: the kernel counts it in clock ticks (10 ms),
    user and system apart, in each process; at everyday load the ceiling spends a few
    tenths of a CPU second in a window, so the ratio's error is printed beside it."""
    seconds = (row.get("server_cpu") or 0.0) * (row.get("window_s") or 0.0)
    if not seconds:
        return 0.0
    processes = max(1, len(row.get("server_cpu_each") or []))
    return 2 * processes / os.sysconf("SC_CLK_TCK") / seconds


def _verdict(load_name: str, rows: list[dict[str, Any]]) -> str:
    """Target 2 at one load: the best server's ratio to bare, and Daphne's; a ratio whose
    error reaches across the target is undecided."""
    measured = {row["variant"]: row for row in rows if row.get("ratio_to_bare")}
    if not measured:
        return (
            f"  {load_name}: no ratio (no server measured, or the bare server's CPU too "
            "small to read over this window)"
        )
    best = max(measured, key=lambda kind: measured[kind]["ratio_to_bare"])

    def verdict(kind: str, target: float) -> str:
        row = measured.get(kind)
        if row is None:
            return f"{kind} not measured (target {target:g})"
        value, error = row["ratio_to_bare"], row.get("ratio_error_pct", 0.0) / 100
        if abs(value - target) <= value * error:
            outcome = "undecided within the error"
        else:
            outcome = "met" if value >= target else "not met"
        return (
            f"{kind} {value:g} +-{row.get('ratio_error_pct', 0.0):g} % of bare "
            f"(target {target:g}: {outcome})"
        )

    return f"  {load_name}: best {verdict(best, TARGET_BEST)}; {verdict('daphne', TARGET_DAPHNE)}"


def _best(rows: list[dict[str, Any]]) -> str | None:
    """The server under which our app's ratio to bare is highest (None: none measured)."""
    measured = [row for row in rows if row.get("ratio_to_bare")]
    return max(measured, key=lambda row: row["ratio_to_bare"])["variant"] if measured else None


def _ceilings(
    load_name: str, ours: list[dict[str, Any]], by_variant: dict[str, dict[str, Any]]
) -> str:
    """What the server itself costs at one load: for Daphne and for the best server
    (ours' best ratio to bare), the server's ceiling as a fraction of the bare
    websockets server, and ours as a fraction of that ceiling."""

    def one(kind: str, label: str = "") -> str:
        top = by_variant.get(ceiling(kind), {})
        value = top.get("ratio_to_bare")
        if value is None:
            why = top.get("failed") or "no frames/core-s"
            return f"{label}{kind}: ceiling not measured ({why})"
        text = f"{label}{kind}: ceiling {value:g} +-{top.get('ratio_error_pct', 0.0):g} % of bare"
        mine = by_variant.get(kind, {}).get("ratio_to_server_ceiling")
        if mine is not None:
            text += f", ours {mine:g} +-{by_variant[kind].get('ceiling_error_pct', 0.0):g} % of it"
        return text

    best = _best(ours)
    parts = [one("daphne")]
    parts.append(one(best, "best server ") if best else "best server: none measured")
    return f"  {load_name}, server ceilings (bare ASGI / bare websockets): " + "; ".join(parts)
