"""Argo CD's Lua runtime for resource customizations, rebuilt on lupa's Lua 5.1.

Argo CD runs ``health.lua`` and the action scripts in gopher-lua (Lua 5.1) with the object as
the global ``obj``. A script configured in ``argocd-cm`` gets only the base, table and package
libraries and a safe part of ``os`` (``time`` and ``date``; ``require("os")`` returns it): no
string, math, io or debug library, and so no string methods either. The sandbox here is the
same, so a script that passes these tests runs in Argo CD as it is.

Results come back the way Argo CD reads them, through its JSON encoding of the returned table:
a table with keys 1..n is an array, an empty table an empty array, which Argo CD turns back
into an empty object where the input had one (``cleanReturnedObj``).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from lupa import lua51

HEALTH_STATUSES = frozenset(
    {"Healthy", "Progressing", "Degraded", "Suspended", "Missing", "Unknown"}
)
"""The health codes Argo CD accepts; any other becomes Unknown."""

_SANDBOX = """
local safe_os = {time = os.time, date = os.date}
local base = {
  "assert", "error", "getmetatable", "ipairs", "next", "pairs", "pcall", "rawequal", "rawget",
  "rawset", "select", "setmetatable", "tonumber", "tostring", "type", "unpack", "xpcall",
}
local tablelib = {}
for name, fn in pairs(table) do
  tablelib[name] = fn
end
-- Argo CD's VM opens no string library: strings have no methods there either.
debug.setmetatable("", nil)
return function(source, name, obj)
  local env = {table = tablelib, os = safe_os, obj = obj, print = function() end}
  for _, key in ipairs(base) do
    env[key] = _G[key]
  end
  env.require = function(module)
    if module == "os" then
      return safe_os
    end
    error("module '" .. module .. "' not found")
  end
  env._G = env
  local chunk, problem = loadstring(source, "=" .. name)
  if chunk == nil then
    error(problem)
  end
  setfenv(chunk, env)
  return chunk()
end
"""


class _JsonYamlLoader(yaml.SafeLoader):
    """YAML read as Kubernetes reads it (as JSON): timestamps stay strings."""


_JsonYamlLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def load_yaml(path: Path) -> Any:
    return yaml.load(path.read_text(), Loader=_JsonYamlLoader)


class ArgoLua:
    """One Lua runtime with Argo CD's sandbox; each script runs in a fresh environment."""

    def __init__(self) -> None:
        self._lua = lua51.LuaRuntime(unpack_returned_tuples=False)
        run = self._lua.execute(_SANDBOX)
        assert callable(run)
        self._run = run

    def run(self, script: Path, obj: Mapping[str, Any]) -> Any:
        """The script's return value, as Argo CD's JSON encoding of it reads."""
        return _from_lua(self._run(script.read_text(), script.name, self._to_lua(obj)))

    def health(self, script: Path, obj: Mapping[str, Any]) -> dict[str, str]:
        """``{status, message}`` as Argo CD reports it (``ExecuteHealthLua``)."""
        result = self.run(script, obj)
        if result is None or result == []:
            return {"status": "", "message": ""}
        if not isinstance(result, dict):
            raise TypeError(f"{script.name} returned {result!r}, not a table")
        status, message = result.get("status", ""), result.get("message", "")
        if status not in HEALTH_STATUSES:
            return {"status": "Unknown", "message": "Lua returned an invalid health status"}
        return {"status": str(status), "message": str(message)}

    def discover(self, script: Path, obj: Mapping[str, Any]) -> list[dict[str, Any]]:
        """The actions the discovery script offers (``ExecuteResourceActionDiscovery``)."""
        result = self.run(script, obj)
        if result == []:
            return []
        if not isinstance(result, dict):
            raise TypeError(f"{script.name} returned {result!r}, not a table of actions")
        actions = []
        for name, value in result.items():
            fields = value if isinstance(value, dict) else {}
            action = {"name": name, "disabled": fields.get("disabled") is True}
            for key in ("displayName", "iconClass"):
                if key in fields:
                    action[key] = fields[key]
            actions.append(action)
        return sorted(actions, key=lambda a: str(a["name"]))

    def act(self, script: Path, obj: Mapping[str, Any]) -> dict[str, Any]:
        """The object an old-style action returns (Argo CD patches the resource to it)."""
        result = self.run(script, obj)
        if not isinstance(result, dict):
            raise TypeError(f"{script.name} returned {result!r}, not an object")
        cleaned: dict[str, Any] = _clean(result, obj)
        return cleaned

    def _to_lua(self, value: Any) -> Any:
        # As Argo CD's decodeValue: a JSON null is no value at all.
        if isinstance(value, Mapping):
            table = self._lua.table()
            for key, item in value.items():
                if item is not None:
                    table[key] = self._to_lua(item)
            return table
        if isinstance(value, list):
            table = self._lua.table()
            for index, item in enumerate(value, 1):
                table[index] = self._to_lua(item)
            return table
        return value


def _from_lua(value: Any) -> Any:
    if lua51.lua_type(value) == "table":
        items = list(value.items())
        if not items:
            return []
        keys = [key for key, _ in items]
        if all(type(key) is int for key in keys) and sorted(keys) == list(range(1, len(keys) + 1)):
            return [_from_lua(value[index]) for index in range(1, len(keys) + 1)]
        return {str(key): _from_lua(item) for key, item in items}
    if lua51.lua_type(value) is not None:
        raise TypeError(f"a Lua {lua51.lua_type(value)} cannot be encoded as JSON")
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _clean(new: Any, old: Any) -> Any:
    """Argo CD's cleanReturnedObj: an empty array where the input had an object is that empty
    object, which Lua could not tell apart."""
    if isinstance(new, dict) and isinstance(old, Mapping):
        return {key: _clean(item, old[key]) if key in old else item for key, item in new.items()}
    if isinstance(new, list) and isinstance(old, Mapping):
        return new or {}
    if isinstance(new, list) and isinstance(old, list):
        return [_clean(item, before) for item, before in zip(new, old, strict=False)] + new[
            len(old) :
        ]
    return new
