"""Tar workspaces uploaded with a run: decoded and checked before the run exists.

Separate from :mod:`quarterdeck.runs.submission` because it is a different concern: submission
is about runs (idempotency, routing, group-committed inserts); this is about one input's bytes,
the base64 tar archive of ``workspace.type = tar``, and why it is refused with a 422 at the door
(not valid base64, over :data:`MAX_ARCHIVE_BYTES`, not a readable tar) instead of a run that
fails once a worker tries to extract it. It needs nothing of the run store, so it sits at the
bottom of the folder. ``submission`` re-exports :data:`MAX_ARCHIVE_BYTES`.
"""

from __future__ import annotations

import base64
import binascii
import io
import tarfile
import zlib

from quarterdeck.exceptions import ValidationFailed

MAX_ARCHIVE_BYTES = 50 * 1024 * 1024


def decode_archive(value: str) -> bytes:
    try:
        data = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ValidationFailed(
            "workspace.value must be a base64-encoded tar archive",
            errors=[{"field": "workspace.value", "message": "not valid base64"}],
        ) from None
    if len(data) > MAX_ARCHIVE_BYTES:
        raise ValidationFailed(
            f"workspace archive is {len(data)} bytes; the limit is {MAX_ARCHIVE_BYTES}",
            errors=[{"field": "workspace.value", "message": "archive too large"}],
        )
    check_archive(data)
    return data


def check_archive(data: bytes) -> None:
    """422 now for bytes that are not a tar archive (plain, gzip, bzip2 or xz), rather than a
    run that fails once a worker tries to extract them. Only the first member's header is read
    (what ``tarfile.open`` reads), so the check costs the same for any size and cannot be made
    to decompress a bomb; members are checked one by one when the worker extracts them."""
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:*"):
            pass
    except (tarfile.TarError, OSError, EOFError, ValueError, zlib.error):
        raise ValidationFailed(
            "workspace.value is not a readable tar archive (plain, gzip, bzip2 or xz)",
            errors=[{"field": "workspace.value", "message": "not a readable tar archive"}],
        ) from None
