"""The lock file against what is installed, and the README's tested versions from the lock.

`python tools/lockdiff.py requirements/dev.lock` lists the packages of the running interpreter's environment that
differ from the lock ("onnxruntime 1.32.0 → 1.33.0"); with `--failed WHAT` it prints that as a banner and exits 1
(`make test-latest`). `--write-readme README.md` rewrites the README's tested versions from the lock (`make lock`).
Standard library only: `make lock` runs it with the system Python.
"""

from __future__ import annotations

import argparse
import re
import sys
import textwrap
from importlib import metadata
from pathlib import Path

# The packages whose versions a user compares with their own: the README lists these, in this order.
KEY_PACKAGES = ("torch", "numpy", "scipy", "scikit-learn", "soundfile", "soxr", "onnx", "onnxruntime",
                "fastapi", "starlette", "uvicorn", "optuna", "av", "librosa")
# Installed next to the locked set but never pinned by it: the installer itself and the project.
NOT_LOCKED = {"pip", "audioclf"}
README_START = "<!-- tested-versions: written by `make lock` from requirements/dev.lock -->"
README_END = "<!-- /tested-versions -->"
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)")


class LockError(Exception):
    """A lock or README this script cannot read; main() prints it as one line."""


def normalize(name: str) -> str:
    """PEP 503: `Scikit_Learn` and `scikit-learn` are one package."""
    return re.sub(r"[-_.]+", "-", name).lower()


def read_lock(path: Path) -> dict[str, str]:
    """name → version of every `name==version` line (hash continuations and comments skipped)."""
    try:
        text = Path(path).read_text()
    except OSError as err:
        raise LockError(f"{path}: cannot read the lock ({err.strerror})") from None
    pins = {normalize(m.group(1)): m.group(2) for m in map(_PIN.match, text.splitlines()) if m}
    if not pins:
        raise LockError(f"{path}: no `name==version` lines; is it a lock file?")
    return pins


def installed_versions() -> dict[str, str]:
    """name → version of the running interpreter's environment, less the installer and the project."""
    found = {normalize(dist.metadata["Name"]): dist.version for dist in metadata.distributions()}
    return {name: version for name, version in found.items() if name not in NOT_LOCKED}


def moved(locked: dict[str, str], installed: dict[str, str]) -> list[str]:
    """One line per package that differs, sorted by name: changed versions, then added, then missing ones."""
    changed = [f"{name} {locked[name]} → {installed[name]}" for name in sorted(locked.keys() & installed.keys())
               if locked[name] != installed[name]]
    added = [f"{name} {installed[name]} (new, not in the lock)" for name in sorted(installed.keys() - locked.keys())]
    gone = [f"{name} {locked[name]} (locked, no longer installed)" for name in sorted(locked.keys() - installed.keys())]
    return changed + added + gone


def banner(failed: str, lock: Path, lines: list[str]) -> str:
    """The line CI logs show when the newest versions break something: what failed and every package that moved."""
    what = "; ".join(lines) if lines else "nothing, so `make test` should fail the same way"
    return (f"!!! NEWEST VERSIONS BREAK AUDIOCLF: {failed} failed with the newest versions pyproject.toml allows "
            f"(the locked set is {lock}). Moved: {what}")


def readme_block(locked: dict[str, str]) -> str:
    """The README's tested-versions note, between its markers."""
    missing = [name for name in KEY_PACKAGES if name not in locked]
    if missing:
        raise LockError(f"the lock pins none of {', '.join(missing)}; KEY_PACKAGES in tools/lockdiff.py names them")
    versions = ", ".join(f"`{name} {locked[name]}`" for name in KEY_PACKAGES)
    note = textwrap.fill(f"Tested on Python 3.11 (x86_64 Linux) with {versions}.", width=112)
    return f"{README_START}\n{note}\n{README_END}"


def write_readme(readme: Path, locked: dict[str, str]) -> None:
    text = Path(readme).read_text()
    start, end = text.find(README_START), text.find(README_END)
    if start < 0 or end < start:
        raise LockError(f"{readme}: no tested-versions markers ({README_START} ... {README_END})")
    new = text[:start] + readme_block(locked) + text[end + len(README_END):]
    tmp = Path(readme).with_name(Path(readme).name + ".tmp")  # renamed when complete: never a half-written README
    tmp.write_text(new)
    tmp.replace(readme)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("lock", type=Path)
    parser.add_argument("--failed", metavar="WHAT", help="print a banner naming what failed and what moved; exit 1")
    parser.add_argument("--write-readme", metavar="README", type=Path, help="rewrite its tested versions")
    args = parser.parse_args(argv)
    try:
        locked = read_lock(args.lock)
        if args.write_readme:
            write_readme(args.write_readme, locked)
            return 0
    except LockError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    lines = moved(locked, installed_versions())
    if args.failed:
        print(banner(args.failed, args.lock, lines))
        for line in lines:
            print(f"!!!   {line}")
        return 1
    print(f"newest versions pass; moved from {args.lock}: {'; '.join(lines) if lines else 'nothing'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
