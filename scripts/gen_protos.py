#!/usr/bin/env python3
"""Generate the Python stubs (with .pyi type stubs) from proto/ into backendai/v1/.

One command: `python scripts/gen_protos.py`. `--check` regenerates into a temp dir and
fails if the committed output differs (CI's drift check).
"""

from __future__ import annotations

import filecmp
import shutil
import sys
import tempfile
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "proto"
OUT_PKG = Path("backendai") / "v1"


def generate(out_root: Path) -> list[Path]:
    protos = sorted(p.relative_to(PROTO_DIR) for p in (PROTO_DIR / OUT_PKG).glob("*.proto"))
    plugin_dir = Path(sys.executable).parent
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_DIR}",
        f"-I{Path(protoc.__file__).parent / '_proto'}",
        f"--plugin=protoc-gen-mypy_grpc={plugin_dir / 'protoc-gen-mypy_grpc'}",
        f"--python_out={out_root}",
        f"--pyi_out={out_root}",
        f"--grpc_python_out={out_root}",
        f"--mypy_grpc_out={out_root}",
        *[str(p) for p in protos],
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    return sorted(p.relative_to(out_root) for p in (out_root / OUT_PKG).glob("*_pb2*"))


def main() -> int:
    check = "--check" in sys.argv[1:]
    with tempfile.TemporaryDirectory() as tmp:
        generated = generate(Path(tmp))
        if check:
            committed = sorted(p.relative_to(ROOT) for p in (ROOT / OUT_PKG).glob("*_pb2*"))
            drift = [str(p) for p in generated if not (ROOT / p).exists()
                     or not filecmp.cmp(Path(tmp) / p, ROOT / p, shallow=False)]
            drift += [str(p) for p in committed if p not in generated]
            if drift:
                print("generated code is stale; run scripts/gen_protos.py:", *drift, sep="\n  ")
                return 1
            print("generated code is up to date")
            return 0
        for stale in (ROOT / OUT_PKG).glob("*_pb2*"):
            stale.unlink()
        for rel in generated:
            shutil.copyfile(Path(tmp) / rel, ROOT / rel)
            print("wrote", rel)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
