"""`python -m rajit info`: what rajit finds on this machine (library, NVRTC, driver, GPUs, torch),
what is missing and why. Always exits 0: missing pieces are facts, not failures."""

from __future__ import annotations

import argparse
import json
import sys

from . import info


def _line(name: str, ok: bool, text: str) -> str:
    return f"{name:8} {'ok     ' if ok else 'MISSING'}  {text}"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m rajit")
    sub = p.add_subparsers(dest="command")
    i = sub.add_parser("info", help="what is there and what is missing")
    i.add_argument("--json", action="store_true", help="print the raw JSON")
    args = p.parse_args(argv)
    if args.command != "info":
        p.print_help()
        return 0 if args.command is None else 2
    d = info()
    if args.json:
        print(json.dumps(d, indent=2))
        return 0
    print(f"rajit (python package) {d['package']}")
    lib = d["library"]
    print(_line("library", lib["ok"], lib["path"] or lib["reason"]))
    if lib["ok"]:
        nv, drv = d["nvrtc"], d["driver"]
        print(_line("nvrtc", nv["ok"], f"{nv['version']} ({nv['library']})" if nv["ok"] else nv["reason"]))
        print(_line("driver", drv["ok"], f"CUDA {drv['version']}" if drv["ok"] else drv["reason"]))
        gpus = d["gpus"]
        print(_line("gpu", bool(gpus), ", ".join(f"[{g['ordinal']}] {g['name']} {g['cc']}" for g in gpus)
                    or "none: rajit can generate and compile kernels here but cannot run them"))
        print(f"cache    {d['cache_dir']}")
    else:
        for name in ("nvrtc", "driver", "gpu"):
            print(_line(name, False, "unknown (the library is needed to probe it)"))
    t = d["torch"]
    print(_line("torch", t["ok"], f"{t['version']} (cuda: {t['cuda']})" if t["ok"] else t["reason"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
