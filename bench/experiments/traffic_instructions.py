"""One-off: instructions per request of each in-process traffic step, counted by callgrind
(not in `make bench`).

    python -m bench.experiments.traffic_instructions [--root PATH] [STEP ...]

Steps (default: all of them): `slot` (the cache key and its lookup), `store` (slot + storing
the answer), `admit` (Traffic.admit: limits, x-ratelimit headers), `settle` (admit + settle),
`all` (what make bench's traffic variant adds: a key rpm + tpm limit and a cache miss).
Each step runs the same loop as `bench/traffic_overhead.py`'s traffic variant (parse a chat
body, make a request and a usage record) under valgrind twice, 1,000 and 3,000 requests, and
reports ((3,000-run − 1,000-run) − the same for the loop with no step) ÷ 2,000. Hash seeds
are fixed (PYTHONHASHSEED=0), so a count repeats to the instruction; timings on this VM move
±40 % between runs of the same code, which is why this exists. ~15 s per run, 4 runs a step.

2026-12-02: admit 66,073 (`--root` a checkout of 456e7cd) → 52,064 after LimitPlan (commit
2384252) → 43,050 on the plan's live slots (LimitPlan.take); admit + settle 60,248 → 51,400.
Afternoon (the same loop, fixed seeds): admit 44,175 → 39,744 with Traffic.admit_now and
LimitPlan.take_now (budgets held on the plan too); admit + settle 53,041 → 46,313.
From an earlier copy of this loop: slot + lookup ~27k, store ~8k, settle ~8k, all ~95k.
Python bytecode is most of every step.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from bench import systems

STEPS = ("slot", "store", "admit", "settle", "all")


def loop(n: int, step: str) -> None:
    """`n` requests through `step` (run inside valgrind; "none" is the bare loop)."""
    import uvloop

    from bench.traffic_overhead import request
    from sluice import config, schema, state
    from sluice.auth import Principal
    from sluice.cache import ResponseCache
    from sluice.limits import Traffic

    LATER = getattr(__import__("sluice.limits").limits, "LATER", object())
    from sluice.pipeline import chat_operation
    from sluice.pricing import Prices
    from sluice.routing import Router
    from sluice.usage import new_record

    s = config.from_mapping(
        {
            "providers": {"openai": {"kind": "openai", "api_key": "sk-bench"}},
            "models": [{"match": "gpt-*", "provider": "openai"}],
            "cache": {"enabled": True},
            "limits": [{"scope": "key", "rpm": 10**9, "tpm": 10**12}],
        }
    )
    slot_on, admit_on = step in ("slot", "store", "all"), step in ("admit", "settle", "all")
    raw = b'{"model":"gpt-4o-mini","max_tokens":16,"messages":[{"role":"user","content":"hi %d"}]}'
    answer = b'{"id":"c1","object":"chat.completion","choices":[]}' * 8

    async def run() -> None:
        st = state.build(None, "", 1, 10_000)
        traffic, cache = Traffic(s, st, Prices(s)), ResponseCache(s.cache, st)
        plan = Router(s, {"openai"}).plan("gpt-4o-mini")
        principal = Principal("static", key_id="tok-1")
        for i in range(n):
            req, op = request(), chat_operation(schema.parse_chat(raw % i))
            rec = new_record("r", "POST", "/v1/chat/completions")
            rec.prompt_tokens, rec.completion_tokens, rec.cost_usd = 60, 20, 0.00002
            slot = cache.open_slot(req, principal, plan, op) if slot_on else None
            ticket = None
            if admit_on:  # as the pipeline does (admit_now: since 2026-12-02, afternoon)
                now = getattr(traffic, "admit_now", None)
                ticket = now(req, principal, plan, op) if now is not None else LATER
                if ticket is LATER:
                    ticket = await traffic.admit(req, principal, plan, op)
            if slot is not None:
                await cache.lookup(req, slot)
                if step in ("store", "all"):
                    cache.store_answer(slot, "openai", answer, None)
            if ticket is not None and step in ("settle", "all"):
                ticket.settle(rec)

    uvloop.run(run())


def count(root: Path, n: int, step: str, work: Path) -> int:
    """callgrind's total for one run of `loop(n, step)` with `root` on the path."""
    # Imported here, in this checkout: the loop itself runs against `root`'s bench package,
    # which may be older than this helper.
    from bench.experiments.instructions import callgrind_total

    out = work / f"callgrind.{step}.{n}.out"
    # This file runs the loop against `root`'s sluice (and its bench.traffic_overhead).
    env = {**os.environ, "PYTHONHASHSEED": "0", "PYTHONPATH": str(root)}
    cmd = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", sys.executable]
    cmd += [__file__, "--loop", str(n), step]
    subprocess.run(cmd, check=True, env=env, capture_output=True, cwd=root)
    return callgrind_total(out)


def main() -> None:
    """Print each step's instructions per request."""
    ap = argparse.ArgumentParser()
    ap.add_argument("steps", nargs="*", help=f"of {', '.join(STEPS)} (default: all)")
    ap.add_argument("--root", type=Path, default=systems.ROOT, help="the checkout to measure")
    ap.add_argument("--loop", type=int, default=0, help=argparse.SUPPRESS)  # inside valgrind
    args = ap.parse_args()
    if args.loop:
        loop(args.loop, args.steps[0])
        return
    steps = args.steps or list(STEPS)
    if unknown := set(steps) - set(STEPS):
        ap.error(f"unknown steps {sorted(unknown)}; choose from {', '.join(STEPS)}")
    if shutil.which("valgrind") is None:
        sys.exit("valgrind is not installed (Debian package valgrind)")
    root = args.root.resolve()
    work = Path(tempfile.mkdtemp(prefix="sluice-traffic-instructions-"))

    def per_request(step: str) -> float:
        return (count(root, 3000, step, work) - count(root, 1000, step, work)) / 2000

    base = per_request("none")
    for step in steps:
        print(f"{step:7s} {per_request(step) - base:10,.0f} instructions per request")


if __name__ == "__main__":
    main()
