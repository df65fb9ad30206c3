"""Reading a config file's bytes: once, without blocking, within `MAX_CONFIG_BYTES`.

Why here and so careful: this is the one place a config file is opened. `kubitect validate
/dev/zero` must not read forever, a FIFO must not block, a 50 MB file must not reach the parser.
"""

from __future__ import annotations

import codecs
import os
import stat
from pathlib import Path

from kubitect_core.config.errors import ConfigError, ConfigIssue
from kubitect_core.config.limits import MAX_CONFIG_BYTES

# Longest first: the UTF-32 LE mark begins with the UTF-16 LE one.
_BOMS = ((codecs.BOM_UTF32_LE, "utf-32-le"), (codecs.BOM_UTF32_BE, "utf-32-be"), (codecs.BOM_UTF8, "utf-8"),
         (codecs.BOM_UTF16_LE, "utf-16-le"), (codecs.BOM_UTF16_BE, "utf-16-be"))


def read_config_file(path: str | Path) -> str:
    """The config file's text, read exactly once.

    Why one function: the bytes validated must be the bytes applied and stored; every command
    that takes a config reads it here and passes the text on (`load_config_text`). Only a
    regular file of at most `MAX_CONFIG_BYTES` is read; anything else is refused by name.
    """
    name = str(path)

    def refuse(message: str) -> ConfigError:
        return ConfigError([ConfigIssue("", message, file=name)])

    try:
        # O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer.
        fd = os.open(name, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise refuse(f"file '{name}' does not exist.") from None
    except IsADirectoryError:
        raise refuse(f"'{name}' is a directory, not a config file.") from None
    except PermissionError:
        raise refuse(f"cannot read '{name}': permission denied.") from None
    except (OSError, ValueError) as exc:
        raise refuse(f"cannot open '{name}': {getattr(exc, 'strerror', None) or exc}.") from None
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise refuse(f"'{name}' is a directory, not a config file.")
        if not stat.S_ISREG(info.st_mode):
            raise refuse(f"'{name}' is not a regular file (it is {_kind(info.st_mode)}); give a config file.")
        if info.st_size > MAX_CONFIG_BYTES:
            raise refuse(f"'{name}' is {info.st_size} bytes, more than the {_limit()} a config file may have; "
                         "a cluster config is a few KiB.")
        data = _read_at_most(fd, MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise refuse(f"cannot read '{name}': {exc.strerror or exc}.") from None
    finally:
        os.close(fd)
    if len(data) > MAX_CONFIG_BYTES:  # it grew while being read
        raise refuse(f"'{name}' is more than the {_limit()} a config file may have.")
    return decode_config(data, name)


def decode_config(data: bytes, name: str) -> str:
    """UTF-8 (or UTF-16/32 with a byte-order mark, as YAML allows); a bad byte is named by line."""
    encoding = "utf-8"
    for bom, enc in _BOMS:
        if data.startswith(bom):
            data, encoding = data[len(bom):], enc
            break
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ConfigError([ConfigIssue("", f"'{name}' is not {encoding.upper()} text: byte "
                                           f"0x{data[exc.start]:02x} at line {line} cannot be decoded.",
                                       file=name, line=line)]) from None


def _read_at_most(fd: int, limit: int) -> bytes:
    chunks, size = [], 0
    while size < limit:
        chunk = os.read(fd, min(65536, limit - size))
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def _kind(mode: int) -> str:
    kinds = ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
             (stat.S_ISSOCK, "a socket"))
    return next((what for test, what in kinds if test(mode)), "not a file")


def _limit() -> str:
    return f"{MAX_CONFIG_BYTES // 1024} KiB"
