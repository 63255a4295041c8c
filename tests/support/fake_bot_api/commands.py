"""The bot's command menu: setMyCommands, getMyCommands and deleteMyCommands, per scope."""

from __future__ import annotations

import copy
import json
import threading
from typing import Any

from tests.support.fake_bot_api.calls import Handler, MethodCall
from tests.support.fake_bot_api.telegram import ApiError


class CommandMenus:
    """The command lists the bot set, one per scope and language, validated like Telegram."""

    def __init__(self, lock: threading.RLock) -> None:
        self._lock = lock
        self._commands: dict[str, list[dict[str, Any]]] = {}

    def handlers(self) -> dict[str, Handler]:
        return {
            "setMyCommands": self._set_my_commands,
            "getMyCommands": self._get_my_commands,
            "deleteMyCommands": self._delete_my_commands,
        }

    def default_menu(self) -> list[dict[str, Any]]:
        """The list for the default scope and language (a copy)."""
        return self.menu("")

    def menu(self, language_code: str) -> list[dict[str, Any]]:
        """The list for the default scope and ``language_code`` ("": all languages)."""
        with self._lock:
            key = _commands_key({"language_code": language_code})
            return copy.deepcopy(self._commands.get(key, []))

    def _set_my_commands(self, call: MethodCall) -> bool:
        commands = call.params.get("commands")
        if not isinstance(commands, list):
            raise ApiError(400, "Bad Request: can't parse commands JSON object")
        for command in commands:
            name = str(command.get("command", ""))
            if not (1 <= len(name) <= 32) or not all(
                c.islower() or c.isdigit() or c == "_" for c in name
            ):
                raise ApiError(400, "Bad Request: BOT_COMMAND_INVALID")
            if not 1 <= len(str(command.get("description", ""))) <= 256:
                raise ApiError(400, "Bad Request: command description is empty")
        self._commands[_commands_key(call.params)] = commands
        return True

    def _get_my_commands(self, call: MethodCall) -> list[dict[str, Any]]:
        return self._commands.get(_commands_key(call.params), [])

    def _delete_my_commands(self, call: MethodCall) -> bool:
        self._commands.pop(_commands_key(call.params), None)
        return True


def _commands_key(params: dict[str, Any]) -> str:
    scope = params.get("scope") or {"type": "default"}
    return json.dumps([scope, params.get("language_code") or ""], sort_keys=True)
