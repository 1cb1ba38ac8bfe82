"""``python -m bench [--full] [--only NAME ...]``: run the scenarios, print tables, write JSON.

The quick pass (default) runs every scenario at small sizes in about 4 minutes;
``--full`` runs the whole matrix of BENCHMARKS.md. Each scenario prints its table
and writes ``bench/results/<scenario>.json`` with the figures, the machine, and the
machine's load before it started (other work on the machine skews the figures).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import signal
import sys
import time
from collections.abc import Callable
from typing import Any

from . import (
    alternatives,
    engines,
    fanout,
    harness,
    nonblocking,
    ownerlist,
    servers,
    throughput,
)

SCENARIOS: dict[str, Callable[[bool], dict[str, Any]]] = {
    fanout.NAME: fanout.run,
    fanout.FINALE_NAME: fanout.run_finale,
    fanout.PROCS_NAME: fanout.run_procs,
    nonblocking.NAME: nonblocking.run,
    throughput.NAME: throughput.run,
    alternatives.NAME: alternatives.run,
    engines.NAME: engines.run,
    ownerlist.NAME: ownerlist.run,
    servers.NAME: servers.run,
}


#: Run only when named with --only: ``procs`` starts its own Redis and takes ~6 min,
#: ``servers`` runs thirty-two times (seven servers, their seven ceilings, the bare
#: websockets one and the original example, two loads), ~6 min.
OPT_IN = {fanout.PROCS_NAME, servers.NAME}


def _interrupt(signum: int, frame: object) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # once: let the clean-up finish
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--full", action="store_true", help="the whole matrix (default: quick)")
    parser.add_argument(
        "--only",
        action="append",
        choices=list(SCENARIOS),
        help="run only this scenario (repeatable; default: all but procs and servers)",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="py-spy record the server over each window (bench/results/profiles/)",
    )
    parser.add_argument(
        "--watchers",
        type=int,
        metavar="W",
        help="fan-out and alternatives at W watchers over W/10 jobs only (default: the "
        "matrix); servers at W over W/10 at 1/s and 2W over W/5 at 5/s",
    )
    parser.add_argument(
        "--other-load",
        type=int,
        default=0,
        metavar="N",
        help="keep N cores busy with other work meanwhile (a shared machine, reproducibly)",
    )
    parser.add_argument(
        "--window",
        type=float,
        metavar="S",
        help="servers: a window of S seconds (default: 5 quick, 15 full)",
    )
    parser.add_argument(
        "--server",
        action="append",
        choices=servers.KINDS,
        help="servers: only this server of ours, with its ceiling (repeatable; default: all)",
    )
    parser.add_argument(
        "--load",
        action="append",
        choices=["everyday", "saturated"],
        help="servers: only this load (repeatable; default: both)",
    )
    parser.add_argument(
        "--server-settings",
        type=json.loads,
        default={},
        metavar="JSON",
        help="LIVEPROGRESS settings merged into our server's for every run (experiments)",
    )
    parser.add_argument(
        "--tag",
        default="",
        help="write bench/results/<scenario>[-full]-<TAG>.json (keeps an experiment apart)",
    )
    parser.add_argument(
        "--asgi-app",
        default=harness.OUR_APP,
        metavar="MODULE:ATTR",
        help="our server's ASGI application, e.g. a prototype (default: %(default)s)",
    )
    parser.add_argument(
        "--runs",
        type=int,
        metavar="N",
        help="finale: N runs on each database (default: 1 quick, 3 full)",
    )
    parser.add_argument(
        "--database",
        action="append",
        choices=["SQLite", "PostgreSQL"],
        help="finale: only on this database (repeatable; default: both)",
    )
    parser.add_argument(
        "--procs",
        type=int,
        action="append",
        metavar="N",
        help="procs: measure make serve with N server processes (repeatable; default: 1 and 2)",
    )
    args = parser.parse_args(argv)
    if args.procs:
        fanout.PROCS = args.procs
    if args.database:
        fanout.FINALE_DATABASES = args.database
    if args.runs:
        fanout.FINALE_RUNS = {False: args.runs, True: args.runs}
    # SIGTERM unwinds like Ctrl-C, so every server and load generator is stopped.
    signal.signal(signal.SIGTERM, _interrupt)
    harness.OUR_APP = args.asgi_app
    # Quick and full results live side by side: <scenario>.json, <scenario>-full.json.
    harness.TAG = "-".join(filter(None, ["full" if args.full else "", args.tag]))
    harness.SERVER_SETTINGS.update(args.server_settings)
    harness.PROFILE = args.profile
    if args.watchers:
        fanout.QUICK = fanout.FULL = [(args.watchers, max(1, args.watchers // 10))]
        alternatives.QUICK = alternatives.load_for(args.watchers, fanout.QUICK_WINDOW)
        alternatives.FULL = alternatives.load_for(args.watchers, fanout.FULL_WINDOW)
        servers.WATCHERS = args.watchers
        fanout.FINALE_LOAD = dataclasses.replace(fanout.FINALE_LOAD, watchers=args.watchers)
        fanout.PROCS_LOADS = [fanout.Load(args.watchers, max(1, args.watchers // 10), 1.0, 10.0)]
    if args.window:
        servers.WINDOW = args.window
    servers.ONLY_KINDS, servers.ONLY_LOADS = args.server, args.load
    soft, hard = harness.raise_fd_limit()
    machine = harness.machine()
    print(
        f"bench: {'full' if args.full else 'quick'} pass | {machine['nproc']} cores "
        f"{machine['cpu']} | {machine['memory_gb']} GB | Python {machine['python']} | "
        f"Django {machine['versions']['Django']} | open files {soft} | "
        f"load average {machine['loadavg']}",
        flush=True,
    )
    os.chdir(harness.REPO)
    started = time.monotonic()
    failed = []
    for name in args.only or [name for name in SCENARIOS if name not in OPT_IN]:
        scenario_started = time.monotonic()
        loadavg = [round(x, 2) for x in os.getloadavg()]
        print(flush=True)
        try:
            with harness.busy_cores(args.other_load):
                data = SCENARIOS[name](args.full)
        except Exception as exc:
            harness.log(f"{name} failed: {type(exc).__name__}: {exc}")
            failed.append(name)
            continue
        harness.save(
            name,
            {
                "scenario": name,
                "pass": "full" if args.full else "quick",
                "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "seconds": round(time.monotonic() - scenario_started, 1),
                "loadavg_before": loadavg,
                "machine": machine,
                "server_settings": harness.SERVER_SETTINGS,
                "asgi_app": harness.OUR_APP,
                "other_load_asked": args.other_load,
                **data,
            },
        )
    print(f"\nbench: done in {time.monotonic() - started:.0f} s", flush=True)
    if failed:
        print(f"bench: failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
