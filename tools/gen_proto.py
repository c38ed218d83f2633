"""Generate Python code from proto/: grpc.aio server stubs (protoc) into lumina/, and the
typed async client SDK (betterproto2, grpclib) into lumina_client/. Both are build output."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO = ROOT / "proto"


def main() -> int:
    files = sorted(str(p.relative_to(PROTO)) for p in PROTO.rglob("*.proto"))
    server_out = ROOT / "lumina"
    client_out = ROOT / "lumina_client"
    for out in (server_out, client_out):
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir()
    bindir = str(Path(sys.executable).parent)
    env = {**os.environ, "PATH": bindir + os.pathsep + os.environ.get("PATH", "")}
    protoc = [sys.executable, "-m", "grpc_tools.protoc", f"-I{PROTO}"]
    subprocess.run(
        [*protoc, f"--python_out={server_out}", f"--pyi_out={server_out}", f"--grpc_python_out={server_out}", *files],
        check=True,
        cwd=PROTO,
        env=env,
    )
    # protoc writes lumina/lumina/v1/*: flatten so that `import lumina.v1.chat_pb2` works.
    inner = server_out / "lumina"
    for child in inner.iterdir():
        shutil.move(str(child), server_out / child.name)
    inner.rmdir()
    for d in [server_out, *[p for p in server_out.rglob("*") if p.is_dir()]]:
        (d / "__init__.py").touch()
    done = subprocess.run(
        [*protoc, f"--python_betterproto2_out={client_out}", "--python_betterproto2_opt=client_generation=async", *files],
        cwd=PROTO,
        env=env,
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:  # the plugin chats on stderr ("Writing ..."): show it only on failure
        sys.stderr.write(done.stdout + done.stderr)
        return done.returncode
    print(f"generated {len(files)} proto files into lumina/ and lumina_client/")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
