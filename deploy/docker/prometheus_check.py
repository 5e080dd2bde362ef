"""What `make compose-check` asks the `monitoring` profile's Prometheus, over its HTTP API.

    prometheus_check.py URL EXPR... [--rules FILE] [--timeout S] [--while-pid PID]

Polls until every PromQL expression returns at least one sample (write the condition into the
expression: ``up{job="cxrl-rewards"} == 1`` returns nothing while the target is down) and, with
``--rules``, every alert of that rules file is loaded; then prints each expression's samples.
Gives up after ``--timeout`` seconds, or as soon as process ``--while-pid`` (the run being
scraped) has ended, printing what was still missing. Runs with the project's venv (PyYAML reads the rules).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import yaml


def alert_names(path: Path) -> set[str]:
    """The alerts a Prometheus rules file defines (``groups[].rules[].alert``)."""
    doc = yaml.safe_load(path.read_text()) or {}
    return {
        rule["alert"] for group in doc.get("groups", []) for rule in group.get("rules", []) if "alert" in rule
    }


class BadQuery(Exception):
    """Prometheus refused the expression (HTTP 400): polling again would not help."""


def api(url: str, path: str, **params: str) -> dict:
    """GET ``URL/api/v1/PATH?params`` and return its ``data`` (``OSError`` while it cannot answer)."""
    query = f"?{urllib.parse.urlencode(params)}" if params else ""
    try:
        with urllib.request.urlopen(f"{url.rstrip('/')}/api/v1/{path}{query}", timeout=10) as response:
            body = json.load(response)
    except urllib.error.HTTPError as exc:
        if exc.code == 400:
            raise BadQuery(f"{params}: {json.load(exc).get('error')}") from None
        raise
    if body.get("status") != "success":
        raise OSError(f"{path}: {body.get('errorType')}: {body.get('error')}")
    return body["data"]


def samples(url: str, expr: str) -> list[str]:
    """The samples of an instant query, as ``{labels} value`` strings."""
    out = []
    for series in api(url, "query", query=expr)["result"]:
        labels = ",".join(f'{k}="{v}"' for k, v in sorted(series["metric"].items()))
        out.append(f"{{{labels}}} {series['value'][1]}")
    return out


def loaded_alerts(url: str) -> set[str]:
    groups = api(url, "rules", type="alert")["groups"]
    return {rule["name"] for group in groups for rule in group["rules"]}


def missing(url: str, exprs: list[str], alerts: set[str]) -> tuple[list[str], dict[str, list[str]]]:
    """(what is not there yet, the samples of each expression)."""
    problems, seen = [], {}
    try:
        for expr in exprs:
            seen[expr] = samples(url, expr)
            if not seen[expr]:
                problems.append(f"no sample for {expr}")
        if alerts - (loaded := loaded_alerts(url)):
            problems.append(f"alerts not loaded: {sorted(alerts - loaded)}")
    except (OSError, ValueError, KeyError) as exc:  # not answering yet, or an answer we cannot read
        problems.append(f"{url}: {exc}")
    return problems, seen


def alive(pid: int | None) -> bool:
    if pid is None:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", help="Prometheus, e.g. http://127.0.0.1:9090")
    parser.add_argument("exprs", nargs="+", metavar="EXPR", help="PromQL that must return a sample")
    parser.add_argument("--rules", type=Path, help="rules file whose alerts must all be loaded")
    parser.add_argument("--timeout", type=float, default=180.0, help="seconds to keep polling")
    parser.add_argument("--interval", type=float, default=2.0, help="seconds between polls")
    parser.add_argument("--while-pid", type=int, help="give up when this process has ended")
    args = parser.parse_args(argv)
    alerts = alert_names(args.rules) if args.rules else set()
    if args.rules and not alerts:
        parser.error(f"{args.rules} names no alert")
    deadline = time.monotonic() + args.timeout
    while True:
        try:
            problems, seen = missing(args.url, args.exprs, alerts)
        except BadQuery as exc:
            print(f"prometheus_check: Prometheus refused the query {exc}", file=sys.stderr)
            return 2
        if not problems:
            break
        if time.monotonic() > deadline or not alive(args.while_pid):
            why = (
                f"after {args.timeout:.0f} s" if alive(args.while_pid) else f"process {args.while_pid} ended"
            )
            print(f"prometheus_check: {why}: " + "; ".join(problems), file=sys.stderr)
            return 1
        time.sleep(args.interval)
    for expr, found in seen.items():
        print(f"prometheus_check: {expr} -> {', '.join(found)}")
    if alerts:
        print(f"prometheus_check: {len(alerts)} alerts loaded ({', '.join(sorted(alerts))})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
