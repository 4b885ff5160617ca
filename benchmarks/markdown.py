"""Renders a ``bench.json`` as the Markdown tables of docs/benchmarks.md.

``python -m benchmarks.markdown bench-results/bench.json`` prints it.
"""
import json
import sys

from .report import OURS, summarise

TARGETS = {"tensorflow": {"infer": 1.5, "train": 1.3}, "torch-nchw": {"infer": 2.0, "train": 2.0}}


def _ms(value):
    return "-" if value is None else f"{value:.3f}"


def _mode_table(document, mode):
    rows = [r for r in document["results"] if r["mode"] == mode]
    engines = [e for e in document["engines"] if any(r["ms"].get(e) for r in rows)]
    peers = [e for e in engines if e != OURS]
    head = ["layer"] + [f"{e} ms" for e in engines] + ["floor ms", "ours / floor"] + [
        f"{e} / ours" for e in peers]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        ours = r["ms"][OURS]
        cells = [r["layer"]] + [_ms(r["ms"].get(e)) for e in engines] + [
            _ms(r["floor_ms"]), f"{ours / r['floor_ms']:.2f}"] + [
            f"{r['ms'][e] / ours:.2f}" if r["ms"].get(e) else "-" for e in peers]
        lines.append("| " + " | ".join(cells) + " |")
    ups = document["summary"][mode]["geomean_speedup"]
    lines.append("| **geomean** | " + " | ".join("" for _ in engines) + " | | | " + " | ".join(
        f"**{ups[e]:.2f}**" if e in ups else "-" for e in peers) + " |")
    return "\n".join(lines)


def _memory_table(document):
    rows = [r for r in document["results"] if r.get("peak_mib")]
    if not rows:
        return ""
    engines = [e for e in document["engines"] if any(r["peak_mib"].get(e) is not None for r in rows)]
    lines = ["| layer | " + " | ".join(f"{e} MiB" for e in engines) + " |",
             "|" + "---|" * (len(engines) + 1)]
    for r in rows:
        lines.append(f"| {r['layer']} | " + " | ".join(
            "-" if r["peak_mib"].get(e) is None else f"{r['peak_mib'][e]:.0f}" for e in engines) + " |")
    return "\n".join(lines)


def _ratio_verdict(got, goal, at_floor):
    """'met' or 'NOT met', with what running at the floor on every layer would have given.

    No "out of reach": the floor's GEMM peak is MKL's best, which other
    libraries can beat (ONNX Runtime did, by up to 12%, in run K).
    """
    ceiling = f"{at_floor:.2f}x with sepconv at the floor on every layer"
    return f"{'met' if got >= goal else 'NOT met'} ({ceiling})"


def targets(document):
    """One line per target of issue 3, with the measured figure."""
    summary, lines = document["summary"], []
    for mode, entry in summary.items():
        kind = "train" if mode.startswith("train") else "infer"
        for peer, goals in TARGETS.items():
            got = entry["geomean_speedup"].get(peer)
            if got is not None:
                lines.append(f"- {mode}: geomean speed-up vs {peer} {got:.2f}x "
                             f"(target {goals[kind]}x): "
                             + _ratio_verdict(got, goals[kind], entry["geomean_speedup_at_floor"][peer]))
        slower = entry["layers_where_a_peer_is_faster"]
        if kind == "infer":
            lines.append(f"- {mode}: no slower than the best peer on every layer: "
                         + ("met" if not slower else f"NOT met (a peer is faster on {len(slower)} "
                            f"of {len(entry['ratio_to_floor'])}: {', '.join(slower)})"))
        if mode.endswith("b16"):
            worst = entry["worst_ratio_to_floor"]
            over = [layer for layer, ratio in entry["ratio_to_floor"].items() if ratio > 1.3]
            lines.append(f"- {mode}: within 1.3x of the roofline floor on every layer: "
                         + ("met" if not over else f"NOT met (worst {worst:.2f}x; over 1.3x on "
                            f"{len(over)} layers)"))
        if "layers_with_higher_peak_memory_than_best_peer" in entry:
            higher = entry["layers_with_higher_peak_memory_than_best_peer"]
            lines.append(f"- {mode}: peak memory no higher than the best peer's: "
                         + ("met" if not higher else f"NOT met on {', '.join(higher)}"))
    return "\n".join(lines)


def render(document):
    parts = []
    if "sepconv_kernel" in document:
        parts.append(f"sepconv's kernel: {document['sepconv_kernel']}.")
    for mode in dict.fromkeys(r["mode"] for r in document["results"]):
        parts.append(f"### {mode}\n\nMedian ms per call (lower is better); `X / ours` > 1 means "
                     f"sepconv is faster.\n\n{_mode_table(document, mode)}")
    memory = _memory_table(document)
    if memory:
        parts.append("### Peak memory of the training step\n\nPeak RSS growth of a fresh process "
                     "over its RSS after the inputs and weights exist (torch engines: and after the "
                     "modules torch's first `autograd.grad` imports, about 35 MiB), through a "
                     f"warm-up and two steps.\n\n{memory}")
    parts.append("### Targets of issue 3\n\n" + targets(document))
    return "\n\n".join(parts) + "\n"


def main(argv):
    with open(argv[0]) as f:
        document = json.load(f)
    # Derived figures are recomputed, so that files written by older versions render the same way.
    document["summary"] = summarise(document["results"], document["engines"])
    sys.stdout.write(render(document))


if __name__ == "__main__":
    main(sys.argv[1:])
