"""Install wheels into this Python's site-packages, stdlib only (runs inside the plugin image).

Base images need only ``python3``: no pip, no network. Afterwards every package is imported once,
so a wheel built for another Python or architecture fails the image build with a clear message
instead of failing when the engine starts the plugin.
"""

import compileall
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

MODULES = ("dockvol", "dockvol._cli.main", "dockvol._transport.server", "msgspec")


def install(wheel: Path, site: Path) -> None:
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(site)
    # Files under NAME.data/purelib|platlib belong in site-packages; scripts are not needed.
    for data in site.glob("*.data"):
        for kind in ("purelib", "platlib"):
            src = data / kind
            if src.is_dir():
                shutil.copytree(src, site, dirs_exist_ok=True)
        shutil.rmtree(data)


def main() -> int:
    wheels = sorted(Path(sys.argv[1]).glob("*.whl"))
    site = Path(sysconfig.get_paths()["purelib"])
    site.mkdir(parents=True, exist_ok=True)
    for wheel in wheels:
        print(f"installing {wheel.name}", flush=True)
        install(wheel, site)
    # Bytecode now, so the plugin starts (and listens) quickly.
    compileall.compile_dir(site, quiet=1)
    check = subprocess.run(
        [sys.executable, "-c", "; ".join(f"import {m}" for m in MODULES)],
        capture_output=True,
        text=True,
    )
    if check.returncode != 0:
        version = "{}.{}".format(*sys.version_info[:2])
        print(
            f"dockvol does not import in this image (Python {version}): the wheels were made "
            "for another Python or architecture. Use a base image with the same Python as "
            "the host that builds the plugin, or pass --python-version/--platform.\n"
            + check.stderr,
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
