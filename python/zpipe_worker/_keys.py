# SPDX-License-Identifier: MIT
"""CURVE key files, as `zpipe keygen` writes them and zpipe reads them
(transport/curve.c): a text file of at most 4096 bytes holding one Z85 key
of 40 characters on a line of its own, optionally after '#' comment lines
and blank lines, nothing but blank lines after it. A secret key file must
be a regular file that neither group nor others may access. Anything else
is refused with the same message zpipe gives, naming the file.
"""

import os
import stat

KEY_LEN = 40
KEY_FILE_MAX = 4096
Z85 = ("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
       ".-:+=^!/*?&<>()[]{}@%$#")
_DIGIT = {c: i for i, c in enumerate(Z85)}
_SPACE = b" \t\n\v\f\r"  # C's isspace


class KeyFileError(ValueError):
    """A key file that cannot be used; the text says why."""


def _is_key(line):
    """Whether 40 bytes are a Z85 key: every character of the alphabet, and
    every group of five a value below 2^32."""
    try:
        text = line.decode("ascii")
        for i in range(0, KEY_LEN, 5):
            v = 0
            for c in text[i:i + 5]:
                v = v * 85 + _DIGIT[c]
            if v >= 1 << 32:
                return False
    except (UnicodeDecodeError, KeyError):
        return False
    return True


def _read(path, what, secret):
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY
                     | os.O_NONBLOCK)
    except OSError as e:
        raise KeyFileError(f"cannot open {what} {path}: {e.strerror}") \
            from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise KeyFileError(f"{path} is not a regular file")
        mode = st.st_mode & 0o777
        if secret and mode & 0o077:
            raise KeyFileError(f"secret key file {path} is accessible to "
                               f"group or others (mode {mode:03o}); refusing "
                               f"it: run chmod 600 {path}")
        if st.st_size > KEY_FILE_MAX:
            raise KeyFileError(f"{path} is too large ({st.st_size} bytes, at "
                               f"most {KEY_FILE_MAX})")
        text = os.read(fd, KEY_FILE_MAX + 1)
    except OSError as e:
        raise KeyFileError(f"cannot read {path}: {e.strerror}") from None
    finally:
        os.close(fd)
    if len(text) > KEY_FILE_MAX:
        raise KeyFileError(f"{path} is too large (at most {KEY_FILE_MAX} "
                           f"bytes)")
    if b"\0" in text:
        raise KeyFileError(f"{path} holds binary data, not text")
    return text


def read_key(path, secret):
    """The Z85 key (str) in the key file at `path`; `secret` says it holds
    a secret key. Raises KeyFileError naming the file and what is wrong."""
    text = _read(path, "secret key file" if secret else "public key file",
                 secret)
    key = None
    lines = text.split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    for n, line in enumerate(lines, 1):
        line = line.strip(_SPACE)
        if not line:
            continue
        comment = line.startswith(b"#")
        if not comment and len(line) != KEY_LEN:
            raise KeyFileError(f"{path}:{n}: expected a Z85 key of 40 "
                               f"characters, found a line of {len(line)}")
        if not comment and not _is_key(line):
            raise KeyFileError(f"{path}:{n}: not a Z85 key (a character "
                               f"outside the Z85 alphabet)")
        if key is not None:
            raise KeyFileError(f"{path}:{n}: nothing may follow the key of "
                               f"a key file")
        if not comment:
            key = line.decode("ascii")
    if key is None:
        raise KeyFileError(f"{path} holds no key")
    return key
