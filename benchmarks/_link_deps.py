"""Run by asv's install_command inside a per-commit virtualenv: makes the pinned dependency stack of this
checkout's venv (pyspark, pyarrow, scipy, ...) importable there, behind the harness wheel asv just installed.

A plain path line in a .pth file is appended to sys.path, so the env's own site-packages (holding the harness
at the benchmarked commit) comes first, and the venv's editable install of the working tree is not activated.
Which stack: HARNESS_STACK, set per environment by asv.conf.json's matrix, picks the checkout's `.venv` (3.5,
the default) or `.venv-spark4` (spark4, built by `make setup STACK=spark4`); HARNESS_DEPS_VENV names any other
venv to take the stack from.
"""
import glob
import os
import sys
import sysconfig


STACKS = {"": ".venv", "3.5": ".venv", "spark4": ".venv-spark4"}


def main() -> int:
    stack = os.environ.get("HARNESS_STACK", "")
    if stack not in STACKS:
        print(f"_link_deps: unknown HARNESS_STACK {stack!r}; use 3.5 (.venv) or spark4 (.venv-spark4)",
              file=sys.stderr)
        return 2
    venv = os.environ.get("HARNESS_DEPS_VENV") or os.path.join(os.path.dirname(os.path.dirname(
        os.path.abspath(__file__))), STACKS[stack])
    found = glob.glob(os.path.join(venv, "lib", f"python{sys.version_info[0]}.{sys.version_info[1]}",
                                   "site-packages"))
    if not found:
        print(f"_link_deps: no python{sys.version_info[0]}.{sys.version_info[1]} site-packages under {venv}; "
              f"build it with `make setup{' STACK=spark4' if stack == 'spark4' else ''}` or set HARNESS_DEPS_VENV",
              file=sys.stderr)
        return 1
    target = os.path.join(sysconfig.get_paths()["purelib"], "harness-deps.pth")
    with open(target, "w") as f:
        f.write(found[0] + "\n")
    print(f"_link_deps: {target} -> {found[0]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
