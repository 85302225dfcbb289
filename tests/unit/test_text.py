"""The pure helpers behind "bad input is a 422 naming the field" (kit/text.py) and the
submission-time checks that need no database (batch fingerprints, tar archives)."""

from __future__ import annotations

import base64
import io
import json
import tarfile

import pytest

from quarterdeck.exceptions import ValidationFailed
from quarterdeck.kit.text import json_syntax_message, line_column, nul_fields
from quarterdeck.runs.models import RunCreate
from quarterdeck.runs.submission import batch_hash
from quarterdeck.runs.workspace_upload import decode_archive


def test_nul_fields_name_every_path_in_document_order() -> None:
    doc = {
        "prompt": "a\x00",
        "metadata": {"ok": "v", "k\x00": "v", "x": "\x00"},
        "runs": [{"prompt": "fine"}, {"prompt": "b\x00", "tags": ["t", "\x00"]}],
        "n": 5,
        "none": None,
    }
    assert nul_fields(doc) == [
        "prompt",
        "metadata.k\\u0000",
        "metadata.x",
        "runs.1.prompt",
        "runs.1.tags.1",
    ]
    assert nul_fields("\x00") == ["body"]
    assert nul_fields([{"a": "b"}, "\x00"]) == ["1"]
    assert nul_fields({"clean": ["text", 1, 2.5, True, None]}) == []


@pytest.mark.parametrize(
    ("doc", "pos", "where"),
    [("abc", 0, (1, 1)), ("abc", 2, (1, 3)), ("a\nbc", 3, (2, 2)), ("a\n\n", 3, (3, 1))],
)
def test_line_column_counts_like_an_editor(doc: str, pos: int, where: tuple[int, int]) -> None:
    assert line_column(doc, pos) == where


def test_json_syntax_message_agrees_with_the_decoder() -> None:
    doc = '{\n  "prompt": "x",,\n}'
    with pytest.raises(json.JSONDecodeError) as err:
        json.loads(doc)
    e = err.value
    message = json_syntax_message(e.doc, e.pos, e.msg)
    assert message == f"invalid JSON at line {e.lineno} column {e.colno}: {e.msg}"
    assert json_syntax_message(None, None, "bad") == "invalid JSON: bad"


def test_a_batch_fingerprint_covers_the_whole_batch() -> None:
    runs = [RunCreate(prompt="a"), RunCreate(prompt="b")]
    same = [RunCreate(prompt="a"), RunCreate(prompt="b")]
    assert batch_hash(runs) == batch_hash(same)
    for other in (runs[:1], runs[::-1], [*runs, RunCreate(prompt="c")]):
        assert batch_hash(other) != batch_hash(runs)


def test_an_archive_must_open_as_tar() -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        info = tarfile.TarInfo("a.txt")
        info.size = 1
        tf.addfile(info, io.BytesIO(b"a"))
    assert decode_archive(base64.b64encode(buf.getvalue()).decode()) == buf.getvalue()
    for bad in (b"plain text " * 100, b"\x1f\x8b" + b"\x00" * 100, buf.getvalue()[:30]):
        with pytest.raises(ValidationFailed) as exc:
            decode_archive(base64.b64encode(bad).decode())
        assert exc.value.extra["errors"][0]["field"] == "workspace.value"
