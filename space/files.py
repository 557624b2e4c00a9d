"""One reader for every YAML/JSON file a user hands us (spaces, configs, study files, zoo entries).

A missing file, one that is not UTF-8, or one that does not parse becomes one line naming the file,
never a traceback.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from space.errors import ConvspaceError


@contextmanager
def written_atomically(path: Path, binary: bool = False) -> Iterator[IO[Any]]:
    """A temporary file beside `path`, renamed onto it when the block ends cleanly, removed when it does not: a crash,
    a kill or a full disk never leaves half a file where a reader looks (Python's standard library has no such writer;
    every file convspace writes for a user goes through here). Errors stay OSError: the caller names the file's role."""
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb" if binary else "w", **({} if binary else {"encoding": "utf-8"})) as out:
            yield out
        os.chmod(tmp, 0o644)  # mkstemp makes it private; what we write is for whoever may read the folder
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def write_atomically(path: Path, data: str | bytes) -> None:
    """Write `data` (text as UTF-8) to `path` atomically: see written_atomically."""
    with written_atomically(path, binary=isinstance(data, bytes)) as out:
        out.write(data)


def read_yaml(path: str | Path, what: str) -> Any:
    """Parse `path` as YAML (a superset of JSON); `what` names the file's role in the error (e.g. 'space')."""
    import yaml

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConvspaceError(f"{what}: {path} is not a UTF-8 text file (byte {exc.start} cannot be read)") from None
    except OSError as exc:
        raise ConvspaceError(f"{what}: cannot read {path} ({exc.strerror or type(exc).__name__})") from None
    try:
        return yaml.load(text, Loader=_strict_loader())
    except yaml.YAMLError as exc:
        raise ConvspaceError(f"{what}: {path} is not valid YAML ({str(exc).splitlines()[0]})") from None
    except _DuplicateKey as exc:
        raise ConvspaceError(f"{what}: {path} gives {exc} twice (the second would silently replace the first)") from None


class _DuplicateKey(Exception):
    pass


_LOADER: Any = None


def _strict_loader() -> Any:
    """PyYAML's safe loader, but refusing a key given twice in one mapping, and reading `1e-06` (JSON's spelling, which
    `sample --json` writes) as a number: YAML 1.1, which PyYAML follows, reads a float without a dot as a string."""
    global _LOADER
    if _LOADER is None:
        import re

        import yaml

        class Strict(yaml.SafeLoader):
            def construct_mapping(self, node: Any, deep: bool = False) -> Any:
                seen = set()
                for key_node, _ in node.value:
                    key = self.construct_object(key_node, deep=deep)
                    if key in seen:
                        raise _DuplicateKey(f"{key!r} (line {key_node.start_mark.line + 1})")
                    seen.add(key)
                return super().construct_mapping(node, deep=deep)

        Strict.add_implicit_resolver("tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9]+(\.[0-9]*)?[eE][-+]?[0-9]+$"), list("-+0123456789"))
        _LOADER = Strict
    return _LOADER
