"""The job folder checks of `rondo.contracts.job_checks`, on bytes and ZIP directories."""

import io
import zipfile

import pytest
from support.job_files import manifest_line, symlink_entry, zip_bytes

from rondo.contracts.job_checks import (
    MAX_PROBLEMS_PER_FILE,
    ArchiveLimits,
    Problem,
    ProblemCode,
    check_app_config,
    check_manifest,
    check_min_clients,
    check_model_def,
    check_requirements,
    check_shard_directory,
)

SHARD = "jobs/j/shards/shard_0.zip"
MODEL_DEF = "jobs/j/scripts/model_def.py"


def entries(data: bytes) -> list[zipfile.ZipInfo]:
    return zipfile.ZipFile(io.BytesIO(data)).infolist()


def codes(problems: list[Problem]) -> list[ProblemCode]:
    return [problem.code for problem in problems]


# --- shard directories ----------------------------------------------------------------------


def test_a_flat_shard_has_no_problems() -> None:
    data = zip_bytes({"manifest.ndjson": manifest_line("a", "img/a.png"), "img/a.png": b"x"})
    assert check_shard_directory(entries(data), SHARD, ArchiveLimits()) == []


def test_a_wrapper_folder_is_named_with_where_the_manifest_is() -> None:
    data = zip_bytes({"digits/manifest.ndjson": manifest_line("a", "a.txt"), "digits/a.txt": b""})
    [problem] = check_shard_directory(entries(data), SHARD, ArchiveLimits())
    assert problem.code == ProblemCode.MANIFEST_MISSING
    assert problem.entry == "digits/manifest.ndjson"
    assert SHARD in problem.message and "inside the folder 'digits/'" in problem.message
    assert "contents of 'digits/'" in problem.hint

    [absent] = check_shard_directory(entries(zip_bytes({"a.txt": b""})), SHARD, ArchiveLimits())
    assert absent.code == ProblemCode.MANIFEST_MISSING
    assert "no manifest.ndjson" in absent.message


def test_unsafe_entries_are_each_named() -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("manifest.ndjson", manifest_line("a", "a.txt"))
        archive.writestr("../evil.txt", b"x")
        archive.writestr("/etc/cron.d/x", b"x")
        archive.writestr("C:\\windows\\x", b"x")
        archive.writestr("data\\..\\..\\up.txt", b"x")
        archive.writestr(symlink_entry("a.txt"), "/etc/passwd")
    problems = check_shard_directory(entries(buffer.getvalue()), SHARD, ArchiveLimits())

    assert codes(problems) == [ProblemCode.UNSAFE_ENTRY] * 5
    by_entry = {problem.entry: problem.message for problem in problems}
    assert "escapes the shard folder" in by_entry["../evil.txt"]
    assert "'../evil.txt'" in by_entry["../evil.txt"]
    assert "absolute path" in by_entry["/etc/cron.d/x"]
    assert "absolute path" in by_entry["C:\\windows\\x"]
    assert "escapes" in by_entry["data\\..\\..\\up.txt"]
    assert "symbolic link" in by_entry["a.txt"]
    assert all(message.startswith(SHARD) for message in by_entry.values())


def test_encrypted_entries_are_refused() -> None:
    data = bytearray(zip_bytes({"manifest.ndjson": manifest_line("a", "a.txt"), "a.txt": b"a"}))
    archive_entries = entries(bytes(data))
    archive_entries[1].flag_bits |= 0x1  # as a password-protected ZIP marks it
    [problem] = check_shard_directory(archive_entries, SHARD, ArchiveLimits())
    assert problem.code == ProblemCode.UNSAFE_ENTRY and "encrypted" in problem.message


def test_zip_bombs_trip_each_limit() -> None:
    zeros = zip_bytes({"manifest.ndjson": b"", "zeros.bin": bytes(4 * 1024 * 1024)})
    [ratio] = check_shard_directory(entries(zeros), SHARD, ArchiveLimits(max_ratio=50))
    assert ratio.code == ProblemCode.ZIP_BOMB and ratio.entry == "zeros.bin"
    assert "expands" in ratio.message and "limit 50x" in ratio.message

    many = zip_bytes({f"f{i}.txt": b"" for i in range(10)} | {"manifest.ndjson": b""})
    [count] = check_shard_directory(entries(many), SHARD, ArchiveLimits(max_entries=5))
    assert count.code == ProblemCode.ZIP_BOMB and "11 entries" in count.message

    limits = ArchiveLimits(max_total_bytes=1000, ratio_check_min_bytes=10**9)
    [total] = check_shard_directory(entries(zeros), SHARD, limits)
    assert total.code == ProblemCode.ZIP_BOMB and "over the limit of 1000" in total.message


def test_a_small_highly_compressible_file_is_not_a_bomb() -> None:
    data = zip_bytes({"manifest.ndjson": b"", "zeros.bin": bytes(512 * 1024)})
    assert check_shard_directory(entries(data), SHARD, ArchiveLimits()) == []


def test_thousands_of_faults_are_listed_up_to_a_cap() -> None:
    data = zip_bytes({f"../f{i}": b"" for i in range(100)} | {"manifest.ndjson": b""})
    problems = check_shard_directory(entries(data), SHARD, ArchiveLimits())
    assert len(problems) == MAX_PROBLEMS_PER_FILE + 1
    assert "not listed" in problems[-1].message


# --- manifests ------------------------------------------------------------------------------


def test_manifest_lines_are_checked_with_their_line_numbers() -> None:
    content = b"".join(
        [
            manifest_line("a", "a.txt"),
            b"\n",  # blank lines are fine
            b'{"id": "b", "uri": "b.txt", "y": [0]\n',  # line 3: not JSON
            b'{"uri": "a.txt", "y": [0]}\n',  # line 4: no id
            b'{"id": "c", "y": [0]}\n',  # line 5: no uri
            b'{"id": "d", "uri": "a.txt"}\n',  # line 6: no y
            b'{"id": "e", "uri": "a.txt", "y": [-1]}\n',  # line 7: negative label
            manifest_line("f", "../outside.txt"),  # line 8
            manifest_line("g", "/abs/a.txt"),  # line 9
            manifest_line("h", "missing.txt"),  # line 10
            manifest_line("i", "https://data.example/i.png"),  # URLs are the user's to fetch
            manifest_line("j", "./sub/./a.txt"),
            b"[1, 2]\n",  # line 13: not an object
        ]
    )
    problems = check_manifest(content, SHARD, ["manifest.ndjson", "a.txt", "sub/a.txt"])

    assert {problem.line: problem.message for problem in problems}.keys() == {
        3,
        4,
        5,
        6,
        7,
        8,
        9,
        10,
        13,
    }
    by_line = {problem.line: problem.message for problem in problems}
    assert "not valid JSON" in by_line[3]
    assert "'id': Field required" in by_line[4]
    assert "'uri': Field required" in by_line[5]
    assert "'y': Field required" in by_line[6]
    assert "'y.0'" in by_line[7]
    assert "escapes the shard" in by_line[8]
    assert "absolute path" in by_line[9]
    assert "'missing.txt' is not a file in the ZIP" in by_line[10]
    assert all(p.code == ProblemCode.INVALID_MANIFEST and p.path == SHARD for p in problems)
    assert by_line[4].startswith(f"{SHARD}: manifest.ndjson line 4:")


# --- model_def.py ---------------------------------------------------------------------------


def test_torch_used_without_its_import_is_name_not_defined_with_the_place() -> None:
    source = b"from torch import nn\n\n\ndef fl_train_model(p, o):\n    return torch.ones(1)\n"
    [problem] = check_model_def(source, MODEL_DEF)
    assert problem.code == ProblemCode.NAME_NOT_DEFINED
    assert (problem.line, problem.column) == (5, 12)
    assert "name 'torch' is not defined" in problem.message and MODEL_DEF in problem.message
    assert "import" in problem.hint


VALID_SCOPES = b"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

try:
    import yaml
except ImportError:
    yaml = None

COUNTER = 0


def bump() -> None:
    global COUNTER, CREATED_LATER
    COUNTER += 1
    CREATED_LATER = 1


def uses(x: np.ndarray, *args: Undeclared, **kwargs: Whatever) -> Later:
    local: NotAtRuntime = 1
    del local
    squares = [n * n for n in range(3) if n]
    pairs = {k: v for k, v in zip(squares, squares)}
    total = sum(value for value in pairs.values())
    if (found := total) > 0:
        print(found, CREATED_LATER, __name__, __file__, yaml)
    return (lambda sep=os.sep: sep)()


class Model:
    scale = 2
    doubled = [scale * 2]

    def forward(self, value: int) -> int:
        nonlocal_helper = self.scale
        return value * nonlocal_helper


def outer():
    captured = 1

    def inner():
        return captured

    class Local:
        value = captured

    return inner, Local


def fl_train_model(payload, out_dir, logger=None):
    return {"weights": {}, "samples": len(payload), "metrics": {}}
"""


def test_scopes_that_resolve_at_run_time_are_not_flagged() -> None:
    assert check_model_def(VALID_SCOPES, MODEL_DEF) == []


@pytest.mark.parametrize(
    ("source", "name"),
    [
        # A class body's names are not visible in its methods.
        (b"class M:\n    k = 1\n    def f(self):\n        return k\n", "k"),
        # Nor in a comprehension of the class body.
        (b"class M:\n    k = 1\n    ks = [k for _ in range(2)]\n", "k"),
        # Function annotations run at definition time without the future import.
        (b"def f(x: np.ndarray):\n    pass\n", "np"),
        (b"def f():\n    return [torch for _ in range(2)]\n", "torch"),
        (b"x: Tensor = 1\n", "Tensor"),  # module-level annotations run too
    ],
)
def test_names_that_fail_at_run_time_are_flagged(source: bytes, name: str) -> None:
    problems = check_model_def(source + b"def fl_train(m, e, o):\n    pass\n", MODEL_DEF)
    assert [(p.code, f"'{name}'" in p.message) for p in problems] == [
        (ProblemCode.NAME_NOT_DEFINED, True)
    ]


@pytest.mark.parametrize(
    "source",
    [
        b"from torch import *\nx = nn.Linear(1, 1)\n",  # star import: no way to know
        b"globals()['torch'] = __import__('torch')\nx = torch.ones(1)\n",
        b"exec('import torch')\nx = torch.ones(1)\n",
    ],
)
def test_modules_that_define_names_dynamically_are_not_checked(source: bytes) -> None:
    assert codes(check_model_def(source + b"fl_train_model = print\n", MODEL_DEF)) == []


def test_syntax_errors_give_line_and_column() -> None:
    [problem] = check_model_def(b"import torch\n\ndef fl_train_model(:\n    pass\n", MODEL_DEF)
    assert problem.code == ProblemCode.SYNTAX_ERROR
    assert (problem.line, problem.column) == (3, 20)
    assert f"{MODEL_DEF}: syntax error (line 3, column 20)" in problem.message

    [outside] = check_model_def(b"return 1\n", MODEL_DEF)
    assert outside.code == ProblemCode.SYNTAX_ERROR and "'return' outside function" in (
        outside.message
    )
    [binary] = check_model_def(b"\xff\xfe\x00", MODEL_DEF)
    assert binary.code == ProblemCode.SYNTAX_ERROR and "UTF-8" in binary.message
    [deep] = check_model_def(b"x = 1" + b" + y" * 100_000 + b"\n", MODEL_DEF)
    assert deep.code == ProblemCode.SYNTAX_ERROR and "cannot be compiled" in deep.message
    # Compiles, yet nests too deeply to walk: left to the run rather than crashing.
    assert check_model_def(b"x = 1" + b" + y" * 1000 + b"\n", MODEL_DEF) == []


def test_the_training_function_and_the_configured_model_class_must_exist() -> None:
    problems = check_model_def(b"import torch\n", MODEL_DEF, model_class="Net")
    assert codes(problems) == [
        ProblemCode.TRAIN_FUNCTION_MISSING,
        ProblemCode.MODEL_CLASS_MISSING,
    ]
    assert "fl_train_model nor fl_train" in problems[0].message
    assert "'Net'" in problems[1].message
    # Imported or assigned names count; a custom app's executor decides what it calls.
    assert check_model_def(b"from helpers import fl_train_model\n", MODEL_DEF) == []
    assert check_model_def(b"fl_train = print\n", MODEL_DEF) == []
    assert check_model_def(b"import torch\n", MODEL_DEF, needs_train_function=False) == []


# --- requirements.txt -----------------------------------------------------------------------


def test_requirements_parse_like_pip_and_name_each_bad_line() -> None:
    content = b"""# extra packages
numpy==2.1.0  # pinned
scikit-learn>=1.5 ; python_version >= "3.11"
pkg @ https://files.example/pkg-1.0-py3-none-any.whl --hash=sha256:abc
--index-url https://pypi.org/simple
--extra-index-url=https://download.pytorch.org/whl/cpu
long-name\\
  ==1.0
-r other.txt
-e ./src
--user
not a requirement!
./local.whl
"""
    problems = check_requirements(content, "r.txt")

    assert codes(problems) == [ProblemCode.INVALID_REQUIREMENTS] * 5
    by_line = {problem.line: problem.message for problem in problems}
    assert "includes another file" in by_line[9]
    assert "editable install" in by_line[10]
    assert "'--user' is not an option Rondo accepts" in by_line[11]
    assert "not a valid requirement" in by_line[12]
    assert "'./local.whl'" in by_line[13]
    assert by_line[9].startswith("r.txt line 9:")
    assert check_requirements(b"", "r.txt") == []
    assert codes(check_requirements(b"\xff", "r.txt")) == [ProblemCode.INVALID_REQUIREMENTS]


# --- configs ------------------------------------------------------------------------------


def test_app_configs_must_be_json_objects() -> None:
    assert check_app_config(b'{"format_version": 2}', "configs/meta.json") == []
    [broken] = check_app_config(b'{"format_version": 2,}', "configs/meta.json")
    assert broken.code == ProblemCode.INVALID_APP_CONFIG
    assert (broken.line, broken.column) == (1, 22)
    assert "configs/meta.json is not valid JSON" in broken.message
    [listed] = check_app_config(b"[]", "configs/meta.json")
    assert "not an object" in listed.message


def test_min_clients_cannot_exceed_the_shards() -> None:
    assert check_min_clients(None, 1, "jobs/j/shards/") == []
    assert check_min_clients(2, 2, "jobs/j/shards/") == []
    [problem] = check_min_clients(3, 2, "jobs/j/shards/")
    assert problem.code == ProblemCode.INVALID_CONFIG
    assert "min_clients is 3 but jobs/j/shards/ has 2 shard(s)" in problem.message
