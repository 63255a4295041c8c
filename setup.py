"""The package build compiles the translations (.po → .mo) itself.

Everything else about the package is in pyproject.toml; this file only adds the build step,
so that every install path ships the compiled catalogs: a wheel, `pip install .`, an sdist
built into a wheel, and the editable install of `make install`. Without it a `pip install .`
gives a bot that silently speaks English to everyone.

`compile_catalogs` is a `build` sub-command (setuptools' SubCommand protocol): it compiles
every ``common/locale/<lang>/LC_MESSAGES/messages.po`` with Babel (a build requirement,
never a runtime one) into the build directory, or next to the .po for an editable install.
It does what ``pybabel compile`` does (``make i18n-compile``; fuzzy messages left out), but
fails the build where pybabel would only log: a catalog with errors or a fuzzy header.
The .po files go into the sdist through ``get_source_files``; the wheel gets only the .mo.
"""

from __future__ import annotations

from pathlib import Path

from setuptools import Command, setup
from setuptools.command.build import build
from setuptools.errors import SetupError

LOCALE_DIR = Path("common", "locale")
DOMAIN = "messages"


class compile_catalogs(Command):
    description = "compile the gettext catalogs (.po -> .mo) with Babel"
    user_options: list[tuple[str, str | None, str]] = []  # noqa: RUF012 (distutils' API)

    def initialize_options(self) -> None:
        self.build_lib: str | None = None
        self.editable_mode = False

    def finalize_options(self) -> None:
        self.set_undefined_options("build_py", ("build_lib", "build_lib"))

    def _catalogs(self) -> list[Path]:
        return sorted(LOCALE_DIR.glob(f"*/LC_MESSAGES/{DOMAIN}.po"))

    def _built(self, po: Path) -> str:
        assert self.build_lib is not None
        return str(Path(self.build_lib, po.with_suffix(".mo")))

    def _target(self, po: Path) -> Path:
        # Editable: in place, where common/i18n.py looks in the source tree.
        return po.with_suffix(".mo") if self.editable_mode else Path(self._built(po))

    def run(self) -> None:
        from babel.messages.mofile import write_mo
        from babel.messages.pofile import read_po

        catalogs = self._catalogs()
        if not catalogs:
            raise SetupError(f"no {DOMAIN}.po under {LOCALE_DIR}: nothing to compile")
        for po in catalogs:
            with po.open("rb") as file:
                catalog = read_po(file, locale=po.parts[-3], domain=DOMAIN)
            if catalog.fuzzy:
                raise SetupError(f"{po}: the catalog's header is marked fuzzy")
            errors = [
                f"{po}:{message.lineno}: {error}"
                for message, message_errors in catalog.check()
                for error in message_errors
            ]
            if errors:
                raise SetupError("errors in the catalog:\n" + "\n".join(errors))
            mo = self._target(po)
            self.mkpath(str(mo.parent))
            self.announce(f"compiling catalog {po} to {mo}", level=2)
            if not self.dry_run:
                tmp = mo.with_name(f"{mo.name}.tmp")
                with tmp.open("wb") as file:
                    write_mo(file, catalog, use_fuzzy=False)
                tmp.replace(mo)

    def get_source_files(self) -> list[str]:
        return [str(po) for po in self._catalogs()]

    def get_outputs(self) -> list[str]:
        return [self._built(po) for po in self._catalogs()]

    def get_output_mapping(self) -> dict[str, str]:
        # Only the in-place files of an editable build exist in the source tree.
        if not self.editable_mode:
            return {}
        return {self._built(po): str(po.with_suffix(".mo")) for po in self._catalogs()}


class build_with_catalogs(build):
    sub_commands = [*build.sub_commands, ("compile_catalogs", None)]  # noqa: RUF012


setup(cmdclass={"build": build_with_catalogs, "compile_catalogs": compile_catalogs})
