"""Child processes of the tests: `python -m demix ...` with an environment the test controls."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

# The variables Settings reads: none may leak from the shell running the tests.
SETTINGS_PREFIXES = ("DEMIX_", "TELEGRAM_", "REDIS_")
DEMIX = (sys.executable, "-m", "demix")


def child_env(
    *given: Mapping[str, object], inherit: bool = True, **variables: object
) -> dict[str, str]:
    """The environment of a child process.

    ``inherit``: this process's environment without any settings variable (DEMIX_*,
    TELEGRAM_*, REDIS_*); otherwise only ``PATH``. Then each mapping of ``given`` (such as
    ``FakeBotApi.environment()``) and ``variables``, later ones winning; values are str()-ed.
    """
    if inherit:
        env = {k: v for k, v in os.environ.items() if not k.startswith(SETTINGS_PREFIXES)}
    else:
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    for mapping in (*given, variables):
        env.update({name: str(value) for name, value in mapping.items()})
    return env


def run_demix(
    *args: str, env: Mapping[str, str], cwd: Path, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m demix ARGS`` to the end; output captured as text.

    ``cwd`` should be a folder of the test's own, so no stray ``.env`` file is read.
    """
    return subprocess.run(
        [*DEMIX, *args], env=dict(env), cwd=cwd, capture_output=True, text=True, timeout=timeout
    )


@contextlib.contextmanager
def demix_process(
    *args: str, env: Mapping[str, str], cwd: Path, log: Path, wrapper: Sequence[str] = ()
) -> Iterator[subprocess.Popen[bytes]]:
    """``python -m demix ARGS`` running while the block runs, its stdout and stderr in ``log``.

    It gets a session of its own (as under a service manager, and so a terminal's signals
    do not reach it); if it still runs when the block ends it is killed and reaped.
    ``wrapper`` is a command line that runs it (``unshare ...``), its arguments appended.
    """
    with log.open("wb") as output:
        process = subprocess.Popen(
            [*wrapper, *DEMIX, *args],
            env=dict(env),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=30)
