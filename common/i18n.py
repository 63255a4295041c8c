"""Languages: which one a user is spoken to in, and the gettext translator for it.

Every text the bot and the worker send is an English msgid in ``bot/texts.py``,
``worker/texts.py``, ``common/texts.py`` or ``common/rating.py``, translated through the
gettext catalogs in ``common/locale/<lang>/LC_MESSAGES/messages.mo`` (compiled from the
``.po`` files by the package build, ``setup.py``, and by ``make i18n-compile``).
English is the source language: it needs no catalog.

A user's language is their choice in /settings, else their Telegram ``language_code``
(``ru*`` → Russian, anything else → English). The bot resolves it and puts it in the job
payload, so the worker speaks it too.
"""

from __future__ import annotations

import functools
import gettext
import logging
from pathlib import Path
from typing import Literal, cast

logger = logging.getLogger(__name__)

Language = Literal["en", "ru"]
LANGUAGES: tuple[Language, ...] = ("en", "ru")
DEFAULT_LANGUAGE: Language = "en"
# The language buttons of /settings: each name in its own language.
LANGUAGE_NAMES: dict[Language, str] = {"en": "English", "ru": "Русский"}
LOCALE_DIR = Path(__file__).resolve().parent / "locale"
DOMAIN = "messages"


def language(value: str | None) -> Language:
    """``value`` if it is one of :data:`LANGUAGES`, else the default (English)."""
    return cast(Language, value) if value in LANGUAGES else DEFAULT_LANGUAGE


def language_for(language_code: str | None, chosen: str | None = None) -> Language:
    """The language to speak to a user in: ``chosen`` (/settings) if it is one we speak,
    else from their Telegram ``language_code``: ``ru*`` → Russian, otherwise English."""
    if chosen in LANGUAGES:
        return language(chosen)
    code = (language_code or "").lower()
    for lang in LANGUAGES:
        # "ru", "ru-RU": DESIGN.md's `ru*`.
        if code.startswith(lang):
            return lang
    return DEFAULT_LANGUAGE


def catalog_path(lang: str) -> Path:
    """Where ``lang``'s compiled catalog lives."""
    return LOCALE_DIR / lang / "LC_MESSAGES" / f"{DOMAIN}.mo"


def missing_catalogs() -> list[str]:
    """The languages (other than English) whose compiled catalog is missing."""
    return [lang for lang in LANGUAGES if lang != "en" and not catalog_path(lang).is_file()]


@functools.cache
def translator(lang: str | None = DEFAULT_LANGUAGE) -> gettext.NullTranslations:
    """The translations for ``lang`` (English, the msgids themselves, for anything else).

    A missing catalog (``make i18n-compile`` not run) is logged and falls back to English:
    the bot keeps serving.
    """
    lang = language(lang)
    if lang == "en":
        return gettext.NullTranslations()
    try:
        return gettext.translation(DOMAIN, LOCALE_DIR, languages=[lang])
    except OSError:
        logger.error(
            "no compiled catalog for %r at %s: run `make i18n-compile`", lang, catalog_path(lang)
        )
        return gettext.NullTranslations()


def N_(message: str) -> str:
    """Mark ``message`` for extraction without translating it: it is translated where it is
    sent, with :func:`translate` (module-level constants, labels in a dict)."""
    return message


def translate(message: str, lang: str | None = DEFAULT_LANGUAGE) -> str:
    """``message`` (an English msgid marked with :func:`N_`) in ``lang``."""
    return translator(lang).gettext(message)
