#!/usr/bin/env python3
"""Draws a `rajit tune --format json` (or csv) sweep as a PNG heatmap: tile config (rows) against
spec and shape (columns), each cell the candidate's time relative to the fastest in its column
(1.00 = winner; blank = invalid, failed or not timed). The heuristic default is boxed in each
column, the winner starred.

usage: rajit tune ... --format json -o sweep.json && python3 bench/plot_tune.py sweep.json -o tune.png
"""
import argparse
import json
import sys


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("sweep", nargs="+", help="JSON or CSV files written by `rajit tune`")
    ap.add_argument("-o", "--output", default="tune.png", help="PNG to write (default tune.png)")
    ap.add_argument("--title", default=None, help="figure title (default: the device)")
    args = ap.parse_args()

    import matplotlib

    matplotlib.use("Agg")  # no display on build machines
    import matplotlib.pyplot as plt
    import numpy as np

    rows, device = [], "?"
    for path in args.sweep:
        with open(path) as f:
            text = f.read()
        if text.lstrip().startswith("{"):
            sweep = json.loads(text)
            device = sweep.get("device", device)
            rows += sweep.get("rows", [])
        else:
            import csv
            import io

            for r in csv.DictReader(io.StringIO(text)):
                device = r["device"]
                rows.append({"spec": r["spec"], "shape": r["shape"], "tile": r["tile"],
                             "status": r["status"], "ms": float(r["ms"]),
                             "default": r["default"] == "1", "winner": r["winner"] == "1"})
    if not rows:
        print(f"{' '.join(args.sweep)}: no rows", file=sys.stderr)
        return 1

    def tile_order(key):  # bm64.bn32.w4.s2 -> (False, 64, 32, 4, 2); wgmma tiles sort last
        parts = key.split(".")
        nums = tuple(int("".join(ch for ch in p if ch.isdigit())) for p in parts[:4])
        return (len(parts) > 4,) + nums

    tiles = sorted({r["tile"] for r in rows}, key=tile_order)
    columns = []
    for r in rows:
        col = (r["spec"], r["shape"])
        if col not in columns:
            columns.append(col)
    grid = np.full((len(tiles), len(columns)), np.nan)
    defaults, winners = {}, {}
    for r in rows:
        i, j = tiles.index(r["tile"]), columns.index((r["spec"], r["shape"]))
        if r["status"] in ("timed", "cached") and r["ms"] > 0:
            grid[i, j] = r["ms"]
        if r.get("default"):
            defaults[j] = i
        if r.get("winner"):
            winners[j] = i
    best = np.nanmin(np.where(np.isnan(grid), np.inf, grid), axis=0)
    rel = grid / np.where(np.isfinite(best), best, np.nan)

    fig, ax = plt.subplots(figsize=(1.6 + 1.3 * len(columns), 0.9 + 0.32 * len(tiles)))
    im = ax.imshow(rel, cmap="viridis_r", vmin=1.0, vmax=min(2.0, np.nanmax(rel) if np.isfinite(np.nanmax(rel)) else 2.0),
                   aspect="auto")
    for i in range(len(tiles)):
        for j in range(len(columns)):
            if not np.isnan(rel[i, j]):
                ax.text(j, i, f"{rel[i, j]:.2f}", ha="center", va="center", fontsize=7,
                        color="white" if rel[i, j] > 1.4 else "black")
    for j, i in defaults.items():
        ax.add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="red", lw=1.5))
    for j, i in winners.items():
        ax.text(j + 0.38, i - 0.2, "*", ha="center", va="center", fontsize=11, color="red")
    ax.set_yticks(range(len(tiles)), tiles, fontsize=8)
    labels = [f"{s.replace('fwd.', '')}\n{shape}" for s, shape in columns]
    ax.set_xticks(range(len(columns)), labels, fontsize=7, rotation=30, ha="right")
    ax.set_title(args.title or f"rajit tune on {device}\ntime / fastest "
                 "(box = heuristic, * = winner)", fontsize=9)
    fig.colorbar(im, ax=ax, label="median ms / fastest")
    fig.tight_layout()
    fig.savefig(args.output, dpi=130)
    print(f"wrote {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
