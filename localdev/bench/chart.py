"""The benchmark's chart: one PNG, four panels side by side per contender (CPU per deletion with
the no-op host's share marked, wall time, ARM calls per deletion against the floor, TLS
connections and tokens); with throttling on, a fifth panel plots accepted POSTs over time
against what ARM's write bucket allows. matplotlib, Agg backend (no display needed)."""

from __future__ import annotations

from pathlib import Path

from localdev.bench.plan import ARM_WRITES

COLOURS = {"ideal": "#4c72b0", "sdk-sync": "#dd8452", "sdk-aio": "#c44e52", "app": "#55a868", "noop-host": "#8c8c8c"}


def render(path: Path, results: dict[str, dict], workload: dict) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results)
    colours = [COLOURS.get(n.split("×")[0], "#999999") for n in names]
    throttled = bool(workload.get("throttle"))
    panels = 5 if throttled else 4
    fig, axes = plt.subplots(1, panels, figsize=(4.2 * panels, 4.6), constrained_layout=True)
    fig.suptitle(
        f"{workload['count']} deletions over {workload['subscription_count']} subscription(s): "
        f"operation {workload['duration']:g} s, Retry-After {workload['retry_after']} s, "
        f"latency {workload['latency'] * 1000:g} ms" + (", ARM throttling on" if throttled else "")
    )

    ax = axes[0]
    cpu = [results[n]["cpu_ms_per_deletion"] for n in names]
    ax.bar(names, cpu, color=colours)
    app = next((n for n in names if n.split("×")[0] == "app"), None)
    if app and "noop-host" in results:
        i = names.index(app)
        ax.bar([names[i]], [results["noop-host"]["cpu_ms_per_deletion"]], color="none", hatch="//", edgecolor="black")
    _label(ax, cpu, "{:.1f}")
    ax.set_title("CPU ms per deletion\n(hatched: the host emulation's share)")

    ax = axes[1]
    wall = [results[n]["wall_s"] for n in names]
    ax.bar(names, wall, color=colours)
    _label(ax, wall, "{:.1f}")
    ax.set_title("wall time, s")

    ax = axes[2]
    posts = [results[n]["posts_per_deletion"] for n in names]
    gets = [results[n]["gets_per_deletion"] for n in names]
    ax.bar(names, posts, color=colours, alpha=0.45, label="POST")
    ax.bar(names, gets, bottom=posts, color=colours, label="status GET")
    ax.axhline(1 + workload["polls_due"], color="black", linestyle="--", linewidth=1, label="floor")
    _label(ax, [p + g for p, g in zip(posts, gets, strict=True)], "{:.2f}")
    ax.set_title("ARM calls per deletion\n(light: POST, dark: status GET)")
    ax.legend(loc="lower right", fontsize=7)

    ax = axes[3]
    conns = [results[n]["connections"] for n in names]
    ax.bar(names, conns, color=colours)
    _label(ax, conns, "{:d}")
    ax.set_yscale("symlog")
    ax.set_title("TLS connections to ARM\n(tokens: " + ", ".join(str(results[n]["tokens"]) for n in names) + ")")

    if throttled:
        ax = axes[4]
        longest = 0.0
        for name, colour in zip(names, colours, strict=True):
            offsets = results[name].get("accepted_post_offsets") or []
            if offsets:
                ax.plot(offsets, range(1, len(offsets) + 1), color=colour, label=name)
                longest = max(longest, offsets[-1])
        capacity, rate = ARM_WRITES
        ax.plot(
            [0, longest], [capacity, capacity + rate * longest], color="black", linestyle="--", label="ARM: 200 + 10/s"
        )
        ax.set_xlabel("s after the first accepted POST")
        ax.set_title("accepted POSTs, one subscription")
        ax.legend(fontsize=7)

    for ax in axes[:4]:
        ax.tick_params(axis="x", labelrotation=30, labelsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _label(ax, values, fmt: str) -> None:
    for i, v in enumerate(values):
        ax.annotate(fmt.format(v), (i, v), ha="center", va="bottom", fontsize=8)
