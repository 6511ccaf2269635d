"""A ClickHouse server's confinement, imposed before a statement reaches the chdb engine.

chdb runs ClickHouse in local mode: ``file()``, ``INTO OUTFILE``, ``url()``, ``s3()``,
``remote()``, ``mysql()``… reach any path or host the process can. A server confines them
(``user_files_path``, ``remote_url_allow_hosts``); this module does the same. The engine
itself parses the statement (``formatQuerySingleLine``, which also refuses multi-statements,
then ``EXPLAIN AST`` of the canonical text), so comments, case, quoting, subqueries, CTEs and
views are seen as the engine sees them. Then:

- every table function, table engine and database engine is allowed only from a list of
  local ones; ``file`` / ``File`` (and the scalar ``file()``), ``INTO OUTFILE`` and
  ``FROM INFILE`` take a literal path inside ``user_files`` (no ``..``, no symlink out, globs
  included); ``url`` / ``s3`` / ``mysql`` / ``remote``… a literal URL or address whose host is
  on the allow-list; anything else (or a non-literal argument) is refused;
- ``BACKUP``/``RESTORE``, ``ATTACH … FROM 'path'`` and ad-hoc ``disk(...)`` are refused;
- settings that name paths, URLs or SQL, or change the parser, are locked (any source).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from etar_stack.clickhouse_http.engine import EngineError

LOCKED_SETTINGS = frozenset({
    "dialect", "polyglot_dialect", "url_base", "rename_files_after_processing",
    "input_format_record_errors_file_path", "format_schema", "format_schema_source",
    "format_schema_message_name", "format_template_resultset", "format_template_row",
    "output_format_schema", "input_format_values_interpret_expressions",
    "input_format_values_deduce_templates_of_expressions", "additional_table_filters",
    "additional_result_filter", "implicit_table_at_top_level", "allow_experimental_prql_dialect",
    "allow_experimental_kusto_dialect", "user_files_path", "allow_experimental_polyglot_dialect",
})
"""Settings naming a path, a URL or SQL, or changing how a statement parses: never changed."""
FORCED_SETTINGS = {"input_format_values_interpret_expressions": "0",
                   "input_format_values_deduce_templates_of_expressions": "0"}
"""Set for a streamed ``FORMAT Values`` body (never seen by the guard): its data is data, never
expressions such as ``file()``. ``VALUES`` in the query text is checked like a ``SELECT``."""

_LOCAL_TABLES = frozenset(name.lower() for name in (
    # table functions reading nothing outside the engine
    "numbers", "numbers_mt", "zeros", "zeros_mt", "primes", "generateRandom", "generateSeries",
    "generate_series", "values", "SQLStandardValues", "format", "input", "view", "viewExplain",
    "viewIfPermitted", "merge", "loop", "dictionary", "null", "fuzzJSON", "fuzzQuery",
    "mergeTreeIndex", "mergeTreeProjection", "mergeTreeAnalyzeIndexes",
    "mergeTreeAnalyzeIndexesUUID", "mergeTreeCodecBlockCounts", "mergeTreeTextIndex",
    "timeSeriesData", "timeSeriesMetrics", "timeSeriesTags", "timeSeriesSamples",
    "timeSeriesSelector", "timeSeriesMetricFamilies",
    # table engines keeping their data in the engine's folder
    "MergeTree", "ReplacingMergeTree", "SummingMergeTree", "AggregatingMergeTree",
    "CollapsingMergeTree", "VersionedCollapsingMergeTree", "CoalescingMergeTree",
    "GraphiteMergeTree", "Memory", "Log", "TinyLog", "StripeLog", "Null", "Set", "Join",
    "Buffer", "Merge", "Dictionary", "GenerateRandom", "View", "MaterializedView", "Alias",
    "Loop", "TimeSeries", "FuzzJSON", "FuzzQuery",
    # database engines
    "Atomic", "Ordinary", "Lazy",
))
_FILE = frozenset({"file"})
_URL = {"url": 0, "s3": 0, "gcs": 0, "oss": 0, "cosn": 0}
"""Functions and engines whose first argument is a URL (lower-cased name → argument)."""
_ADDRESS = {"remote": 9000, "remotesecure": 9440, "mysql": 3306, "postgresql": 5432,
            "mongodb": 27017, "redis": 6379}
"""Functions and engines whose first argument is ``host[:port]`` (→ the default port)."""
_PATHS = frozenset({"filecluster", "sqlite", "executable", "executablepool", "filesystem",
                    "filelog", "embeddedrocksdb", "python", "eval", "deltalakelocal",
                    "icebergLocal".lower(), "icebergLocalCluster".lower(), "paimonlocal",
                    "paimonLocalCluster".lower(), "arrowstream", "queryrunner", "backup"})
"""Not served: they reach paths or programs of the host (refused as a server refuses paths)."""
_DICTIONARY_SOURCES = frozenset({"clickhouse", "null", "http", "https", "credentials",
                                 "headers", "header"})
_STRING = re.compile(r"'((?:[^'\\]|\\.)*)'", re.S)
_NODE = re.compile(r"^( *)(\S+)(?: +(\S+))?")
_PATH_CLAUSE = re.compile(r"(?=\b(?:INTO OUTFILE|FROM INFILE) ('(?:[^'\\]|\\.)*'))")
_ATTACH_FROM = re.compile(r"^ATTACH\b[^']*?\bFROM '")
_DISK = re.compile(r"\bdisk\s*\(", re.I)
_DICT_REMOTE_KEYS = re.compile(r"\b(HOST|PORT|QUERY|WHERE|INVALIDATE_QUERY|UPDATE_FIELD)\b", re.I)
_DICT_URL = re.compile(r"\bURL\s+('(?:[^'\\]|\\.)*')", re.I)
_HOST = re.compile(r"^(?:[A-Za-z0-9](?:[A-Za-z0-9.\-]*[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\])$")
_RANGE = re.compile(r"\{\d+\.\.\d+\}")
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "0": "\0", "b": "\b", "f": "\f", "\\": "\\",
            "'": "'", '"': '"', "`": "`", "a": "\a", "v": "\v"}
SCAN_LIMIT = 10_000
"""Most directory entries a glob's confinement check walks before giving up (refused)."""


def _unquote(literal: str) -> str:
    """The value of a ClickHouse single-quoted string as the engine prints it."""
    out: list[str] = []
    chars = iter(literal)
    for char in chars:
        if char == "\\":
            nxt = next(chars, "")
            if nxt == "x":
                out.append(chr(int(next(chars, "0") + next(chars, "0"), 16)))
            else:
                out.append(_ESCAPES.get(nxt, "\\" + nxt))
        else:
            out.append(char)
    return "".join(out)


def _denied_path(path: str, root: str) -> EngineError:
    return EngineError(291, f"Code: 291. DB::Exception: File `{path}` is not inside "
                            f"`{root}`. (DATABASE_ACCESS_DENIED)")


def _denied_url(url: str) -> EngineError:
    return EngineError(491, f'Code: 491. DB::Exception: URL "{url}" is not allowed in '
                            "configuration file, see <remote_url_allow_hosts>. "
                            "(UNACCEPTABLE_URL)")


def _not_served(what: str) -> EngineError:
    return EngineError(344, f"Code: 344. DB::Exception: {what} is not served by this endpoint: "
                            "it reaches outside the engine. (SUPPORT_IS_DISABLED)")


def locked(names: Iterable[str]) -> None:
    """SETTING_CONSTRAINT_VIOLATION when one of ``names`` is a locked setting."""
    for name in names:
        if name.lower() in LOCKED_SETTINGS:
            raise EngineError(452, f"Code: 452. DB::Exception: Setting {name} should not be "
                                   "changed. (SETTING_CONSTRAINT_VIOLATION)")


@dataclass
class Guard:
    """The rules: the ``user_files`` folder and the hosts remote functions may reach."""

    user_files: str
    allow_hosts: frozenset[str] = field(default_factory=frozenset)

    def __post_init__(self) -> None:
        self.user_files = os.path.realpath(self.user_files)

    # -- paths --------------------------------------------------------------------------
    def _inside(self, path: str) -> bool:
        return path == self.user_files or path.startswith(self.user_files + os.sep)

    def confine(self, path: str) -> str:
        """``path`` (relative: in ``user_files``) as an absolute path inside ``user_files``;
        DATABASE_ACCESS_DENIED when it, a symlink on it or a file its glob matches is not."""
        shown = path
        if "{_partition_id}" in path or ".." in _RANGE.sub("", path) or "\0" in path:
            raise _denied_path(shown, self.user_files)
        archive, _, inner = path.partition("::")
        if inner and ".." in _RANGE.sub("", inner):
            raise _denied_path(shown, self.user_files)
        path = archive.rstrip() if inner else path
        absolute = os.path.normpath(os.path.join(self.user_files, path))
        glob = re.search(r"[*?{]", absolute)
        fixed = absolute[:glob.start()].rsplit(os.sep, 1)[0] if glob else absolute
        real = os.path.realpath(fixed or os.sep)
        if not self._inside(absolute if not glob else fixed or os.sep) or not self._inside(real):
            raise _denied_path(shown, self.user_files)
        if glob or os.path.isdir(real):
            self._no_link_out(real, shown)
        return absolute

    def _no_link_out(self, folder: str, shown: str) -> None:
        seen = 0
        for top, dirs, files in os.walk(folder, followlinks=False):
            for name in dirs + files:
                seen += 1
                entry = os.path.join(top, name)
                if seen > SCAN_LIMIT or (os.path.islink(entry)
                                         and not self._inside(os.path.realpath(entry))):
                    raise _denied_path(shown, self.user_files)

    # -- hosts --------------------------------------------------------------------------
    def _allowed(self, host: str, port: int) -> bool:
        host = host.lower().strip("[]")
        return host in self.allow_hosts or f"{host}:{port}" in self.allow_hosts

    def check_url(self, url: str) -> None:
        """UNACCEPTABLE_URL unless ``url`` is a plain http(s) URL of an allowed host."""
        if re.search(r"[\s\\{}|*?\x00-\x1f]", url.split("/", 3)[2] if url.count("/") >= 2
                     else url) or re.search(r"[\s\\\x00-\x1f]", url):
            raise _denied_url(url)
        try:
            parts = urlsplit(url)
            port = parts.port or {"http": 80, "https": 443}.get(parts.scheme, 0)
        except ValueError:
            raise _denied_url(url) from None
        host = parts.hostname or ""
        if (parts.scheme not in ("http", "https") or not port or "@" in parts.netloc
                or not _HOST.match(host if ":" not in host else f"[{host}]")
                or not self._allowed(host, port)):
            raise _denied_url(url)

    def check_address(self, addresses: str, default_port: int) -> None:
        """UNACCEPTABLE_URL unless every ``host[:port]`` of a comma-separated list is allowed."""
        if "://" in addresses:
            self.check_url(addresses.replace("mongodb://", "http://", 1))
            return
        for address in addresses.split(","):
            match = re.fullmatch(r"\s*([^\s:\[\]]+|\[[0-9A-Fa-f:.]+\])(?::(\d+))?\s*", address)
            if not match or not _HOST.match(match.group(1)) or not self._allowed(
                    match.group(1), int(match.group(2) or default_port)):
                raise _denied_url(address.strip())

    # -- statements ---------------------------------------------------------------------
    def check(self, canonical: str, ast: str) -> None:
        """Refuse what ``canonical`` (the engine's formatting of one statement) and ``ast``
        (its ``EXPLAIN AST``) reach outside the engine."""
        locked(name for name in LOCKED_SETTINGS
               if re.search(rf"\b{name} =", canonical, re.I))
        for match in _PATH_CLAUSE.finditer(canonical):
            self.confine(_unquote(match.group(1)[1:-1]))
        if _ATTACH_FROM.match(canonical):
            raise _not_served("ATTACH … FROM a path")
        if _DISK.search(canonical):
            raise _not_served("A disk declared in a query")
        lines = ast.splitlines()
        if lines and lines[0].split(" ", 1)[0] == "BackupQuery":
            raise _not_served("BACKUP / RESTORE")
        for index, line in enumerate(lines):
            node = _NODE.match(line)
            if not node or not node.group(3):
                continue
            kind, name = node.group(2), node.group(3)
            if kind == "Function":
                engine = index > 0 and lines[index - 1].lstrip().startswith("Storage definition")
                self._function(name, self._arguments(lines, index, len(node.group(1))), engine)
            elif kind == "FunctionWithKeyValueArguments":
                self._dictionary_source(name.lower(), canonical)
            elif kind == "Storage" and name == "definition":
                self._storage(lines, index, len(node.group(1)))

    @staticmethod
    def _arguments(lines: list[str], index: int, indent: int) -> list[str | None]:
        """The function's arguments: a string literal's value, None for anything else."""
        if index + 1 >= len(lines) or not lines[index + 1].startswith(
                " " * (indent + 1) + "ExpressionList"):
            return []
        values: list[str | None] = []
        prefix = " " * (indent + 2)
        for line in lines[index + 2:]:
            if not line.startswith(prefix):
                break
            if line.startswith(prefix + " "):
                continue  # deeper: inside an argument
            match = _STRING.match(line, len(prefix) + len("Literal "))
            values.append(_unquote(match.group(1)) if line.startswith(prefix + "Literal '")
                          and match else None)
        return values

    def _storage(self, lines: list[str], index: int, indent: int) -> None:
        """An engine is its definition's first child; one without a name is refused."""
        child = lines[index + 1] if index + 1 < len(lines) else ""
        if not child.startswith(" " * (indent + 1) + "Function "):
            raise _not_served("A table or database engine given by an expression")

    def _function(self, name: str, args: list[str | None], engine: bool) -> None:
        lower = name.lower()
        first = args[0] if args else None
        if lower in _FILE:
            if engine:  # File(format[, path]): without a path, the table's own folder
                if len(args) < 2:
                    return
                first = args[1]
            if first is None:
                raise _denied_path(f"{name}(<not a string literal>)", self.user_files)
            self.confine(first)
        elif lower in _URL:
            if first is None:
                raise _denied_url(f"{name}(<not a string literal>)")
            self.check_url(first)
        elif lower in _ADDRESS:
            if first is None:
                raise _denied_url(f"{name}(<not a string literal>)")
            self.check_address(first, _ADDRESS[lower])
        elif lower in _PATHS:
            raise _not_served(f"`{name}`")
        elif lower in _REMOTE_NAMES:
            raise _denied_url(f"{name}(…)")

    def _dictionary_source(self, name: str, canonical: str) -> None:
        if name not in _DICTIONARY_SOURCES:
            raise _denied_url(f"SOURCE({name.upper()}(…))")
        if name == "clickhouse" and _DICT_REMOTE_KEYS.search(canonical):
            raise _not_served("A CLICKHOUSE source with a host, a port or SQL of its own")
        if name in ("http", "https"):
            urls = [_unquote(m.group(1)[1:-1]) for m in _DICT_URL.finditer(canonical)]
            if not urls:
                raise _denied_url("SOURCE(HTTP(…))")
            for url in urls:
                self.check_url(url)


_REMOTE_NAMES: frozenset[str] = frozenset()
"""Every table function and engine the engine knows that is neither local nor handled above
(filled from the engine's own ``system`` tables by :func:`learn`)."""


def learn(names: Iterable[str]) -> None:
    """Take the engine's table functions and engines: the unlisted ones are refused."""
    global _REMOTE_NAMES
    handled = _LOCAL_TABLES | _FILE | set(_URL) | set(_ADDRESS) | _PATHS
    _REMOTE_NAMES = frozenset(n.lower() for n in names) - handled - {"log", "format"}
