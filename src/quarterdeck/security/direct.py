"""Where ``quarterdeck keys``, ``audit`` and ``compliance`` get their data: the API, or Postgres.

These commands used to open the database named by the settings of whatever directory they ran
in. With ``POSTGRES_URL`` unset that is the embedded server under ``./.data``, so run anywhere
but the deployment's own directory they started a second, empty database (and made new audit
keys) and then advised ``db upgrade``, as if the real deployment were broken. So, like every
other client command, they talk to the running server through the API (``QUARTERDECK_URL``,
``QUARTERDECK_API_KEY``), and go to Postgres directly only when asked to:

- ``--direct`` was passed, or
- ``POSTGRES_URL`` is set (env, config file or secret file) and no API URL was given.

Direct access never creates anything: an embedded database is joined only in a data dir that
already holds one, and audit keys are read only where they already exist. Direct access is what
makes the first admin key (``quarterdeck keys create --direct`` where ``quarterdeck up`` runs)
and what lets an auditor verify the log without trusting the API process whose records it checks.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

from quarterdeck.kit.console import Api, fail

if TYPE_CHECKING:  # every `quarterdeck` command imports this module: keep it light
    import httpx

    from quarterdeck.config import Settings

DirectOpt = Annotated[
    bool,
    typer.Option(
        "--direct",
        "--database",
        help="Connect to Postgres directly instead of the API: POSTGRES_URL, or the embedded "
        "database of an existing data dir (QUARTERDECK_DATA_DIR, default ./.data). "
        "Default when POSTGRES_URL is set and QUARTERDECK_URL/--url is not.",
    ),
]


def use_direct(settings: Settings, direct: bool, url: str | None) -> bool:
    """Whether to open Postgres rather than call the API (see the module docstring)."""
    if direct:
        return True
    if url or os.environ.get("QUARTERDECK_URL"):
        return False
    return settings.postgres_url is not None


def api_request(
    url: str | None, method: str, path: str, *, hint: str = "", **kwargs: Any
) -> httpx.Response:
    """One API call with the CLI's key; any failure exits with the server's reason, and ``hint``
    (what to do instead, e.g. ``--direct`` for the first admin key) when the server cannot be
    reached or refused the caller's access."""
    import httpx

    api = Api(url)
    try:
        response = api.client.request(method, path, **kwargs)
    except httpx.ConnectError:
        fail(_unreachable(api.base, hint))
    except httpx.TimeoutException:
        fail(f"Quarterdeck at {api.base} did not answer in time{_tail(hint)}")
    finally:
        api.client.close()  # the body is read already: request() is not streamed
    if response.status_code >= 400:
        _fail_response(response, hint)
    return response


def _tail(hint: str) -> str:
    return f"\n{hint}" if hint else ""


def _unreachable(base: str, hint: str) -> str:
    return (
        f"cannot reach Quarterdeck at {base}: is `quarterdeck up` running? Set QUARTERDECK_URL "
        f"or --url to point elsewhere.{_tail(hint)}"
    )


def _fail_response(response: httpx.Response, hint: str) -> NoReturn:
    try:
        body = response.json()
        detail = body.get("detail") or body.get("title") or response.text
    except ValueError:
        detail = response.text
    if response.status_code == 401 and not os.environ.get("QUARTERDECK_API_KEY"):
        detail += " (set QUARTERDECK_API_KEY to a key with the right role)"
    access = response.status_code in (401, 403, 409)  # no key, wrong role, auth off: the hint
    fail(f"{response.status_code}: {detail}{_tail(hint) if access else ''}")


def api_lines(url: str | None, path: str, *, hint: str = "", **kwargs: Any) -> Iterator[str]:
    """The lines of a streamed API answer (JSON Lines exports), failing like :func:`api_request`."""
    import httpx

    api = Api(url)
    try:
        with api.client.stream("GET", path, **kwargs) as response:
            if response.status_code >= 400:
                response.read()
                _fail_response(response, hint)
            yield from response.iter_lines()
    except httpx.ConnectError:
        fail(_unreachable(api.base, hint))
    except httpx.TimeoutException:
        fail(f"Quarterdeck at {api.base} did not answer in time{_tail(hint)}")
    finally:
        api.client.close()


def no_data_dir_message(settings: Settings) -> str:
    path = settings.data_dir
    shown = str(path) if path.is_absolute() else f"./{path}"
    return (
        f"no Quarterdeck data dir at {shown}: start the server (`quarterdeck up`) and "
        "set QUARTERDECK_URL/QUARTERDECK_API_KEY, or set POSTGRES_URL, or run with --direct "
        "where the server's data dir is (or set QUARTERDECK_DATA_DIR to it)"
    )


def has_embedded_database(settings: Settings) -> bool:
    """True when the data dir already holds an embedded Postgres cluster (``pg/``)."""
    return (settings.data_dir / "pg").is_dir()


def direct_database_url(settings: Settings) -> str:
    """The database to open directly; exits with a clear message rather than creating one."""
    if settings.postgres_url is not None:
        return settings.postgres_url.get_secret_value()
    if not has_embedded_database(settings):
        fail(no_data_dir_message(settings))
    from quarterdeck.store.embedded import start_embedded

    return start_embedded(settings.data_dir)


def require_audit_keys(settings: Settings) -> None:
    """Exit unless the audit keys exist: generating new ones here would make every existing
    payload unreadable to this command and every checkpoint look forged."""
    from quarterdeck.security.audit.keys import MASTER_FILE, SIGNING_FILE

    keys = settings.data_dir / "keys"
    master = settings.audit_master_key is not None or settings.audit_master_key_file is not None
    if not master and not (keys / MASTER_FILE).is_file():
        fail(
            f"no audit master key: QUARTERDECK_AUDIT_MASTER_KEY(_FILE) is unset and "
            f"{keys / MASTER_FILE} does not exist. Use the API (QUARTERDECK_URL and an admin "
            "or auditor QUARTERDECK_API_KEY), or give this command the server's audit key "
            "settings or data dir"
        )
    if settings.audit_signing_key_file is None and not (keys / SIGNING_FILE).is_file():
        fail(
            f"no audit signing key: QUARTERDECK_AUDIT_SIGNING_KEY_FILE is unset and "
            f"{keys / SIGNING_FILE} does not exist. Use the API, or give this command the "
            "server's audit key settings or data dir"
        )
