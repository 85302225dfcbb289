"""Which workspace sources a caller may name, decided before a run is accepted.

A ``path`` source, or a git source that is a local path or a ``file://`` URL, makes the worker
read the *server's* filesystem on the caller's behalf. Only an admin may ask for that, and only
under the directories the operator listed in ``QUARTERDECK_WORKSPACE_ROOTS``; ``/proc``, ``/sys``
and ``/dev`` are refused even then (``/proc/self`` once made a worker copy 61 GB in 30 s).
Remote git is https only, to ``QUARTERDECK_GIT_ALLOWED_HOSTS``, never to an IP literal or a
local name: clones run without the operator's credentials, so ssh (which needs a key) cannot
work and is refused with that reason rather than failing later.

The same functions run twice: at submission, so the caller gets a 403 or 422 saying why, and
again when the worker builds the workspace, against the settings it has then (defence in depth;
the agent runtime also copies as the run's own unprivileged user).
"""

from __future__ import annotations

import fnmatch
import ipaddress
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

from quarterdeck.exceptions import ValidationFailed
from quarterdeck.security.auth.errors import Forbidden

FORBIDDEN_TREES = (Path("/proc"), Path("/sys"), Path("/dev"))
"""Kernel views, never a source: endless files, symlinks to the whole host, devices."""
_LOCAL_NAMES = ("localhost", "localhost.localdomain", "metadata", "metadata.google.internal")
_LOCAL_SUFFIXES = (".localhost", ".local", ".internal", ".localdomain", ".home.arpa")
_HOST = re.compile(
    r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)+$"
)
ADMIN_ONLY = "admin role (workspace sources on the server's filesystem)"
UNAVAILABLE = "is not available: no readable directory there (missing, not a directory or denied)"
"""One answer for every reason a path under a root cannot be used, so none is told apart."""


class SourceRefused(ValidationFailed):
    """422: the workspace source is not acceptable whoever asks (outside the roots, a special
    file, a URL we will not clone)."""

    type_slug = "workspace-source-refused"
    title = "Workspace source refused"

    def __init__(self, detail: str, *, field: str = "workspace.value") -> None:
        super().__init__(detail, errors=[{"field": field, "message": detail}])


class ServerSourceForbidden(Forbidden):
    """403: a non-admin asked for a source that reads the server's filesystem."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail, permission=ADMIN_ONLY)


@dataclass(frozen=True)
class GitSource:
    """A git source after checking: ``url`` to clone; ``local`` is the resolved repository
    directory for a local clone (None for https)."""

    url: str
    local: Path | None = None
    host: str | None = None
    port: int = 443


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def resolve_server_path(
    value: str, roots: list[Path], deny: list[Path] | None = None, *, must_exist: bool = True
) -> Path:
    """The real directory ``value`` names, if it is inside one of ``roots`` and outside every
    ``deny`` tree (Quarterdeck's data directory: keys, the database, other runs' workspaces);
    else :class:`SourceRefused`. Symlinks and ``..`` are resolved *before* the checks.

    ``must_exist=False`` (at submission) stops there: whether a path under a root exists, or
    is a directory, is not said to the caller then, since a 422 for a missing path and a 202 for
    an existing one would let any admin-key holder probe the server's tree. The worker checks
    with ``must_exist=True`` and fails the run, with one message for a path that is missing,
    not a directory or unreadable (:data:`UNAVAILABLE`)."""
    if "\0" in value or not value.startswith("/"):
        raise SourceRefused(f"workspace path {value!r} must be an absolute path")
    real = Path(os.path.realpath(value))
    for tree in FORBIDDEN_TREES:
        if _inside(real, tree):
            raise SourceRefused(
                f"workspace path {value!r} resolves to {str(real)!r}, inside {tree}: kernel "
                "and device trees are never workspace sources"
            )
    for tree in deny or []:
        real_tree = Path(os.path.realpath(tree))
        if _inside(real, real_tree) or _inside(real_tree, real):
            raise SourceRefused(
                f"workspace path {value!r} resolves to {str(real)!r}, which holds or is inside "
                "Quarterdeck's data directory (keys, database, other runs' workspaces)"
            )
    if not roots:
        raise SourceRefused(
            "server paths are disabled: no workspace roots are configured "
            "(QUARTERDECK_WORKSPACE_ROOTS)"
        )
    real_roots = [Path(os.path.realpath(root)) for root in roots]
    if not any(_inside(real, root) for root in real_roots):
        shown = ", ".join(str(r) for r in real_roots)
        raise SourceRefused(
            f"workspace path {value!r} resolves to {str(real)!r}, outside the configured "
            f"workspace roots ({shown})"
        )
    if not must_exist:
        return real
    try:
        is_dir = stat.S_ISDIR(os.stat(real).st_mode)
    except OSError:
        is_dir = False
    if not is_dir:
        raise SourceRefused(f"workspace path {value!r} {UNAVAILABLE}")
    return real


def host_refusal(host: str, allowed: list[str]) -> str | None:
    """Why an https clone from ``host`` is refused (None: allowed). ``allowed`` entries match
    exactly or as globs (``*.example.com``); empty admits any public DNS name."""
    host = host.lower().rstrip(".")
    try:
        ipaddress.ip_address(host.strip("[]"))
        return f"{host} is an IP address; name a git host"
    except ValueError:
        pass
    if host in _LOCAL_NAMES or host.endswith(_LOCAL_SUFFIXES) or not _HOST.match(host):
        return f"{host!r} is not a public host name"
    if allowed and not any(fnmatch.fnmatchcase(host, p.lower().rstrip(".")) for p in allowed):
        return f"{host} is not in the allowed git hosts ({', '.join(allowed)})"
    return None


def check_git(
    url: str,
    roots: list[Path],
    allowed_hosts: list[str],
    deny: list[Path] | None = None,
    *,
    must_exist: bool = True,
) -> GitSource:
    """Classify and check a git source (see the module docstring; ``must_exist`` as for
    :func:`resolve_server_path`)."""
    if url.startswith("-") or any(c in url for c in "\0\n\r\t "):
        raise SourceRefused(f"refusing git URL {url!r}")
    if url.startswith("/"):
        local = resolve_server_path(url, roots, deny, must_exist=must_exist)
        return GitSource(local.as_uri(), local)  # a local-path clone would ignore --depth
    match = re.match(r"^([A-Za-z][A-Za-z0-9+.-]*)://", url)
    if not match:
        if re.match(r"^[^/:]+@[^/:]+:", url) or re.match(r"^[A-Za-z0-9.-]+:[^/]", url):
            raise SourceRefused(
                f"git URL {url!r} is ssh: clones run without the operator's credentials, so "
                "use an https:// URL"
            )
        raise SourceRefused(f"refusing git URL {url!r}: use https:// (or, as an admin, a path)")
    scheme = match.group(1).lower()
    if scheme == "file":
        parts = urlsplit(url)
        if parts.netloc not in ("", "localhost"):
            raise SourceRefused(f"file URL {url!r} names a remote host")
        local = resolve_server_path(unquote(parts.path), roots, deny, must_exist=must_exist)
        return GitSource(local.as_uri(), local)
    if scheme == "ssh":
        raise SourceRefused(
            f"git URL {url!r} is ssh: clones run without the operator's credentials, so use "
            "an https:// URL"
        )
    if scheme != "https":
        raise SourceRefused(f"git URL scheme {scheme!r} not allowed (https, or file for admins)")
    try:
        parts = urlsplit(url)
        port = parts.port or 443
    except ValueError as exc:
        raise SourceRefused(f"git URL {url!r} is malformed: {exc}") from None
    if parts.username is not None or parts.password is not None:
        raise SourceRefused(
            "git URL must not carry credentials (they would be stored with the run)"
        )
    host = parts.hostname or ""
    why = host_refusal(host, allowed_hosts)
    if why:
        raise SourceRefused(f"refusing git URL {url!r}: {why}")
    return GitSource(url, None, host, port)


def reads_server(kind: str, value: str | None) -> bool:
    """True when the source makes the worker read its own filesystem (admins only)."""
    if kind == "path":
        return True
    if kind != "git" or not value:
        return False
    return value.startswith("/") or value.lower().startswith("file:")


def check_workspace(
    kind: str,
    value: str | None,
    *,
    admin: bool,
    roots: list[Path],
    allowed_hosts: list[str],
    deny: list[Path] | None = None,
) -> None:
    """Submission-time check of ``{"type": kind, "value": value}``: 403 for a non-admin asking
    for the server's filesystem, 422 for anything refused whoever asks. ``tar`` archives are
    checked member by member when the worker extracts them. Whether a server path exists is
    left to the worker (see :func:`resolve_server_path`)."""
    if reads_server(kind, value) and not admin:
        raise ServerSourceForbidden(
            f"a {kind!r} workspace that reads the server's filesystem ({value!r}) needs the "
            "admin role; upload the directory as a tar archive (quarterdeck run submit "
            "--workspace DIR) or use an https git URL"
        )
    if kind == "path":
        resolve_server_path(value or "", roots, deny, must_exist=False)
    elif kind == "git":
        check_git(value or "", roots, allowed_hosts, deny, must_exist=False)
