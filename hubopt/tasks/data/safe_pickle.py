"""Unpickling without executing code: only globals on an explicit allow-list.

A pickle is a program: its `GLOBAL`/`STACK_GLOBAL` opcodes import any callable
and `REDUCE` calls it (`os.system`, say). Data files that happen to be pickles
(CIFAR's python batches, legacy PyTorch checkpoints) must be read with an
unpickler that resolves only the few globals their format needs, each mapped to
a harmless stand-in we choose, and refuses every other with an error naming it:

    restricted_load(file, allowed={("collections", "OrderedDict"): OrderedDict})

Plain types (dict, list, tuple, str, bytes, numbers, None, bools) need no
global and always load. Persistent ids (how PyTorch points at tensor storage)
are refused unless a `persistent_load` is given.

Sizes are checked before allocation: before unpickling, the opcodes are walked
(`pickletools.genops`) with reads capped at the end of the file, so a length field
that a damaged file sets to gigabytes is a `TruncatedPickleError`, not an attempt to
allocate them (the C unpickler allocates a counted string before reading it).
"""

from __future__ import annotations

import io
import os
import pickle
import pickletools
import warnings
from collections.abc import Callable, Mapping
from typing import IO, Any

__all__ = ["RefusedGlobalError", "TruncatedPickleError", "restricted_load"]


class RefusedGlobalError(pickle.UnpicklingError):
    """The pickle asked for a global that is not on the allow-list."""


class TruncatedPickleError(pickle.UnpicklingError):
    """The pickle stream ended before its STOP opcode (a truncated or damaged file)."""


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file, allowed, persistent_load, what, encoding, errors):
        super().__init__(file, encoding=encoding, errors=errors)
        self._allowed = allowed
        self._what = what
        self._persistent_load = persistent_load

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._allowed[(module, name)]
        except KeyError:
            allowed = ", ".join(f"{m}.{n}" for m, n in sorted(self._allowed)) or "none"
            raise RefusedGlobalError(
                f"{self._what}: refusing to load global {module}.{name} (not something this "
                f"format holds; allowed: {allowed}); the file may be malicious or not the "
                "expected format"
            ) from None

    def persistent_load(self, pid):
        if self._persistent_load is not None:
            return self._persistent_load(pid)
        raise RefusedGlobalError(
            f"{self._what}: the pickle holds a persistent id ({pid!r:.60}), which this format "
            "does not use"
        )


class _CappedReader:
    """`file`'s reads, never past `end` (so no read allocates more than the file holds)."""

    def __init__(self, file: IO[bytes], end: int):
        self._file, self._end = file, end

    def read(self, n: int = -1) -> bytes:
        left = max(self._end - self._file.tell(), 0)
        return self._file.read(left if n is None or n < 0 else min(n, left))

    def tell(self) -> int:
        return self._file.tell()

    def readline(self) -> bytes:
        return self._file.readline(max(self._end - self._file.tell(), 0))


def _walk(file: IO[bytes], end: int, what: str) -> None:
    """Every opcode of the pickle at `file`'s position, to its STOP, with capped reads."""
    for opcode, arg, position in pickletools.genops(_CappedReader(file, end)):
        # a FRAME announces how much to buffer: the unpickler allocates it at once
        if opcode.name == "FRAME" and position + 9 + arg > end:  # 9: the opcode, 8-byte size
            raise TruncatedPickleError(
                f"{what}: a pickle frame of {arg} bytes, more than the file holds "
                "(truncated or a damaged length)"
            )


def _check_lengths(file: IO[bytes], what: str) -> None:
    """Walks the pickle at `file`'s position to its STOP with capped reads, then rewinds;
    a length past the end of the file, or a damaged opcode stream, raises here."""
    try:
        start = file.tell()
        end = file.seek(0, os.SEEK_END)
        file.seek(start)
    except (AttributeError, OSError, io.UnsupportedOperation):
        return  # not seekable: the unpickler's own checks only
    try:
        with warnings.catch_warnings():  # pickletools on garbage warns of bad escapes
            warnings.simplefilter("ignore", DeprecationWarning)
            _walk(file, end, what)
    except ValueError as err:  # pickletools' word for "not enough bytes" and bad opcodes
        text = str(err)
        if "expected" in text or "ran out" in text or "not enough" in text:
            raise TruncatedPickleError(
                f"{what}: the pickle needs more bytes than the file holds (truncated or a "
                f"damaged length: {text[:120]})"
            ) from None
        raise pickle.UnpicklingError(f"{what}: not a well-formed pickle ({text[:120]})") from None
    finally:
        file.seek(start)


def restricted_load(
    file: IO[bytes],
    allowed: Mapping[tuple[str, str], Any],
    *,
    persistent_load: Callable[[Any], Any] | None = None,
    what: str = "pickle",
    encoding: str = "ASCII",
    errors: str = "strict",
) -> Any:
    """Loads one pickle from `file`, resolving globals only through `allowed`.

    Args:
      file: a binary file positioned at the pickle.
      allowed: `(module, name) -> object` used in place of the global; anything
        else is a `RefusedGlobalError` naming the global.
      persistent_load: resolves persistent ids; None refuses them.
      what: names the file in error messages.
      encoding, errors: how Python 2 byte strings (`str`) are decoded, as in
        `pickle.Unpickler` ("bytes" keeps them bytes, as numpy arrays need).

    A stream that ends early is a `TruncatedPickleError`.
    """
    _check_lengths(file, what)
    unpickler = _RestrictedUnpickler(file, dict(allowed), persistent_load, what, encoding, errors)
    try:
        return unpickler.load()
    except EOFError:
        raise TruncatedPickleError(f"{what}: ended before the pickle did (truncated?)") from None
    except (RefusedGlobalError, TruncatedPickleError):
        raise
    except pickle.UnpicklingError as err:
        if "truncated" in str(err) or "ran out of input" in str(err).lower():
            raise TruncatedPickleError(f"{what}: {err} (truncated file?)") from None
        raise pickle.UnpicklingError(f"{what}: {err}") from None
