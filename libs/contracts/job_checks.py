"""Checks of a job folder's files, shared by the gateway (before a job is dispatched) and the
CLI (before anything is uploaded).

Each check takes what was read (bytes, text, a ZIP's central directory) and the file's path as
the caller names it (a bucket key, or a local path), and returns every `Problem` it finds. A
problem names the exact file (and the entry of a shard ZIP, or the line), says what is wrong
and how to fix it. Nothing here opens files or sockets: `check_shard` reads a ZIP through the
file object it is given (a local file, or a ranged reader over S3). Bad input never raises.
"""

import ast
import builtins
import json
import re
import symtable
import zipfile
import zlib
from collections.abc import Collection, Iterable, Sequence
from enum import StrEnum
from pathlib import PurePosixPath
from typing import IO

from packaging.requirements import InvalidRequirement, Requirement
from pydantic import BaseModel, Field, NonNegativeInt, ValidationError
from pydantic_core import ErrorDetails

from rondo.contracts.archives import (
    MANIFEST_NAME,
    ArchiveLimits,
    entry_fault,
    excessive_ratio,
    manifest_entry,
    normalized_name,
    path_fault,
    ratio_fault,
)

TRAIN_FUNCTIONS = ("fl_train_model", "fl_train")
# A shard, script or manifest with thousands of faults gets this many listed, then a summary.
MAX_PROBLEMS_PER_FILE = 20


class ProblemCode(StrEnum):
    MISSING_FILE = "missing_file"
    MISSING_SHARDS = "missing_shards"
    INVALID_ZIP = "invalid_zip"
    UNSAFE_ENTRY = "unsafe_entry"
    ZIP_BOMB = "zip_bomb"
    MANIFEST_MISSING = "manifest_missing"
    INVALID_MANIFEST = "invalid_manifest"
    SYNTAX_ERROR = "syntax_error"
    NAME_NOT_DEFINED = "name_not_defined"
    TRAIN_FUNCTION_MISSING = "train_function_missing"
    MODEL_CLASS_MISSING = "model_class_missing"
    INVALID_REQUIREMENTS = "invalid_requirements"
    INVALID_CONFIG = "invalid_config"
    INVALID_APP_CONFIG = "invalid_app_config"


class Problem(BaseModel):
    """One thing wrong with a job folder, and how to fix it."""

    code: ProblemCode
    message: str = Field(description="What is wrong; names the file (and entry or line)")
    hint: str = Field(description="How to fix it")
    path: str = Field(description="The file, as the caller names it (e.g. its bucket key)")
    entry: str | None = Field(default=None, description="The entry inside a shard ZIP")
    line: int | None = Field(default=None, description="1-based line in the file (or entry)")
    column: int | None = Field(default=None, description="1-based column in that line")


class ManifestRecord(BaseModel):
    """One line of `manifest.ndjson` (unknown keys are allowed and kept by the user's code)."""

    id: str = Field(min_length=1)
    uri: str = Field(min_length=1, description="Path relative to the shard root, or a URL")
    y: list[NonNegativeInt] = Field(description="0-based labels")
    meta: dict[str, object] = Field(default_factory=dict)


# --- shards ---------------------------------------------------------------------------------

MANIFEST_HINT = (
    f"each line of {MANIFEST_NAME} is one JSON object with 'id' (string), 'uri' (a path "
    "inside the ZIP or a URL), 'y' (list of 0-based int labels) and optional 'meta' (object)"
)


UNREADABLE_ZIP_HINT = "re-create it (`zip -r` inside the data folder) and upload it again"


def check_shard(
    archive_file: IO[bytes],
    path: str,
    limits: ArchiveLimits,
    unreadable_hint: str = UNREADABLE_ZIP_HINT,
) -> list[Problem]:
    """Every problem of a shard ZIP read through `archive_file` (seekable): its directory
    (`check_shard_directory`), then its manifest's lines (`check_manifest`). Only the ZIP's
    end records, its directory and the manifest's bytes are read. A file that is not a
    readable ZIP is one `invalid_zip` problem (`unreadable_zip` builds it, with
    `unreadable_hint`); errors of `archive_file` itself propagate."""
    try:
        with zipfile.ZipFile(archive_file) as archive:
            entries = archive.infolist()
            problems = check_shard_directory(entries, path, limits)
            manifest = manifest_entry(entries)
            # An unsafe (e.g. encrypted) manifest entry is reported, not read.
            readable = not any(problem.entry == MANIFEST_NAME for problem in problems)
            if manifest is None or not readable or manifest.file_size > limits.max_manifest_bytes:
                return problems
            with archive.open(manifest) as stream:
                content = stream.read(limits.max_manifest_bytes)
            return problems + check_manifest(content, path, [info.filename for info in entries])
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError) as error:
        return [unreadable_zip(path, error, unreadable_hint)]


def unreadable_zip(path: str, error: Exception, hint: str = UNREADABLE_ZIP_HINT) -> Problem:
    """The one problem of a file that is not a readable ZIP."""
    return Problem(
        code=ProblemCode.INVALID_ZIP,
        message=f"{path} is not a readable ZIP file ({error})",
        hint=hint,
        path=path,
    )


def check_shard_directory(
    entries: Sequence[zipfile.ZipInfo], path: str, limits: ArchiveLimits
) -> list[Problem]:
    """Problems of a shard ZIP visible in its central directory: unsafe entries (absolute,
    escaping, links, encrypted), sizes past `limits` (ZIP bombs) and where the manifest is."""
    problems: list[Problem] = []
    if len(entries) > limits.max_entries:
        problems.append(
            _bomb(path, f"has {len(entries)} entries, more than the limit of {limits.max_entries}")
        )
    for info in entries:
        name = info.filename
        fault = entry_fault(info)
        if fault is not None:
            problems.append(
                Problem(
                    code=ProblemCode.UNSAFE_ENTRY,
                    message=f"{path}: entry '{name}' {fault}",
                    hint="re-zip with plain files under relative paths only",
                    path=path,
                    entry=name,
                )
            )
        elif (ratio := excessive_ratio(info, limits)) is not None:
            problems.append(_bomb(path, f"entry '{name}' {ratio_fault(ratio, limits)}", entry=name))
    total = sum(info.file_size for info in entries)
    if total > limits.max_total_bytes:
        problems.append(
            _bomb(path, f"unpacks to {total} bytes, over the limit of {limits.max_total_bytes}")
        )
    problems = _capped(problems, path)
    if manifest_entry(entries) is None:
        problems.append(_manifest_missing(entries, path))
    return problems


def _manifest_missing(entries: Iterable[zipfile.ZipInfo], path: str) -> Problem:
    nested = sorted(
        info.filename
        for info in entries
        if PurePosixPath(normalized_name(info.filename)).name == MANIFEST_NAME
    )
    if nested:
        folder = str(PurePosixPath(normalized_name(nested[0])).parent)
        message = (
            f"{path}: {MANIFEST_NAME} is not at the ZIP root but inside the folder "
            f"'{folder}/' (found at '{nested[0]}')"
        )
        hint = (
            f"zip the contents of '{folder}/', not the folder itself, so {MANIFEST_NAME} "
            "is at the root"
        )
    else:
        message = f"{path}: no {MANIFEST_NAME} in the ZIP"
        hint = f"add {MANIFEST_NAME} at the ZIP root ({MANIFEST_HINT})"
    return Problem(
        code=ProblemCode.MANIFEST_MISSING,
        message=message,
        hint=hint,
        path=path,
        entry=nested[0] if nested else None,
    )


def _bomb(path: str, what: str, entry: str | None = None) -> Problem:
    return Problem(
        code=ProblemCode.ZIP_BOMB,
        message=f"{path}: {what}; refused as a possible ZIP bomb",
        hint="split the data over more shards, or store already-compressed files as they are",
        path=path,
        entry=entry,
    )


def check_manifest(content: bytes, path: str, entry_names: Collection[str]) -> list[Problem]:
    """Problems of the lines of a shard's `manifest.ndjson`; `entry_names` are the ZIP's
    entries, which relative `uri`s must name."""
    files = {normalized_name(name) for name in entry_names}
    problems: list[Problem] = []
    for number, line in enumerate(content.splitlines(), start=1):
        if not line.strip():
            continue
        fault = _manifest_line_fault(line, files)
        if fault is not None:
            problems.append(
                Problem(
                    code=ProblemCode.INVALID_MANIFEST,
                    message=f"{path}: {MANIFEST_NAME} line {number}: {fault}",
                    hint=MANIFEST_HINT,
                    path=path,
                    entry=MANIFEST_NAME,
                    line=number,
                )
            )
            if len(problems) > MAX_PROBLEMS_PER_FILE:
                break
    return _capped(problems, path)


def _manifest_line_fault(line: bytes, files: set[str]) -> str | None:
    try:
        record = ManifestRecord.model_validate_json(line)
    except ValidationError as error:
        return "; ".join(_validation_message(e) for e in error.errors(include_url=False))
    uri = record.uri
    if "://" in uri:
        return None  # a URL: the user's code fetches it
    fault = path_fault(uri)
    if fault is not None:
        return f"uri '{uri}' {fault.replace('shard folder', 'shard')}"
    relative = "/".join(part for part in uri.split("/") if part not in ("", "."))
    if relative not in files:
        return f"uri '{uri}' is not a file in the ZIP"
    return None


def _validation_message(error: ErrorDetails) -> str:
    if error["type"] == "json_invalid":
        return f"not valid JSON ({error.get('ctx', {}).get('error', 'parse error')})"
    field = ".".join(str(part) for part in error["loc"]) or "line"
    return f"'{field}': {error['msg']}"


# --- model_def.py ---------------------------------------------------------------------------

IMPORT_HINT = "put every import in model_def.py (e.g. `import torch` at the top)"
# Names every module has without defining them.
_MODULE_NAMES = frozenset(
    {"__name__", "__file__", "__doc__", "__spec__", "__loader__", "__package__", "__builtins__"}
    | {"__annotations__", "__path__", "__cached__", "__dict__"}
)
# A module calling these may define names no static analysis can see.
_DYNAMIC_DEFINERS = frozenset({"exec", "globals"})


def check_model_def(
    source: bytes,
    path: str,
    *,
    needs_train_function: bool = True,
    model_class: str | None = None,
) -> list[Problem]:
    """Problems of the job's `model_def.py`: a syntax error; else names used but defined
    nowhere (missing imports), a missing training function (when the generated app calls it)
    and a missing `model_class` (when the config names one)."""
    try:
        text = source.decode("utf-8-sig")
        # Compiling finds what parsing alone lets through ('return' outside a function, ...).
        compile(text, path, "exec", dont_inherit=True)
        tree = ast.parse(text, filename=path)
        table = symtable.symtable(text, path, "exec")
    # ValueError: null bytes; RecursionError: code nested too deeply to compile.
    except (SyntaxError, UnicodeDecodeError, ValueError, RecursionError) as error:
        return [_syntax_problem(error, path)]

    try:
        module = _ModuleNames.of(tree, table)
    except RecursionError:  # compiles, but nests too deeply to walk: left to the run
        return []
    problems = _capped(module.undefined_names(path), path)
    if needs_train_function and not module.star_import and not module.binds_any(TRAIN_FUNCTIONS):
        problems.append(
            Problem(
                code=ProblemCode.TRAIN_FUNCTION_MISSING,
                message=f"{path} defines neither {' nor '.join(TRAIN_FUNCTIONS)}",
                hint=(
                    f"define `def {TRAIN_FUNCTIONS[0]}(payload, out_dir, logger=None)` at the "
                    "top level of model_def.py; it trains one round and returns "
                    '{"weights", "samples", "metrics"}'
                ),
                path=path,
            )
        )
    if model_class and not module.star_import and not module.binds_any((model_class,)):
        problems.append(
            Problem(
                code=ProblemCode.MODEL_CLASS_MISSING,
                message=f"{path} defines no '{model_class}' (the config's model_class)",
                hint="define that nn.Module class in model_def.py, or fix model_class",
                path=path,
            )
        )
    return problems


def _syntax_problem(error: Exception, path: str) -> Problem:
    if isinstance(error, SyntaxError):
        where = f" (line {error.lineno}, column {error.offset})" if error.lineno else ""
        return Problem(
            code=ProblemCode.SYNTAX_ERROR,
            message=f"{path}: syntax error{where}: {error.msg}",
            hint="fix the line shown; `python -m py_compile model_def.py` finds the same error",
            path=path,
            line=error.lineno,
            column=error.offset,
        )
    if isinstance(error, UnicodeDecodeError):
        return Problem(
            code=ProblemCode.SYNTAX_ERROR,
            message=f"{path} is not UTF-8 text ({error})",
            hint="save the file as UTF-8 text",
            path=path,
        )
    return Problem(
        code=ProblemCode.SYNTAX_ERROR,
        message=f"{path} cannot be compiled ({error})",
        hint="fix the file until `python -m py_compile model_def.py` accepts it",
        path=path,
    )


class _ModuleNames:
    """What a module binds and which global names it reads, resolved scope by scope.

    `symtable` resolves every name like the compiler does (comprehensions, class bodies,
    closures, `global`); the AST says where a name is read and drops the reads that never run
    (annotations of local variables, and every annotation under `from __future__ import
    annotations`).
    """

    def __init__(
        self,
        bound: set[str],
        global_reads: set[str],
        first_reads: dict[str, tuple[int, int]],
        star_import: bool,
    ) -> None:
        self.bound = bound
        self.global_reads = global_reads
        self.first_reads = first_reads
        self.star_import = star_import

    @classmethod
    def of(cls, tree: ast.Module, table: symtable.SymbolTable) -> "_ModuleNames":
        bound = {
            symbol.get_name()
            for symbol in table.get_symbols()
            if symbol.is_assigned() or symbol.is_imported() or symbol.is_annotated()
        }
        global_reads: set[str] = set()
        for scope in _scopes(table):
            for symbol in scope.get_symbols():
                if symbol.is_declared_global() and symbol.is_assigned():
                    bound.add(symbol.get_name())  # `global x; x = ...` in a function
                if symbol.is_referenced() and symbol.is_global():
                    global_reads.add(symbol.get_name())
        reads = _EvaluatedReads(_has_future_annotations(tree))
        reads.visit(tree)
        star = any(
            isinstance(node, ast.ImportFrom) and any(alias.name == "*" for alias in node.names)
            for node in ast.walk(tree)
        )
        return cls(bound, global_reads, reads.first, star)

    def binds_any(self, names: Iterable[str]) -> bool:
        return any(name in self.bound for name in names)

    def undefined_names(self, path: str) -> list[Problem]:
        """Global names read where they run, bound nowhere and not builtins; none when the
        module may define names dynamically (star imports, `exec`, `globals()`)."""
        if self.star_import or self.global_reads & _DYNAMIC_DEFINERS:
            return []
        known = self.bound | set(dir(builtins)) | _MODULE_NAMES
        missing = sorted(
            (self.first_reads[name], name)
            for name in self.global_reads - known
            if name in self.first_reads
        )
        return [
            Problem(
                code=ProblemCode.NAME_NOT_DEFINED,
                message=(
                    f"{path} line {line}, column {column}: name '{name}' is not defined "
                    "(used but never imported or defined)"
                ),
                hint=f"add the import of '{name}' to model_def.py; {IMPORT_HINT}",
                path=path,
                line=line,
                column=column,
            )
            for (line, column), name in missing
        ]


def _scopes(table: symtable.SymbolTable) -> Iterable[symtable.SymbolTable]:
    yield table
    for child in table.get_children():
        yield from _scopes(child)


def _has_future_annotations(tree: ast.Module) -> bool:
    return any(
        isinstance(node, ast.ImportFrom)
        and node.module == "__future__"
        and any(alias.name == "annotations" for alias in node.names)
        for node in tree.body
    )


class _EvaluatedReads(ast.NodeVisitor):
    """Where each name is first read by code that runs (1-based line and column)."""

    def __init__(self, future_annotations: bool) -> None:
        self.future_annotations = future_annotations
        self.in_function = False
        self.first: dict[str, tuple[int, int]] = {}

    def visit_Name(self, node: ast.Name) -> None:
        if isinstance(node.ctx, ast.Load):
            self.first.setdefault(node.id, (node.lineno, node.col_offset + 1))

    def _annotation(self, node: ast.expr | None, *, local: bool = False) -> None:
        # Local variable annotations never run; others do unless postponed by the future import.
        if node is not None and not local and not self.future_annotations:
            self.visit(node)

    def _body(self, body: list[ast.stmt], *, function: bool) -> None:
        outer, self.in_function = self.in_function, function
        for statement in body:
            self.visit(statement)
        self.in_function = outer

    def _function(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        for expression in [*node.decorator_list, *node.args.defaults, *node.args.kw_defaults]:
            if expression is not None:
                self.visit(expression)
        arguments = node.args
        for argument in [
            *arguments.posonlyargs,
            *arguments.args,
            *arguments.kwonlyargs,
            *([arguments.vararg] if arguments.vararg else []),
            *([arguments.kwarg] if arguments.kwarg else []),
        ]:
            self._annotation(argument.annotation)
        self._annotation(node.returns)
        self._body(node.body, function=True)

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        self._function(node)

    def visit_AsyncFunctionDef(self, node: ast.AsyncFunctionDef) -> None:
        self._function(node)

    def visit_Lambda(self, node: ast.Lambda) -> None:
        for expression in [*node.args.defaults, *node.args.kw_defaults]:
            if expression is not None:
                self.visit(expression)
        outer, self.in_function = self.in_function, True
        self.visit(node.body)
        self.in_function = outer

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        for expression in [*node.decorator_list, *node.bases, *node.keywords]:
            self.visit(expression)
        self._body(node.body, function=False)

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        self.visit(node.target)
        if node.value is not None:
            self.visit(node.value)
        self._annotation(node.annotation, local=self.in_function)


# --- requirements.txt -----------------------------------------------------------------------

REQUIREMENTS_HINT = (
    "one requirement a line in pip's format, e.g. `scikit-learn==1.5.2` or "
    "`pkg @ https://host/pkg-1.0-py3-none-any.whl`; `#` starts a comment"
)
# pip options a requirements file may hold that work on a worker (index and wheel selection).
ACCEPTED_OPTIONS = frozenset(
    {
        "-i",
        "--index-url",
        "--extra-index-url",
        "--no-index",
        "-f",
        "--find-links",
        "--trusted-host",
        "--pre",
        "--prefer-binary",
        "--only-binary",
        "--no-binary",
        "--require-hashes",
    }
)
# Options pointing at files or source trees workers do not have.
REFUSED_OPTIONS = {
    "-r": "includes another file, which workers do not get; list its requirements here",
    "--requirement": "includes another file, which workers do not get; list its requirements here",
    "-c": "names a constraints file, which workers do not get; pin versions here instead",
    "--constraint": "names a constraints file, which workers do not get; pin versions here",
    "-e": "is an editable install of a source tree workers do not have; use `pkg==version` "
    "or `pkg @ URL`",
    "--editable": "is an editable install of a source tree workers do not have; use "
    "`pkg==version` or `pkg @ URL`",
}
# Options pip allows after a requirement on its line.
_PER_REQUIREMENT_OPTION = re.compile(r"\s--(hash|config-settings|global-option)[= ]\S+")
_COMMENT = re.compile(r"(^|\s+)#.*$")


def check_requirements(content: bytes, path: str) -> list[Problem]:
    """Problems of a `requirements.txt`, line by line, as pip would read it: comments, blank
    lines, continuations and the options in `ACCEPTED_OPTIONS` are fine; options in
    `REFUSED_OPTIONS`, unknown options and lines that are not requirements are not."""
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError as error:
        return [_requirements_problem(path, None, f"is not UTF-8 text ({error})")]
    problems = [
        _requirements_problem(path, number, fault)
        for number, line in _logical_lines(text)
        if (fault := _requirement_fault(line)) is not None
    ]
    return _capped(problems, path)


def _logical_lines(text: str) -> Iterable[tuple[int, str]]:
    """(first line number, text) of each line, comments dropped and continuations joined."""
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        if not pending:
            start = number
        line = _COMMENT.sub("", raw)
        if line.endswith("\\"):
            pending.append(line[:-1])
            continue
        joined = ("".join(pending) + line).strip()
        pending = []
        if joined:
            yield start, joined
    if pending and (joined := "".join(pending).strip()):
        yield start, joined


def _requirement_fault(line: str) -> str | None:
    if line.startswith("-"):
        option = re.split(r"[ =]", line, maxsplit=1)[0]
        if option in REFUSED_OPTIONS:
            return f"'{line}' {REFUSED_OPTIONS[option]}"
        if option not in ACCEPTED_OPTIONS:
            return f"'{option}' is not an option Rondo accepts in requirements.txt"
        return None
    requirement = _PER_REQUIREMENT_OPTION.sub("", line).strip()
    try:
        Requirement(requirement)
    except InvalidRequirement as error:
        first = str(error).splitlines()[0]
        return f"'{line}' is not a valid requirement ({first})"
    return None


def _requirements_problem(path: str, line: int | None, fault: str) -> Problem:
    where = f" line {line}" if line is not None else ""
    return Problem(
        code=ProblemCode.INVALID_REQUIREMENTS,
        message=f"{path}{where}: {fault}",
        hint=REQUIREMENTS_HINT,
        path=path,
        line=line,
    )


# --- configs --------------------------------------------------------------------------------


def check_app_config(content: bytes, path: str) -> list[Problem]:
    """Problems of one JSON file of a custom NVFlare app (`configs/*.json`)."""
    try:
        parsed = json.loads(content)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        line = getattr(error, "lineno", None)
        column = getattr(error, "colno", None)
        return [
            Problem(
                code=ProblemCode.INVALID_APP_CONFIG,
                message=f"{path} is not valid JSON ({error})",
                hint="fix the JSON at the place shown (a linter or `python -m json.tool` helps)",
                path=path,
                line=line,
                column=column,
            )
        ]
    if not isinstance(parsed, dict):
        return [
            Problem(
                code=ProblemCode.INVALID_APP_CONFIG,
                message=f"{path} holds a JSON {type(parsed).__name__}, not an object",
                hint="an NVFlare config file is one JSON object {...}",
                path=path,
            )
        ]
    return []


def check_min_clients(
    min_clients: int | None, shard_count: int, shards_prefix: str
) -> list[Problem]:
    """min_clients cannot exceed the number of workers (one per shard)."""
    if min_clients is None or min_clients <= shard_count:
        return []
    return [
        Problem(
            code=ProblemCode.INVALID_CONFIG,
            message=(
                f"min_clients is {min_clients} but {shards_prefix} has {shard_count} shard(s), "
                "one per worker"
            ),
            hint="lower min_clients or upload more shards",
            path=shards_prefix,
        )
    ]


# --- shared ---------------------------------------------------------------------------------


def _capped(problems: list[Problem], path: str) -> list[Problem]:
    """At most `MAX_PROBLEMS_PER_FILE` problems of one file, then one that counts the rest."""
    if len(problems) <= MAX_PROBLEMS_PER_FILE:
        return problems
    shown = problems[:MAX_PROBLEMS_PER_FILE]
    more = Problem(
        code=shown[-1].code,
        message=f"{path}: further problems like these are not listed",
        hint=shown[-1].hint,
        path=path,
    )
    return [*shown, more]
