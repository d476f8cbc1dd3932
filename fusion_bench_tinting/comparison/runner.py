"""Running each method of a comparison through the ``fusion_bench`` CLI, resumably.

Every method runs in its own subprocess with its own log folder ``<out>/runs/<method>``. A run whose
``program_report.json`` exists is finished and skipped on the next call; a run that fails leaves
``status.json`` with the reason (the last line of its error) and the others go on. Our methods checkpoint
every :data:`CHECKPOINT_EVERY` task steps, and a run that was killed (a machine's time ran out) continues from
its newest checkpoint on the next call, to the same result as an uninterrupted run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, TextIO

import yaml

from .methods import METHODS, not_available_reason

#: task steps between checkpoints of our methods' runs
CHECKPOINT_EVERY = 100


def resumable(name: str, log_dir: Path) -> List[str]:
    """Our methods' checkpointing overrides, with ``method.resume`` when a killed run left checkpoints."""
    if not METHODS[name].ours:
        return []
    overrides = [f"method.checkpoint_every={CHECKPOINT_EVERY}"]
    if any((log_dir / "checkpoints").glob("checkpoint-*.pt")):
        overrides.append(f"method.resume={log_dir}")
    return overrides


@dataclass
class Suite:
    modelpool: str
    taskpool: str
    config_dirs: List[str] = field(default_factory=list)

    def command(self, overrides: List[str]) -> List[str]:
        """``fusion_bench`` with this suite's config folders (options first, as Hydra's parser needs)."""
        folders = [argument for folder in self.config_dirs for argument in ("--config-dir", folder)]
        return ["fusion_bench", *folders, *overrides, f"modelpool={self.modelpool}", f"taskpool={self.taskpool}"]


@dataclass
class RunResult:
    name: str
    status: str  # finished | failed | not_available
    reason: str = ""
    report: Optional[dict] = None
    seconds: Optional[float] = None
    log_dir: Optional[str] = None
    command: Optional[List[str]] = None
    seed: Optional[int] = None


def composed_config(suite: Suite) -> dict:
    """The run's composed config (``fusion_bench --cfg job``): tells the model pool's class."""
    result = subprocess.run([*suite.command([]), "--cfg", "job"], capture_output=True, text=True, env=dict(os.environ))
    if result.returncode != 0:
        raise RuntimeError(f"fusion_bench cannot compose the suite: {_last_error_line(result.stderr + result.stdout)}")
    return yaml.safe_load(result.stdout)


def _last_error_line(output: str) -> str:
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    stated = [line for line in lines if line.startswith("Configuration error:")]  # our methods' one-line errors
    if stated:
        return stated[-1][:500]
    for line in reversed(lines):
        if "Error" in line or "Exception" in line or line.startswith("Could not"):
            return line[:500]
    return (lines[-1] if lines else "no output")[:500]


def run_to_log(command: List[str], log: TextIO, timeout: Optional[float], echo: bool) -> Optional[int]:
    """Run ``command`` with its output in ``log`` and, when ``echo``, on this terminal as it comes (progress
    bars included); its exit status, or None when it ran past ``timeout`` seconds and was stopped."""
    if not echo:
        try:
            return subprocess.run(
                command, stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ), timeout=timeout
            ).returncode
        except subprocess.TimeoutExpired:
            return None
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=dict(os.environ))
    timer = threading.Timer(timeout, process.kill) if timeout is not None else None
    if timer is not None:
        timer.start()
    try:
        for chunk in iter(lambda: process.stdout.read1(65536), b""):
            text = chunk.decode(errors="replace")
            log.write(text)
            sys.stdout.write(text)
            sys.stdout.flush()
        returncode = process.wait()
    finally:
        if timer is not None:
            timer.cancel()
    timed_out = timer is not None and not timer.is_alive() and returncode < 0
    return None if timed_out else returncode


def run_method(
    name: str,
    family: str,
    suite: Suite,
    out: Path,
    extra: List[str],
    method_overrides: List[str],
    timeout: Optional[float] = None,
    seed: Optional[int] = None,
    start: bool = True,
) -> RunResult:
    """Run method ``name`` once (with ``seed`` when given: its log folder is then ``runs/<name>/seed_<seed>``).
    A finished run is reused; with ``start=False`` a missing one is reported as not run instead of started."""
    reason = not_available_reason(name, family)
    if reason is not None:
        return RunResult(name, "not_available", reason, seed=seed)
    log_dir = out / "runs" / name / (f"seed_{seed}" if seed is not None else "")
    report_path, status_path = log_dir / "program_report.json", log_dir / "status.json"
    if report_path.exists():  # finished by an earlier call
        status = json.loads(status_path.read_text()) if status_path.exists() else {}
        return _finished(name, log_dir, seed, status.get("seconds"), status.get("command"))
    if not start:
        return RunResult(name, "not_run", "no finished run in the output folder", log_dir=str(log_dir), seed=seed)
    return _start_run(name, family, suite, log_dir, extra, method_overrides, timeout, seed)


def _finished(name: str, log_dir: Path, seed: Optional[int], seconds, command) -> RunResult:
    report = json.loads((log_dir / "program_report.json").read_text())
    return RunResult(name, "finished", report=report, seconds=seconds, log_dir=str(log_dir), command=command, seed=seed)


def _start_run(
    name: str,
    family: str,
    suite: Suite,
    log_dir: Path,
    extra: List[str],
    method_overrides: List[str],
    timeout: Optional[float],
    seed: Optional[int],
) -> RunResult:
    """Run the method in a ``fusion_bench`` process logging to ``log_dir/console.log``; record its status."""
    report_path, status_path = log_dir / "program_report.json", log_dir / "status.json"
    seeding = [f"{METHODS[name].seed_key}={seed}"] if seed is not None else []
    checkpointing = resumable(name, log_dir)
    command = suite.command(
        [
            *METHODS[name].overrides_for(family),
            f"path.log_dir={log_dir}",
            "print_config=false",
            *checkpointing,
            *extra,
            *method_overrides,
            *seeding,
        ]
    )
    log_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    resuming = any(o.startswith("method.resume=") for o in checkpointing)
    with open(log_dir / "console.log", "a" if resuming else "w") as console:
        returncode = run_to_log(command, console, timeout, echo=sys.stdout.isatty())
    seconds = round(time.perf_counter() - start, 2)
    output = (log_dir / "console.log").read_text(errors="replace")
    if returncode == 0 and report_path.exists():
        status = {"status": "finished", "seconds": seconds, "command": command}
        status_path.write_text(json.dumps(status, indent=2))
        return _finished(name, log_dir, seed, seconds, command)
    reason = "timed out" if returncode is None else _last_error_line(output)
    status_path.write_text(
        json.dumps({"status": "failed", "reason": reason, "seconds": seconds, "command": command}, indent=2)
    )
    return RunResult(name, "failed", reason, seconds=seconds, log_dir=str(log_dir), command=command, seed=seed)


def seeds_for(name: str, seeds: List[int]) -> List[Optional[int]]:
    """The seeds a method runs with: each of ``seeds`` when it draws at random, else one unseeded run."""
    return list(seeds) if seeds and METHODS[name].seed_key is not None else [None]
