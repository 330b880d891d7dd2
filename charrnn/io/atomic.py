"""Writing a file atomically: into a temporary file beside it, flushed to disk, then renamed over it."""

import os
import secrets


def write_atomically(path, suffix, write):
    """Call ``write(f)`` on a new binary file beside ``path`` (named ``.tmp-<random><suffix>``), fsync it
    and rename it to ``path``; on any failure remove the temporary file and re-raise."""
    directory = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(directory, f".tmp-{secrets.token_hex(8)}{suffix}")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # the umask applies, unlike mkstemp's 0600
    except OSError as e:  # a missing or read-only folder: name the file asked for, not the temporary one
        raise OSError(e.errno, e.strerror, path) from None
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
