"""Copy the console's browser assets from node_modules (installed by `npm ci`) into
web/static/vendor/. They are build output, never committed."""

from __future__ import annotations

import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ASSETS = {
    "node_modules/htmx.org/dist/htmx.min.js": "htmx.min.js",
    "node_modules/htmx-ext-sse/dist/sse.min.js": "sse.min.js",
    # WebAuthn JSON <-> ArrayBuffer for passkeys (global SimpleWebAuthnBrowser)
    "node_modules/@simplewebauthn/browser/dist/bundle/index.umd.min.js": "simplewebauthn-browser.umd.min.js",
}


def main() -> int:
    dest = ROOT / "web" / "static" / "vendor"
    dest.mkdir(parents=True, exist_ok=True)
    for src, name in ASSETS.items():
        path = ROOT / src
        if not path.exists():
            raise SystemExit(f"missing {src}: run `npm ci` first")
        shutil.copyfile(path, dest / name)
    print(f"copied {len(ASSETS)} browser assets into web/static/vendor/")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
