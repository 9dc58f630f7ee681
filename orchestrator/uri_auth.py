"""Credentials inside tracking and study URIs (`http://user:password@host:5000`,
`postgresql://user:password@host/db`): they work, and they are never printed, logged, tagged or
put on a command line.

- An HTTP(S) MLflow URI gives its user and password to MLflow's own variables
  (MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD, which its client sends as basic auth), and
  the rest of the program only ever sees the URI without them.
- A database URI must keep them (SQLAlchemy reads them from the URI): `redact` is what any
  message shows, and `submit` hands such a URI to the job through its environment, which Ray
  redacts in its dashboard and job list, not through its entrypoint.
"""
from __future__ import annotations

import base64
import os
from typing import MutableMapping
from urllib.parse import unquote, urlsplit, urlunsplit

USERNAME_ENV = "MLFLOW_TRACKING_USERNAME"
PASSWORD_ENV = "MLFLOW_TRACKING_PASSWORD"
HIDDEN = "***"


def _parts(uri: str):
    try:
        return urlsplit(uri)
    except ValueError:  # e.g. an invalid IPv6 host: not ours to judge here
        return None


def has_credentials(uri: str | None) -> bool:
    parts = _parts(uri) if uri else None
    return bool(parts and "@" in parts.netloc)


def redact(uri: str | None) -> str | None:
    """The URI with its user and password replaced by ***; other URIs unchanged."""
    if not has_credentials(uri):
        return uri
    parts = _parts(uri)
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"{HIDDEN}@{host}"))


def redact_text(text: str, uri: str | None) -> str:
    """`text` (a driver's error message, say) with `uri`'s credentials hidden wherever it shows them."""
    parts = _parts(uri) if has_credentials(uri) else None
    if parts is None:
        return text
    text = text.replace(uri, redact(uri))
    for secret in {parts.password, unquote(parts.password or "")} - {None, ""}:
        text = text.replace(secret, HIDDEN)
    return text


def adopt(uri: str, environ: MutableMapping[str, str] | None = None) -> str:
    """For an HTTP(S) URI with credentials: put them in MLflow's variables and return the URI
    without them. Other URIs are returned unchanged."""
    if not has_credentials(uri) or not uri.lower().startswith(("http://", "https://")):
        return uri
    env = os.environ if environ is None else environ
    parts = _parts(uri)
    userinfo, host = parts.netloc.rsplit("@", 1)
    user, _, password = userinfo.partition(":")
    env[USERNAME_ENV] = unquote(user)
    if password:
        env[PASSWORD_ENV] = unquote(password)
    return urlunsplit(parts._replace(netloc=host))


def basic_auth_header(environ: MutableMapping[str, str] | None = None) -> dict[str, str]:
    """The Authorization header MLflow's client would send, for our own probes of the server."""
    env = os.environ if environ is None else environ
    user, password = env.get(USERNAME_ENV), env.get(PASSWORD_ENV)
    if not user:
        return {}
    token = base64.b64encode(f"{user}:{password or ''}".encode()).decode()
    return {"Authorization": f"Basic {token}"}
