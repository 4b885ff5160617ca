"""Results as a table (stdout), a JSON file and a PNG chart."""
import json
import math
import os

OURS = "sepconv"


def geomean(values):
    values = [v for v in values if v and v > 0]
    return math.exp(sum(map(math.log, values)) / len(values)) if values else None


def _fmt(value, pattern="{:.3f}"):
    return "-" if value is None else pattern.format(value)


def summarise(results, engines):
    """Geometric-mean speed-ups of sepconv over each peer, per mode, and the targets' figures."""
    summary = {}
    for mode in sorted({r["mode"] for r in results}, key=lambda m: [r["mode"] for r in results].index(m)):
        rows = [r for r in results if r["mode"] == mode]
        speedups, at_floor = {}, {}
        for engine in engines:
            timed = [r for r in rows if engine != OURS and r["ms"].get(engine) and r["ms"].get(OURS)]
            if timed:
                speedups[engine] = geomean([r["ms"][engine] / r["ms"][OURS] for r in timed])
                # The most any implementation could show against this peer in this run.
                at_floor[engine] = geomean([r["ms"][engine] / r["floor_ms"] for r in timed])
        not_fastest = [r["layer"] for r in rows
                       if any(ms < r["ms"][OURS] for e, ms in r["ms"].items() if e != OURS and ms)]
        floor_ratios = {r["layer"]: r["ms"][OURS] / r["floor_ms"] for r in rows}
        entry = {"geomean_speedup": speedups, "geomean_speedup_at_floor": at_floor,
                 "layers_where_a_peer_is_faster": not_fastest,
                 "ratio_to_floor": floor_ratios, "worst_ratio_to_floor": max(floor_ratios.values())}
        peaks = [r for r in rows if r.get("peak_mib")]
        if peaks:
            entry["layers_with_higher_peak_memory_than_best_peer"] = [
                r["layer"] for r in peaks
                if r["peak_mib"].get(OURS) is not None and any(
                    v is not None and v < r["peak_mib"][OURS]
                    for e, v in r["peak_mib"].items() if e != OURS)]
        summary[mode] = entry
    return summary


def table(results, engines, summary):
    """A plain-text table: median ms per engine, the floor, and sepconv's ratios."""
    lines = []
    peers = [e for e in engines if e != OURS]
    header = (["mode", "layer"] + [f"{e} ms" for e in engines] + ["floor ms", "ours/floor"]
              + [f"x vs {e}" for e in peers])
    rows = []
    for r in results:
        ours = r["ms"].get(OURS)
        rows.append([r["mode"], r["layer"]] + [_fmt(r["ms"].get(e)) for e in engines]
                    + [_fmt(r["floor_ms"]), _fmt(ours / r["floor_ms"], "{:.2f}")]
                    + [_fmt(r["ms"][e] / ours if r["ms"].get(e) else None, "{:.2f}") for e in peers])
    widths = [max(len(str(row[i])) for row in rows + [header]) for i in range(len(header))]
    for row in [header] + rows:
        lines.append("  ".join(str(c).rjust(w) for c, w in zip(row, widths)))
    lines.append("")
    for mode, entry in summary.items():
        ups = ", ".join(f"{e} {v:.2f}x" for e, v in entry["geomean_speedup"].items())
        lines.append(f"{mode}: geomean speed-up of sepconv: {ups}; worst ours/floor "
                     f"{entry['worst_ratio_to_floor']:.2f}; a peer is faster on: "
                     f"{entry['layers_where_a_peer_is_faster'] or 'none'}")
    memory = [r for r in results if r.get("peak_mib")]
    if memory:
        lines.append("")
        lines.append("peak memory of the training step (MiB): " + "; ".join(
            f"{r['layer']}: " + ", ".join(f"{e} {_fmt(v, '{:.0f}')}" for e, v in r["peak_mib"].items())
            for r in memory))
    return "\n".join(lines)


def write_json(path, document):
    with open(path, "w") as f:
        json.dump(document, f, indent=1)


def chart(path, results, engines, title=""):
    """One panel per mode: each engine's time over the roofline floor (log scale)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    modes = list(dict.fromkeys(r["mode"] for r in results))
    fig, axes = plt.subplots(len(modes), 1, figsize=(12, 3.6 * len(modes)), squeeze=False)
    width = 0.8 / len(engines)
    for ax, mode in zip(axes[:, 0], modes):
        rows = [r for r in results if r["mode"] == mode]
        for i, engine in enumerate(engines):
            values = [r["ms"].get(engine) and r["ms"][engine] / r["floor_ms"] for r in rows]
            xs = [j + (i - (len(engines) - 1) / 2) * width for j in range(len(rows))]
            ax.bar([x for x, v in zip(xs, values) if v], [v for v in values if v], width,
                   label=engine)
        ax.axhline(1.0, color="black", linewidth=1, linestyle="--", label="roofline floor")
        ax.set_yscale("log")
        ax.set_xticks(range(len(rows)))
        ax.set_xticklabels([r["layer"] for r in rows], rotation=15, fontsize=8)
        ax.set_ylabel("time / floor (lower is better)")
        ax.set_title(mode)
        ax.grid(axis="y", which="both", alpha=0.3)
    axes[0, 0].legend(ncol=len(engines) + 1, fontsize=8, loc="upper left")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_all(out_dir, document, engines):
    from .markdown import render

    os.makedirs(out_dir, exist_ok=True)
    write_json(os.path.join(out_dir, "bench.json"), document)
    with open(os.path.join(out_dir, "bench.md"), "w") as f:
        f.write(render(document))
    machine = document.get("machine", {})
    title = (f"median time / roofline floor; {machine.get('Model name', '?')}, "
             f"{document.get('threads')} thread(s) per engine; {document.get('command', '')}")
    chart(os.path.join(out_dir, "bench.png"), document["results"], engines, title)
