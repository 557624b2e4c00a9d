"""Run one of timm's own scripts (train.py, validate.py, inference.py, ...) with convspace's entries registered.

The documented full training is `convspace train` (trainers/full.py); this is for what it cannot do (README "Train"):
several GPUs, timm's recipe options it has none for, validate.py and inference.py on a checkpoint.

timm's scripts resolve `--model NAME` through timm's registry, which only knows our entries once `nas.export.zoo`
is imported; they have no import option, so this runs the script as `python script.py` would, after that import:

    CONVSPACE_ZOO=studies/exports python -m nas.export.timm_script path/to/train.py --model my_net ...
"""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

USAGE = "usage: python -m nas.export.timm_script SCRIPT.py [script arguments...]"


def run_script(argv: list[str]) -> None:
    """Import the zoo (presets and every exported entry), then run `argv[0]` as __main__ with `argv[1:]`."""
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        raise SystemExit(0 if argv else 2)
    script = Path(argv[0])
    if not script.is_file():
        print(f"error: script: no such file, got {str(script)!r}\n{USAGE}", file=sys.stderr)
        raise SystemExit(2)
    import nas.export.zoo  # noqa: F401  (registers convspace_<preset> and the exported entries with timm)

    # What `python script.py args` sets up: the script's argv and its folder first on the import path
    sys.argv = [str(script), *argv[1:]]
    sys.path.insert(0, str(script.resolve().parent))
    runpy.run_path(str(script), run_name="__main__")


def main() -> None:
    """Command-line entry: `python -m nas.export.timm_script SCRIPT.py ARGS...`."""
    run_script(sys.argv[1:])


if __name__ == "__main__":
    main()
