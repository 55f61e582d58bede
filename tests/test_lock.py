"""The locked environment: requirements/dev.lock pins everything `.[dev]` needs, with hashes, inside the ranges
pyproject.toml keeps for users; `make setup` installs only from it; tools/lockdiff.py names what moved."""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[1]
LOCK = REPO / "requirements" / "dev.lock"


def _load_lockdiff():
    spec = importlib.util.spec_from_file_location("lockdiff", REPO / "tools" / "lockdiff.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


lockdiff = _load_lockdiff()


def _lock_entries() -> dict[str, list[str]]:
    """name → the lines of its entry (the pin and its `--hash` continuations)."""
    entries: dict[str, list[str]] = {}
    name = None
    for line in LOCK.read_text().splitlines():
        if re.match(r"^[A-Za-z0-9]", line):
            name = lockdiff.normalize(line.split("==")[0])
            entries[name] = [line]
        elif name and line.strip().startswith("--hash="):
            entries[name].append(line)
    return entries


def test_every_locked_package_has_a_pin_and_a_hash():
    entries = _lock_entries()
    assert len(entries) > 50
    for name, lines in entries.items():
        assert "==" in lines[0], f"{name} is not pinned: {lines[0]}"
        assert len(lines) > 1, f"{name} has no --hash: pip --require-hashes would refuse the lock"


def test_the_lock_holds_the_cpu_torch_and_the_build_backend():
    locked = lockdiff.read_lock(LOCK)
    assert locked["torch"].endswith("+cpu")
    # The CPU wheel needs none of the CUDA packages (gigabytes each): one here means a CUDA torch got locked.
    assert not [name for name in locked if name.startswith("nvidia-") or name == "triton"]
    assert "setuptools" in locked  # `pip install --no-deps --no-build-isolation -e .` builds with it


def _pyproject_requirements() -> list[Requirement]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    named = list(project["dependencies"]) + [req for reqs in project["optional-dependencies"].values() for req in reqs]
    return [Requirement(req) for req in named if Requirement(req).name != "audioclf"]


def test_the_lock_pins_every_dependency_inside_pyprojects_range():
    """A new dependency or a raised floor in pyproject.toml without `make lock` fails here, not on a user's box."""
    locked = lockdiff.read_lock(LOCK)
    requirements = _pyproject_requirements()
    assert {"torch", "onnxruntime", "fastapi", "av"} <= {lockdiff.normalize(req.name) for req in requirements}
    for req in requirements:
        name = lockdiff.normalize(req.name)
        assert name in locked, f"pyproject.toml needs {req}, the lock lacks it: run `make lock`"
        assert req.specifier.contains(locked[name], prereleases=True), \
            f"the lock's {name} {locked[name]} is outside pyproject.toml's {req}: run `make lock`"


def _make_dry_run(target: str, tmp_path: Path) -> str:
    if shutil.which("make") is None:
        pytest.skip("no make on this machine")
    done = subprocess.run(["make", "-n", "-C", str(REPO), target, f"VENV={tmp_path / 'venv'}"],
                          capture_output=True, text=True, check=True)
    return done.stdout


def test_make_setup_installs_only_from_the_lock(tmp_path):
    commands = [line for line in _make_dry_run("setup", tmp_path).splitlines() if "pip install" in line]
    assert len(commands) == 2
    from_lock, project = commands
    assert "--require-hashes" in from_lock and "--no-deps" in from_lock and "-r requirements/dev.lock" in from_lock
    assert "--no-deps" in project and "--no-build-isolation" in project and "-e ." in project


def test_ci_runs_test_latest_between_the_suites_and_ends_with_the_slow_one():
    """CI's judge reads the last pytest summary: that of the slow suite, on the locked set."""
    steps = re.findall(r"^\s*(?:\S+=\S+\s+)?make (test[\w-]*)", (REPO / ".ci" / "run").read_text(), flags=re.M)
    assert steps == ["test", "test-latest", "test-slow"]


def test_moved_names_each_package_that_differs_from_the_lock():
    locked = {"onnxruntime": "1.27.0", "numpy": "2.4.6", "gone-pkg": "1.0"}
    installed = {"onnxruntime": "1.28.1", "numpy": "2.4.6", "new-pkg": "0.3"}
    assert lockdiff.moved(locked, installed) == [
        "onnxruntime 1.27.0 → 1.28.1", "new-pkg 0.3 (new, not in the lock)",
        "gone-pkg 1.0 (locked, no longer installed)"]
    assert lockdiff.moved(locked, dict(locked)) == []


def test_read_lock_normalizes_names_and_skips_hashes_and_comments(tmp_path):
    lock = tmp_path / "x.lock"
    lock.write_text("# header\nScikit_Learn==1.9.1 \\\n    --hash=sha256:ab\n    # via audioclf\n"
                    "torch==2.13.0+cpu \\\n    --hash=sha256:cd\n")
    assert lockdiff.read_lock(lock) == {"scikit-learn": "1.9.1", "torch": "2.13.0+cpu"}


def test_a_failure_banner_names_what_moved_and_exits_1(tmp_path, monkeypatch, capsys):
    lock = tmp_path / "dev.lock"
    lock.write_text("onnxruntime==1.27.0 \\\n    --hash=sha256:ab\nnumpy==2.4.6 \\\n    --hash=sha256:cd\n")
    monkeypatch.setattr(lockdiff, "installed_versions", lambda: {"onnxruntime": "1.28.1", "numpy": "2.4.6"})
    assert lockdiff.main([str(lock), "--failed", "the tests"]) == 1
    first = capsys.readouterr().out.splitlines()[0]
    assert first.startswith("!!! NEWEST VERSIONS BREAK AUDIOCLF: the tests failed")
    assert first.endswith("Moved: onnxruntime 1.27.0 → 1.28.1")

    assert lockdiff.main([str(lock)]) == 0  # the tests passed: the difference is shown, nothing fails
    assert "onnxruntime 1.27.0 → 1.28.1" in capsys.readouterr().out


def test_a_file_that_is_no_lock_is_a_one_line_error(tmp_path, capsys):
    not_a_lock = tmp_path / "notes.txt"
    not_a_lock.write_text("just words\n")
    assert lockdiff.main([str(not_a_lock)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and str(not_a_lock) in err and "lock" in err
    assert lockdiff.main([str(tmp_path / "missing.lock")]) == 2
    assert "missing.lock" in capsys.readouterr().err


def test_write_readme_replaces_only_the_tested_versions(tmp_path):
    locked = {name: f"1.{i}" for i, name in enumerate(lockdiff.KEY_PACKAGES)}
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\nbefore\n{lockdiff.README_START}\nold line\n{lockdiff.README_END}\nafter\n")
    lockdiff.write_readme(readme, locked)
    text = readme.read_text()
    assert text.startswith("# x\nbefore\n") and text.endswith(f"{lockdiff.README_END}\nafter\n")
    assert "old line" not in text and "`torch 1.0`" in text and "`librosa 1.13`" in text.replace("\n", " ")

    no_markers = tmp_path / "OTHER.md"
    no_markers.write_text("# nothing to replace\n")
    with pytest.raises(lockdiff.LockError, match="OTHER.md: no tested-versions markers"):
        lockdiff.write_readme(no_markers, locked)
    assert no_markers.read_text() == "# nothing to replace\n"
