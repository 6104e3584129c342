"""The stream's token: the shared secret of a push side and its server, one file on each side.

sr-upload sends it with every model, sr-receive checks it (and nginx-rtmp's on_publish through
it), sr-push puts it into the publish URL and sr-live's listener checks it there. It is read from
a file or the environment variable SRTOOLS_UPLOAD_TOKEN, never from the command line, where other
users could read it in ps. (A module of its own, free of torch, so that sr-live starts fast.)
"""

from __future__ import annotations

import logging
import os
import re
import stat
from pathlib import Path

from ..errors import UsageError

log = logging.getLogger("srtools.token")

TOKEN_ENV = "SRTOOLS_UPLOAD_TOKEN"
# A token goes into an HTTP header: visible ASCII only.
_TOKEN = re.compile(r"[\x21-\x7e]+")
_MIN_TOKEN_CHARS = 16


def read_token(path: str | None) -> str:
    """The shared secret from the file ``path`` (surrounding whitespace stripped), or from
    $SRTOOLS_UPLOAD_TOKEN when ``path`` is None.

    Raises:
        UsageError: no token, an unreadable file, or characters an HTTP header cannot carry.
    """
    if path is not None:
        try:
            token = Path(path).read_text().strip()
            mode = os.stat(path).st_mode
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"{path}: cannot read the token file ({getattr(exc, 'strerror', None) or exc})") from None
        if mode & (stat.S_IRGRP | stat.S_IROTH):
            log.warning("%s: the token file is readable by other users (chmod 600 it)", path)
        where = path
    else:
        token = os.environ.get(TOKEN_ENV, "").strip()
        if not token:
            raise UsageError(f"no upload token: give --token-file FILE or set {TOKEN_ENV}")
        where = TOKEN_ENV
    if not _TOKEN.fullmatch(token):
        raise UsageError(f"{where}: the token must be one word of visible ASCII characters")
    if len(token) < _MIN_TOKEN_CHARS:
        log.warning("%s: a token of %d characters is easy to guess (use e.g. `openssl rand -hex 32`)",
                    where, len(token))
    return token
