"""A real wheel install next to PyPI's packages that own our folder names breaks nothing.

PyPI's ``simfleet``, ``exporters`` and ``dashboard`` install top-level packages of those names;
before the single ``enginescope.*`` namespace, installing ``simfleet`` overwrote our
``simfleet/__init__.py`` and uninstalling it deleted ours. (PyPI's ``collectors`` sdist does not
build on Python 3, so nothing can install it; the test records that instead of pretending.)
"""

from __future__ import annotations

import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
# Pinned so the test checks the same foreign files every run.
FOREIGN = ("simfleet==2.0.1", "exporters==0.7.0", "dashboard==0.0.6")
CHECK = textwrap.dedent(
    """
    import sys, sysconfig
    from pathlib import Path
    site = Path(sysconfig.get_paths()["purelib"]).resolve()
    import enginescope
    from enginescope.collectors.normalise import Normaliser
    from enginescope.simfleet.engine import SimEngine  # noqa: F401
    import enginescope.exporters.otlp.sink, enginescope.dashboard.data, enginescope.store  # noqa: E401
    for mod in (enginescope.collectors, enginescope.simfleet, enginescope.exporters, enginescope.dashboard):
        assert Path(mod.__file__).resolve().is_relative_to(site / "enginescope"), mod.__file__
    text = Path(sys.argv[1]).read_text()
    normaliser = Normaliser()
    normaliser.process(text, 0.0)
    scrape = normaliser.process(text, 1.0)
    assert scrape.engine == "sglang" and scrape.signals and not scrape.errors, scrape.errors[:3]
    foreign = [name for name in sys.argv[2:] if (site / name / "__init__.py").is_file()]
    print("ok", enginescope.__version__, ",".join(foreign))
    """
)


def _run(*args: str | Path, cwd: Path) -> str:
    proc = subprocess.run([str(a) for a in args], cwd=cwd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{args}: {proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
    return proc.stdout


@pytest.mark.slow
def test_wheel_install_survives_pypi_packages_with_our_folder_names(tmp_path: Path) -> None:
    wheels, venv = tmp_path / "wheels", tmp_path / "venv"
    pip = (sys.executable, "-m", "pip")
    _run(*pip, "wheel", "-q", "--no-deps", REPO, "-w", wheels, cwd=tmp_path)
    _run(*pip, "wheel", "-q", "--no-deps", *FOREIGN, "-w", wheels, cwd=tmp_path)
    built = subprocess.run(
        [*pip, "wheel", "-q", "--no-deps", "collectors", "-w", wheels], capture_output=True
    )
    assert built.returncode != 0, "PyPI's collectors now builds: add it to FOREIGN"
    _run(sys.executable, "-m", "venv", venv, cwd=tmp_path)
    python = venv / "bin" / "python"
    # Dependencies come from the test's own environment, after the scratch site-packages.
    site = Path(
        _run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])", cwd=tmp_path).strip()
    )
    (site / "zz_test_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    ours = next(wheels.glob("enginescope-*.whl"))
    theirs = [p for p in wheels.glob("*.whl") if p != ours]
    assert len(theirs) == len(FOREIGN)
    _run(python, "-m", "pip", "install", "-q", "--no-deps", "--no-index", ours, cwd=tmp_path)
    _run(python, "-m", "pip", "install", "-q", "--no-deps", "--no-index", *theirs, cwd=tmp_path)
    fixture = REPO / "tests" / "fixtures" / "sglang" / "0.5.23-single-gpu" / "metrics.txt"
    names = ("simfleet", "exporters", "dashboard")
    # cwd outside the checkout, so nothing resolves to the source tree
    out = _run(python, "-c", CHECK, fixture, *names, cwd=tmp_path)
    assert out.split() == ["ok", _version(), ",".join(names)]
    assert _run(venv / "bin" / "enginescope", "--version", cwd=tmp_path).split()[-1] == _version()
    _run(python, "-m", "pip", "uninstall", "-q", "-y", "simfleet", "exporters", "dashboard", cwd=tmp_path)
    assert _run(python, "-c", CHECK, fixture, *names, cwd=tmp_path).split() == ["ok", _version()]


def _version() -> str:
    import enginescope

    return enginescope.__version__
