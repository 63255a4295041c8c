"""The package build compiles the translations (setup.py): a wheel built from a clean copy of
the project, straight from the tree (`pip wheel .`) and through an sdist (as `python -m build`
does), carries a .mo for every language but English, which translates as its .po says, and
the unpacked wheel speaks Russian. The copy has the checkout's files that git does not ignore,
so none of the .mo compiled here; the build uses this venv's setuptools and Babel (offline)."""

from __future__ import annotations

import gettext
import io
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from common.i18n import DOMAIN, LANGUAGES
from tests.support.i18n import read_catalog

ROOT = Path(__file__).resolve().parents[2]
TRANSLATED = [lang for lang in LANGUAGES if lang != "en"]
BUILD_TIMEOUT_S = 120


def mo_name(lang: str) -> str:
    return f"common/locale/{lang}/LC_MESSAGES/{DOMAIN}.mo"


def clean_copy(dest: Path) -> Path:
    """The checkout's files that git does not ignore (tracked or new), copied to ``dest``."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source = ROOT / name
        if source.is_file():  # a tracked file deleted in the working tree is left out
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)
    assert (dest / "setup.py").is_file() and (dest / "pyproject.toml").is_file()
    assert not list(dest.rglob("*.mo")), "the clean copy has compiled catalogs"
    return dest


def build(args: list[str], cwd: Path) -> None:
    done = subprocess.run(
        [sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def pip_wheel(project: Path, out: Path) -> Path:
    build(
        ["-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(out), "."],
        project,
    )
    (wheel,) = out.glob("*.whl")
    return wheel


@pytest.fixture(scope="module", params=["tree", "sdist"])
def wheel(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp(f"build-{request.param}")
    project = clean_copy(tmp / "project")
    if request.param == "sdist":
        # `python -m build`'s way: the sdist first, the wheel from the unpacked sdist.
        build(
            ["-c", f"from setuptools import build_meta; build_meta.build_sdist({str(tmp)!r})"],
            project,
        )
        (sdist,) = tmp.glob("*.tar.gz")
        with tarfile.open(sdist) as archive:
            names = archive.getnames()
            assert not [name for name in names if name.endswith(".mo")]
            # The "data" filter where this Python has it (3.11.4 on).
            safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
            archive.extractall(tmp / "unpacked", **safe)
        (project,) = (tmp / "unpacked").iterdir()
    return pip_wheel(project, tmp / "dist")


def test_the_wheel_carries_a_compiled_catalog_for_every_language(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        assert not [name for name in names if name.endswith(".po")], "sources in the wheel"
        for lang in TRANSLATED:
            assert mo_name(lang) in names, (lang, sorted(n for n in names if "locale" in n))
            compiled = gettext.GNUTranslations(io.BytesIO(archive.read(mo_name(lang))))
            catalog = read_catalog(ROOT / "common/locale" / lang / "LC_MESSAGES" / f"{DOMAIN}.po")
            checked = 0
            for message in catalog:
                if not message.id or message.fuzzy:
                    continue
                if isinstance(message.id, tuple | list):
                    got = compiled.ngettext(message.id[0], message.id[1], 1)
                    assert got == message.string[0], message.id
                else:
                    assert compiled.gettext(message.id) == message.string, message.id
                checked += 1
            assert checked > 50, f"{lang}: only {checked} messages"


def test_the_unpacked_wheel_speaks_russian(wheel: Path, tmp_path: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(tmp_path / "site")
    # Its own interpreter, with the unpacked wheel first on the path (before this checkout's
    # editable install), run outside the checkout.
    probe = (
        "import common.i18n as i18n; print(i18n.__file__); "
        "assert not i18n.missing_catalogs(), i18n.missing_catalogs(); "
        "print(i18n.translator('ru').gettext('All'))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=tmp_path,
        env={"PYTHONPATH": str(tmp_path / "site"), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    where, said = done.stdout.splitlines()
    assert Path(where).is_relative_to(tmp_path / "site")
    catalog = read_catalog(ROOT / "common/locale/ru/LC_MESSAGES" / f"{DOMAIN}.po")
    assert said == catalog["All"].string != "All"
