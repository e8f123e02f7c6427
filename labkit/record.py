"""Recorded measurements: numbers measured on one machine, shipped in data/ with their provenance.

A CPU-only student cannot measure an H100, but can be shown what one measured, honestly
labelled. `save` writes data/measurements/<name>.json with the machine, driver, versions,
date and the command that produced it; `load` reads it back and `describe` says where it came
from, for the notebook to print next to the numbers.
"""
import datetime as _dt
import json
import platform
import re
import sys
from pathlib import Path

import torch

from .device import describe_machine, device_name

DATA_DIR = Path(__file__).resolve().parent.parent / "data" / "measurements"
_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")


def _path(name: str, root) -> Path:
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(f"name must be lowercase letters, digits, '.', '-' or '_', got {name!r}")
    return Path(root or DATA_DIR) / f"{name}.json"


def command_line(launcher: str = "python") -> str:
    """This process's command as one would type it again: `launcher script args`, e.g.
    "python scripts/train_cnn.py --epochs 5" (sys.argv as is when no script file is running)."""
    if not sys.argv or not sys.argv[0].endswith(".py"):
        return " ".join(sys.argv)
    return " ".join([launcher, Path(sys.argv[0]).as_posix()] + sys.argv[1:])


def provenance(device=None, command: str | None = None) -> dict:
    """Where a measurement comes from: hardware, driver, software versions, date, command
    (default: command_line())."""
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    prov = {
        "machine": describe_machine(device),
        "device": device_name(device),
        "host_platform": platform.platform(),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": command or command_line(),
    }
    try:
        import triton
        prov["triton"] = triton.__version__
    except ImportError:
        pass
    if device.type == "cuda":
        prov["cuda"] = torch.version.cuda
        try:
            import pynvml
            pynvml.nvmlInit()
            prov["driver"] = pynvml.nvmlSystemGetDriverVersion()
        except Exception as e:  # NVML missing or not permitted: say so rather than guess
            prov["driver"] = f"unknown ({type(e).__name__})"
    return prov


def save(name: str, results, device=None, command: str | None = None, root=None) -> Path:
    """Write results (anything JSON can hold) with provenance to data/measurements/<name>.json."""
    path = _path(name, root)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"provenance": provenance(device, command), "results": results}, indent=2) + "\n")
    return path


def load(name: str, root=None) -> dict:
    """Read a recorded measurement: {"provenance": {...}, "results": ...}."""
    path = _path(name, root)
    if not path.exists():
        have = sorted(p.stem for p in path.parent.glob("*.json")) if path.parent.exists() else []
        raise FileNotFoundError(f"no recorded measurement {name!r} at {path}; recorded here: {have}")
    rec = json.loads(path.read_text())
    if "provenance" not in rec or "results" not in rec:
        raise ValueError(f"{path} is not a labkit measurement record (needs 'provenance' and 'results')")
    return rec


def describe(rec: dict) -> str:
    """One line for a notebook: RECORDED on <device>, <date>, by <command>."""
    p = rec["provenance"]
    return f"RECORDED (not measured here) on {p['machine']}, {p['date']}, by `{p['command']}`"
