"""The bot's entry point imports without torch (the bot image has no torch at all)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

HEAVY = ("torch", "torchaudio", "demucs", "numpy", "separation")


def _modules_after(imports: str) -> set[str]:
    script = textwrap.dedent(
        f"""
        import sys
        {imports}
        print("\\n".join(sorted(sys.modules)))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True
    )
    return set(result.stdout.split())


def test_bot_entry_point_does_not_import_torch() -> None:
    modules = _modules_after(
        "import demix.cli, bot.app, demix.stats, demix.health, demix.up, demix.logs"
    )
    assert "bot.app" in modules and "telegram.ext" in modules
    for name in HEAVY:
        assert name not in modules, f"the bot imports {name}"
        assert not any(m.startswith(name + ".") for m in modules), f"the bot imports {name}.*"


def test_check_sees_torch_when_it_is_imported() -> None:
    # The same probe does notice torch, so the test above can fail.
    assert "torch" in _modules_after("import bot.worker")
