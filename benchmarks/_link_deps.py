"""Run by asv's install_command inside a per-commit virtualenv: makes the pinned dependency stack of this
checkout's venv (pyspark, pyarrow, scipy, ...) importable there, behind the harness wheel asv just installed.

A plain path line in a .pth file is appended to sys.path, so the env's own site-packages (holding the harness
at the benchmarked commit) comes first, and the venv's editable install of the working tree is not activated.
HARNESS_DEPS_VENV names another venv to take the stack from (default: <repo>/.venv).
"""
import glob
import os
import sys
import sysconfig


def main() -> int:
    venv = os.environ.get("HARNESS_DEPS_VENV") or os.path.join(os.path.dirname(os.path.dirname(
        os.path.abspath(__file__))), ".venv")
    found = glob.glob(os.path.join(venv, "lib", f"python{sys.version_info[0]}.{sys.version_info[1]}",
                                   "site-packages"))
    if not found:
        print(f"_link_deps: no python{sys.version_info[0]}.{sys.version_info[1]} site-packages under {venv}; "
              f"build it with `make setup` or set HARNESS_DEPS_VENV", file=sys.stderr)
        return 1
    target = os.path.join(sysconfig.get_paths()["purelib"], "harness-deps.pth")
    with open(target, "w") as f:
        f.write(found[0] + "\n")
    print(f"_link_deps: {target} -> {found[0]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
