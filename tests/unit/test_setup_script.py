"""``scripts/setup``: the set-up happens once, and again only when pyproject.toml changes
(``scripts/run`` calls it on every start; pip alone took about 6 s)."""

from __future__ import annotations

import shutil
import stat
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


class Checkout:
    """scripts/setup and pyproject.toml in a directory of their own, whose .venv's
    python is a recording stand-in: ``-m pip`` is noted and does nothing, everything
    else runs on the real interpreter (where the gateway is installed)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        (root / "scripts").mkdir()
        shutil.copy(REPO / "scripts" / "setup", root / "scripts" / "setup")
        shutil.copy(REPO / "pyproject.toml", root / "pyproject.toml")
        python = root / ".venv" / "bin" / "python"
        python.parent.mkdir(parents=True)
        python.write_text(
            "#!/bin/sh\n"
            f'if [ "$1 $2" = "-m pip" ]; then echo "$*" >> "{root}/pip.calls"; exit 0; fi\n'
            f'exec "{sys.executable}" "$@"\n')
        python.chmod(python.stat().st_mode | stat.S_IXUSR)

    def setup(self) -> list[str]:
        """Runs scripts/setup; the pip commands it ran."""
        calls = self.root / "pip.calls"
        calls.unlink(missing_ok=True)
        subprocess.run(["bash", str(self.root / "scripts" / "setup")],  # noqa: S603, S607
                       check=True, timeout=60, capture_output=True)
        return calls.read_text().splitlines() if calls.exists() else []


class TestSetup:
    def test_installs_once_then_skips_while_pyproject_is_unchanged(
            self, tmp_path: Path) -> None:
        checkout = Checkout(tmp_path)
        assert checkout.setup() == ["-m pip install --quiet -e .[test]"]
        assert checkout.setup() == []
        assert checkout.setup() == []

    def test_installs_again_when_pyproject_changes(self, tmp_path: Path) -> None:
        checkout = Checkout(tmp_path)
        checkout.setup()
        pyproject = tmp_path / "pyproject.toml"
        pyproject.write_text(pyproject.read_text().replace('"uvloop==', '"uvloop ==', 1))
        assert checkout.setup() == ["-m pip install --quiet -e .[test]"]
        assert checkout.setup() == []

    def test_a_set_up_interrupted_before_its_end_is_done_again(self, tmp_path: Path) -> None:
        checkout = Checkout(tmp_path)
        checkout.setup()
        (tmp_path / ".venv" / "setup.stamp").unlink()  # pip was stopped half-way
        assert checkout.setup() == ["-m pip install --quiet -e .[test]"]
