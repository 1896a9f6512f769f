"""Project defaults for snnc's commands: ``[tool.snnc]`` in a pyproject.toml, or an ``snnc.toml``.

The nearest one wins: from the working directory up to the root, each directory's ``snnc.toml``,
then its ``pyproject.toml`` if that has a ``[tool.snnc]`` table (a pyproject.toml without one is
passed over, as ruff does).  Only that one file is read; nothing merges across directories.

Top-level keys are ``snnc compile`` options, spelled as on the command line without ``--``
(``timesteps = 4``, ``pass-option = ["calibrate.batches=2"]``); a sub-table names another command
(``[tool.snnc.eval]``, ``[run]`` in snnc.toml).  Paths are relative to the file's directory.  An
option given on the command line wins over the file.  ``snnc config`` prints what applies and from
where.  Checking the keys against the commands' options is the CLI's part (snnc/cli.py).
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from snnc.errors import UserError

COMMANDS = ("compile", "run", "eval", "opt")


class ConfigError(UserError):
    """A project configuration file that cannot be read, or that names an unknown command or option."""


@dataclass(frozen=True, kw_only=True)
class ProjectConfig:
    path: Path  # the file
    table: str  # "[tool.snnc]" in a pyproject.toml, "" in snnc.toml
    commands: dict[str, dict[str, Any]]  # command -> option (kebab-case) -> value as written

    def where(self, command: str) -> str:
        """``/p/pyproject.toml [tool.snnc]`` or ``/p/snnc.toml [eval]``: where a value was set."""
        if self.table:
            table = self.table if command == "compile" else f"{self.table[:-1]}.{command}]"
        else:
            table = "" if command == "compile" else f"[{command}]"
        return f"{self.path} {table}".rstrip()


def find_config(start: Path | None = None) -> ProjectConfig | None:
    """The nearest snnc.toml, or pyproject.toml with [tool.snnc], from ``start`` (default: the working
    directory) upwards; None when there is none."""
    directory = (start or Path.cwd()).resolve()
    for folder in (directory, *directory.parents):
        own = folder / "snnc.toml"
        if own.is_file():
            return _read(own, _load(own), "")
        pyproject = folder / "pyproject.toml"
        if pyproject.is_file():
            data = _load(pyproject)
            tool = data.get("tool", {})
            if isinstance(tool, dict) and "snnc" in tool:
                if not isinstance(tool["snnc"], dict):
                    raise ConfigError(f"{pyproject}: [tool.snnc] must be a table")
                return _read(pyproject, tool["snnc"], "[tool.snnc]")
    return None


def _load(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML ({e})") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read ({e.strerror or e})") from None


def _read(path: Path, table: dict[str, Any], name: str) -> ProjectConfig:
    commands: dict[str, dict[str, Any]] = {"compile": {}}
    for key, value in table.items():
        if isinstance(value, dict):
            if key not in COMMANDS:
                from snnc.errors import did_you_mean

                raise ConfigError(f"{path}: {name or 'snnc.toml'} has a table '{key}', but snnc has no command "
                                  f"'{key}'{did_you_mean(key, COMMANDS)}; tables: {', '.join(COMMANDS)}")
            commands.setdefault(key, {}).update({k.replace("_", "-"): v for k, v in value.items()})
        else:
            commands["compile"][key.replace("_", "-")] = value
    return ProjectConfig(path=path, table=name, commands=commands)
