"""The token that changes (enrol, forget, thresholds) need; reads need none.

The token is random and printed at start-up, or read from a file (``--token-file``) so a
service can keep it stable across restarts. The page sends it in the ``X-KWS-Token`` header;
a cross-site page cannot set that header without the browser asking the server first (CORS,
which this server never grants), and cannot read the token.
"""
from __future__ import annotations

import hmac
import secrets
from pathlib import Path
from typing import Optional

HEADER = "X-KWS-Token"
MIN_LENGTH = 8


class TokenError(ValueError):
    """A token file that cannot be used; the message names the file."""


def new_token() -> str:
    return secrets.token_urlsafe(18)


def read_token_file(path) -> str:
    """The token in ``path`` (its first line, whitespace stripped)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as e:
        raise TokenError(f"token file not found: {path}") from e
    except (OSError, UnicodeDecodeError) as e:
        raise TokenError(f"{path}: cannot read the token file ({e})") from e
    lines = text.strip().splitlines()
    token = lines[0].strip() if lines else ""
    if len(token) < MIN_LENGTH:
        raise TokenError(f"{path}: the token must be at least {MIN_LENGTH} characters on the "
                         f"first line (found {len(token)})")
    return token


def token_from(token_file: Optional[str]) -> str:
    return read_token_file(token_file) if token_file else new_token()


def allowed(expected: str, given: Optional[str]) -> bool:
    """Constant-time comparison; a missing token is refused."""
    if not given:
        return False
    return hmac.compare_digest(expected.encode("utf-8"), given.encode("utf-8"))
