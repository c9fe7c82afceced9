"""Regenerate the CSI Python modules from ``csi.proto``: ``python -m dockvol._csi.generate``.

Needs grpcio-tools (the ``dev`` extra). Writes ``csi_pb2.py``, ``csi_pb2.pyi`` and
``csi_pb2_grpc.py`` beside the proto (or into ``--out DIR/dockvol/_csi/``); the checked-in
files must be what this writes (tests/csi/test_generated.py checks it).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from importlib import resources
from pathlib import Path

PROTO = "csi.proto"
OUTPUTS = ("csi_pb2.py", "csi_pb2.pyi", "csi_pb2_grpc.py")
#: The proto's path under the include root: generated imports then read
#: ``from dockvol._csi import csi_pb2``, and the descriptor is registered under this name.
PACKAGE_DIR = Path("dockvol") / "_csi"
COMMAND = "python -m dockvol._csi.generate"


def here() -> Path:
    return Path(str(resources.files("dockvol._csi")))


def generate(out_root: Path) -> Path:
    """Compile ``csi.proto`` into ``out_root/dockvol/_csi/``; return that directory."""
    from grpc_tools import protoc

    with tempfile.TemporaryDirectory() as tmp:
        include = Path(tmp)
        (include / PACKAGE_DIR).mkdir(parents=True)
        shutil.copyfile(here() / PROTO, include / PACKAGE_DIR / PROTO)
        target = out_root / PACKAGE_DIR
        target.mkdir(parents=True, exist_ok=True)
        well_known = Path(str(resources.files("grpc_tools") / "_proto"))
        rc = protoc.main(
            [
                "grpc_tools.protoc",
                f"-I{include}",
                f"-I{well_known}",
                f"--python_out={out_root}",
                f"--pyi_out={out_root}",
                f"--grpc_python_out={out_root}",
                str(PACKAGE_DIR / PROTO),
            ]
        )
        if rc != 0:
            raise SystemExit(f"protoc failed (exit {rc}) on {here() / PROTO}")
    return target


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog=COMMAND, description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, help="write under DIR/dockvol/_csi/ instead of in place")
    args = p.parse_args(argv)
    if args.out is not None:
        print(generate(args.out))
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        made = generate(Path(tmp))
        for name in OUTPUTS:
            shutil.copyfile(made / name, here() / name)
    print(f"regenerated {', '.join(OUTPUTS)} in {here()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
