"""The service's control token: one secret in a file only its user can read.

Every state-changing HTTP call carries it as ``Authorization: Bearer <token>``. The file is
created (mode 0600, atomically, never over an existing one) on first use; an existing file that
its group or others can read, or that another user owns, is refused rather than trusted.
"""

from __future__ import annotations

import contextlib
import hmac
import ipaddress
import os
import secrets
import stat
import tempfile
from pathlib import Path

from sicell.errors import UsageError

TOKEN_NAME = "token"  # the default token file inside the data directory
_MIN_LEN = 16


def default_token_file(data_dir: Path) -> Path:
    return data_dir / TOKEN_NAME


def _check_private(path: Path) -> None:
    st = path.stat()
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise UsageError(
            f"{path}: the token file is open to group or others "
            f"(mode {stat.S_IMODE(st.st_mode):o}); run `chmod 600 {path}`"
        )
    if st.st_uid != os.getuid():
        raise UsageError(f"{path}: the token file belongs to another user (uid {st.st_uid})")


def _create(path: Path) -> None:
    """Write a new random token to ``path`` unless it exists (another process may race us)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".token-", suffix=".tmp")  # mode 0600
    try:
        with os.fdopen(fd, "w", encoding="ascii") as f:
            f.write(secrets.token_urlsafe(32) + "\n")
            f.flush()
            os.fsync(f.fileno())
        # atomic, and never replaces a token someone already has (then that one is used)
        with contextlib.suppress(FileExistsError):
            os.link(tmp, path)
    finally:
        os.unlink(tmp)


def load_token(path: Path, *, create: bool = True) -> str:
    """The token in ``path``; a new one is written there first when the file is missing and
    ``create`` is set. Raises UsageError for a file others can read, or one too short."""
    if not path.exists():
        if not create:
            raise UsageError(f"{path}: no such token file")
        _create(path)
    _check_private(path)
    token = path.read_text(encoding="utf-8", errors="replace").strip()
    if len(token) < _MIN_LEN or any(c.isspace() for c in token):
        raise UsageError(
            f"{path}: a token must be one word of at least {_MIN_LEN} characters "
            "(delete the file to have a new one made)"
        )
    return token


def token_matches(expected: str, given: str) -> bool:
    """Constant-time comparison of a presented token with the service's."""
    return hmac.compare_digest(expected.encode("utf-8"), given.encode("utf-8"))


def is_local_host(host: str) -> bool:
    """Whether binding to ``host`` keeps the service on this machine (loopback only)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
