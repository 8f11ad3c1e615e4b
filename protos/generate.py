"""Regenerates the committed Python code for ``protos/*.proto`` (``python -m protos.generate``).

``python -m protos.generate`` runs ``grpc_tools.protoc`` (``--python_out``, ``--pyi_out`` and, for protos
with a service, ``--grpc_python_out``) and writes ``protos/<name>_pb2.py``, ``<name>_pb2.pyi`` and
``<name>_pb2_grpc.py``. ``python -m protos.generate --check`` generates the same into a temporary directory
and exits 1, naming the stale files, when they differ from the committed ones (CI runs it).

protoc runs from the repository root on ``protos/<name>.proto``, so the generated code imports its siblings
package-absolutely (``from protos import inference_pb2 as ...``). One rewrite follows: the ``*_pb2.py``
modules register their descriptors into :data:`protos._pool.POOL` instead of protobuf's default pool (why:
see ``protos/_pool.py``). Every rewrite must match exactly once, so a protoc upgrade that changes the
generated code's shape fails loudly here instead of producing a module that silently uses the default pool.
The output depends only on the .proto files and the installed grpcio-tools version (pinned by the lock file).
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

__all__ = ["PROTOS", "ProtoSpec", "main", "render", "stale", "write"]

PACKAGE = "protos"
PACKAGE_DIR = Path(__file__).resolve().parent
ROOT = PACKAGE_DIR.parent


@dataclass(frozen=True)
class ProtoSpec:
    """One .proto file in ``protos/`` and whether it declares a gRPC service."""

    stem: str
    service: bool

    @property
    def outputs(self) -> tuple[str, ...]:
        """File names generated for this proto, relative to ``protos/``."""
        names = [f"{self.stem}_pb2.py", f"{self.stem}_pb2.pyi"]
        if self.service:
            names.append(f"{self.stem}_pb2_grpc.py")
        return tuple(names)


PROTOS: tuple[ProtoSpec, ...] = (
    ProtoSpec("inference", service=True),
    ProtoSpec("monitor", service=False),
)

_POOL_IMPORT_AFTER = "from google.protobuf.internal import builder as _builder\n"
_POOL_IMPORT = (
    "# infergate: descriptors go to a private pool, not the default one (see protos/_pool.py).\n"
    f"from {PACKAGE} import _pool\n"
)
_DEFAULT_POOL = "DESCRIPTOR = _descriptor_pool.Default().AddSerializedFile("
_PRIVATE_POOL = "DESCRIPTOR = _pool.POOL.AddSerializedFile("
# Any import of a generated module (from .py or .pyi), to check it is package-absolute.
_PB2_IMPORT = re.compile(r"^(?:from\s+\S+\s+)?import\s+\S*_pb2\b.*$", re.MULTILINE)
_PACKAGE_PB2_IMPORT = re.compile(rf"^from {PACKAGE} import \w+_pb2 as \w+$")


class GenerateError(RuntimeError):
    """protoc failed, or its output no longer has the shape the rewrites expect."""


def _replace_once(text: str, old: str, new: str, where: str) -> str:
    count = text.count(old)
    if count != 1:
        raise GenerateError(f"{where}: expected exactly one {old!r} in protoc's output, found {count}")
    return text.replace(old, new)


def _check_imports(text: str, where: str) -> None:
    for match in _PB2_IMPORT.finditer(text):
        if not _PACKAGE_PB2_IMPORT.match(match.group(0)):
            raise GenerateError(f"{where}: generated import is not package-absolute: {match.group(0)!r}")


def _rewrite(name: str, text: str) -> str:
    """Apply the post-protoc rewrites to one generated file, named relative to ``protos/``."""
    where = f"{PACKAGE}/{name}"
    _check_imports(text, where)
    if name.endswith("_pb2.py"):
        text = _replace_once(text, _POOL_IMPORT_AFTER, _POOL_IMPORT_AFTER + _POOL_IMPORT, where)
        text = _replace_once(text, _DEFAULT_POOL, _PRIVATE_POOL, where)
    return text


def _protoc(spec: ProtoSpec, out_dir: Path) -> None:
    include = resources.files("grpc_tools").joinpath("_proto")
    args = [
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        "--proto_path=.",
        f"--proto_path={include}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
    ]
    if spec.service:
        args.append(f"--grpc_python_out={out_dir}")
    args.append(f"{PACKAGE}/{spec.stem}.proto")
    result = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise GenerateError(f"protoc failed on {PACKAGE}/{spec.stem}.proto:\n{result.stderr}")


def render() -> dict[str, bytes]:
    """Generate every output and return its final content, keyed by file name relative to ``protos/``."""
    rendered: dict[str, bytes] = {}
    with tempfile.TemporaryDirectory(prefix="protos-generate-") as tmp:
        out_dir = Path(tmp)
        for spec in PROTOS:
            _protoc(spec, out_dir)
            for name in spec.outputs:
                path = out_dir / PACKAGE / name
                if not path.is_file():
                    raise GenerateError(f"protoc did not write {PACKAGE}/{name}")
                text = path.read_text(encoding="utf-8")
                rendered[name] = _rewrite(name, text).encode("utf-8")
    return rendered


def write(directory: Path = PACKAGE_DIR) -> list[str]:
    """Write the generated files into ``directory``; return the names of those whose content changed."""
    changed: list[str] = []
    for name, content in sorted(render().items()):
        path = directory / name
        if not path.is_file() or path.read_bytes() != content:
            path.write_bytes(content)
            changed.append(name)
    return changed


def stale(directory: Path = PACKAGE_DIR) -> list[str]:
    """Names (relative to ``protos/``) of generated files in ``directory`` that are missing or out of date."""
    return [
        name
        for name, content in sorted(render().items())
        if not (directory / name).is_file() or (directory / name).read_bytes() != content
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m protos.generate", description="Regenerate the Python code for protos/*.proto."
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="write nothing; exit 1 if the committed generated files are stale",
    )
    args = parser.parse_args(argv)
    try:
        if args.check:
            outdated = stale()
            if outdated:
                names = ", ".join(f"{PACKAGE}/{name}" for name in outdated)
                print(f"stale generated files: {names}; run `python -m protos.generate`", file=sys.stderr)
                return 1
            print("protos: generated files are up to date")
            return 0
        changed = write()
    except GenerateError as exc:
        print(f"protos.generate: {exc}", file=sys.stderr)
        return 2
    for name in changed:
        print(f"wrote {PACKAGE}/{name}")
    if not changed:
        print("protos: generated files are up to date")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
