"""The translation catalogs for the tests: compiled from the .po files when stale, read
back for the catalog checks (Babel is a dev dependency; the runtime needs only gettext)."""

from __future__ import annotations

import os
from pathlib import Path

from babel.messages.catalog import Catalog
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po

from common.i18n import DOMAIN, LOCALE_DIR


def po_files() -> list[Path]:
    return sorted(LOCALE_DIR.glob(f"*/LC_MESSAGES/{DOMAIN}.po"))


def read_catalog(po: Path) -> Catalog:
    with po.open("rb") as file:
        return read_po(file)


def compile_catalogs() -> None:
    """``make i18n-compile`` for every .po whose .mo is missing or older (what the tests
    run against is the current .po, even before `make install`)."""
    for po in po_files():
        mo = po.with_suffix(".mo")
        if mo.is_file() and mo.stat().st_mtime >= po.stat().st_mtime:
            continue
        tmp = mo.with_suffix(f".mo.{os.getpid()}")
        with tmp.open("wb") as file:
            write_mo(file, read_catalog(po))
        tmp.replace(mo)
