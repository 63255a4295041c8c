"""Languages: who gets which, and the catalogs: every message of the code translated in each
language, with the same placeholders, and compiled catalogs that match the .po files."""

from __future__ import annotations

import gettext
import re
from pathlib import Path

import pytest
from babel.messages.extract import DEFAULT_KEYWORDS, extract_from_file

from common import callback_data as cd
from common.i18n import (
    DOMAIN,
    LANGUAGES,
    LOCALE_DIR,
    catalog_path,
    language_for,
    missing_catalogs,
    translator,
)
from common.jobs import SeparationJob
from tests.support.i18n import po_files, read_catalog

ROOT = Path(__file__).resolve().parents[2]
# What babel.cfg extracts from, with the same keywords as `make i18n-extract`.
SOURCES = ("bot", "common", "web", "worker")
KEYWORDS = {**DEFAULT_KEYWORDS, "N_": None}
TRANSLATED = [lang for lang in LANGUAGES if lang != "en"]
# %(name)s and its conversion; %% is a literal percent sign.
PLACEHOLDER = re.compile(r"%(?:\((\w+)\))?[-#0 +]*\d*(?:\.\d+)?([diouxXeEfFgGcrsa%])")


def placeholders(text: str) -> list[tuple[str, str]]:
    return sorted(PLACEHOLDER.findall(text))


def code_messages() -> set[str | tuple[str, str]]:
    """Every msgid (a plural's as ``(singular, plural)``) in the code."""
    found: set[str | tuple[str, str]] = set()
    for package in SOURCES:
        for path in sorted((ROOT / package).rglob("*.py")):
            for _, message, _, _ in extract_from_file("python", str(path), keywords=KEYWORDS):
                if isinstance(message, tuple | list):
                    found.add((message[0], message[1]) if len(message) > 1 else message[0])
                else:
                    found.add(message)
    return found


@pytest.mark.parametrize(
    ("language_code", "chosen", "expected"),
    [
        ("ru", None, "ru"),
        ("ru-RU", None, "ru"),
        ("RU", None, "ru"),
        ("en", None, "en"),
        ("de", None, "en"),
        ("uk", None, "en"),
        (None, None, "en"),
        ("", None, "en"),
        ("ru", "en", "en"),
        ("en", "ru", "ru"),
        (None, "ru", "ru"),
        ("ru", "xx", "ru"),  # a choice we do not speak (an old value): Telegram's decides
    ],
)
def test_language_follows_telegram_unless_chosen(
    language_code: str | None, chosen: str | None, expected: str
) -> None:
    assert language_for(language_code, chosen) == expected


def test_every_language_but_english_has_a_catalog_and_it_loads() -> None:
    assert LANGUAGES[0] == "en" and "ru" in LANGUAGES
    assert sorted(po.parts[-3] for po in po_files()) == sorted(TRANSLATED)
    assert missing_catalogs() == []
    for lang in TRANSLATED:
        assert isinstance(translator(lang), gettext.GNUTranslations)
    assert translator("ru").gettext("All") != "All"


@pytest.mark.parametrize("lang", TRANSLATED)
def test_every_message_of_the_code_is_translated_with_the_same_placeholders(lang: str) -> None:
    catalog = read_catalog(LOCALE_DIR / lang / "LC_MESSAGES" / f"{DOMAIN}.po")
    in_catalog = {}
    for message in catalog:
        if not message.id:
            continue
        key = (message.id[0], message.id[1]) if isinstance(message.id, tuple | list) else message.id
        in_catalog[key] = message
    missing = code_messages() - set(in_catalog)
    assert not missing, f"not in the {lang} catalog (run `make i18n-update`): {missing}"
    assert not catalog.fuzzy, "the catalog's header is fuzzy: pybabel compile would skip it"
    for key, message in in_catalog.items():
        assert not message.fuzzy, f"fuzzy ({lang}): {key!r}"
        ids = list(key) if isinstance(key, tuple) else [key]
        strings = (
            list(message.string) if isinstance(message.string, tuple | list) else [message.string]
        )
        if isinstance(key, tuple):
            assert len(strings) == catalog.num_plurals, key
        for string in strings:
            assert string and string.strip(), f"untranslated ({lang}): {key!r}"
            # Every plural form uses the plural msgid's placeholders (the count included).
            assert placeholders(string) == placeholders(ids[-1]), (lang, key, string)
        if len(ids) == 2:
            assert placeholders(ids[0]) == placeholders(ids[1]), key


@pytest.mark.parametrize("lang", TRANSLATED)
def test_the_compiled_catalog_matches_the_po(lang: str) -> None:
    catalog = read_catalog(LOCALE_DIR / lang / "LC_MESSAGES" / f"{DOMAIN}.po")
    with catalog_path(lang).open("rb") as file:
        compiled = gettext.GNUTranslations(file)
    for message in catalog:
        if not message.id:
            continue
        if isinstance(message.id, tuple | list):
            for n, string in ((1, message.string[0]), (2, message.string[1])):
                assert compiled.ngettext(message.id[0], message.id[1], n) == string
        else:
            assert compiled.gettext(message.id) == message.string, message.id


def test_a_payload_without_a_language_loads_as_english() -> None:
    job = SeparationJob(
        request_id=1,
        chat_id=2,
        user_id=3,
        file_id="f",
        song_name="s",
        stems=("vocals",),
        status_message_id=4,
        language="ru",
    )
    assert SeparationJob.from_kwargs(job.to_kwargs()) == job
    old = job.to_kwargs()
    del old["language"]
    assert SeparationJob.from_kwargs(old).language == "en"
    assert SeparationJob.from_kwargs({**old, "language": "xx"}).language == "en"


def test_language_buttons_use_the_settings_grammar() -> None:
    assert cd.setting(42, cd.LANGUAGE_SETTING, "ru") == "o:42:language.ru"
    parsed = cd.parse("o:42:language.ru")
    assert parsed is not None and parsed.setting == ("language", "ru")
    assert cd.parse("o:42:language.de") is None
