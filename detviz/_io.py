"""Writing a file so that a crash, a full disk or an interrupt never leaves half of it."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

__all__ = ["write_atomic"]


def write_atomic(path, data: str | bytes) -> None:
    """Write ``data`` (text as UTF-8, as given: no newline translation) to a temporary file next to
    ``path``, then ``os.replace`` it onto ``path``: readers see the old file or the whole new one,
    never half of one; a failure leaves no temporary."""
    path = Path(path)
    payload = data.encode("utf-8") if isinstance(data, str) else data
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(descriptor, "wb") as file:
            file.write(payload)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temporary, 0o644)  # mkstemp makes it owner-only
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise
