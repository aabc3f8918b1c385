"""`nas report`: one self-contained HTML page (plotly, inlined) plus the front as CSV and JSON.

Renders a `ParetoInfo` and nothing else: every figure is computed by `results.pareto`.
MnasNet reward: Tan et al., arXiv:1807.11626; CIFAR-10: Krizhevsky (2009).
"""

from __future__ import annotations

import html
import json
import os
from dataclasses import asdict

from results.formatting import number
from results.pareto import ParetoInfo, TrialRow, write_csv_atomic, write_text_atomic

FRONT_COLOR, OTHER_COLOR, TARGET_COLOR = "#d62728", "#9fb3c8", "#2ca02c"
CHOICE_KINDS = (
    "op",
    "kernel",
    "se",
    "skip",
    "filters",
    "layers",
    "vit_dim",
    "vit_depth",
    "vit_heads",
    "vit_patch",
    "vit_mlp",
    "vit_attention",
)


def _hover(row: TrialRow) -> str:
    arch = "<br>".join(row.arch.split("-"))
    reward, params = number(row.reward, ".4f"), number(row.params_count, ",")
    seed = f"<br>seeded from {row.seeded_from}" if row.seeded_from else ""
    figures = f"acc {row.accuracy:.3f}, lat {row.latency_ms:.3f} ms<br>params {params}, reward {reward}"
    return f"trial {row.number}<br>{figures}{seed}<br>{arch}"


def front_figure(info: ParetoInfo):
    import plotly.graph_objects as go

    measured = [r for r in info.rows if r.measured]
    front_numbers = {r.number for r in info.front}
    others = [r for r in measured if r.number not in front_numbers]
    fig = go.Figure()
    fig.add_trace(
        go.Scatter(
            x=[r.latency_ms for r in others],
            y=[r.accuracy for r in others],
            mode="markers",
            name="trials",
            marker={"color": OTHER_COLOR, "size": 8},
            hovertext=[_hover(r) for r in others],
            hoverinfo="text",
        )
    )
    fig.add_trace(
        go.Scatter(
            x=[r.latency_ms for r in info.front],
            y=[r.accuracy for r in info.front],
            mode="lines+markers",
            name="Pareto front",
            line={"shape": "hv", "color": FRONT_COLOR},
            marker={"size": 10},
            hovertext=[_hover(r) for r in info.front],
            hoverinfo="text",
        )
    )
    seeded = [r for r in measured if r.seeded_from]
    if seeded:
        fig.add_trace(
            go.Scatter(
                x=[r.latency_ms for r in seeded],
                y=[r.accuracy for r in seeded],
                mode="markers+text",
                name="references (projected)",
                text=[r.seeded_from for r in seeded],
                textposition="top center",
                marker={"symbol": "star", "size": 14, "color": "#ff7f0e"},
                hovertext=[_hover(r) for r in seeded],
                hoverinfo="text",
            )
        )
    if info.best_reward:
        best = info.best_reward
        fig.add_trace(
            go.Scatter(
                x=[best.latency_ms],
                y=[best.accuracy],
                mode="markers",
                name="best reward",
                marker={"symbol": "circle-open", "size": 20, "color": "black", "line": {"width": 2}},
                hovertext=[_hover(best)],
                hoverinfo="text",
            )
        )
    reward = info.settings.reward
    title = "Accuracy vs measured latency"
    if measured and reward is not None:
        target = reward.target_ms
        fastest, slowest = min(r.latency_ms for r in measured), max(r.latency_ms for r in measured)
        # A target far from every measurement (75 ms is a phone figure; CIFAR nets run in ~0.3 ms
        # on a host thread) would squash the front against an axis end: keep the axis on the data.
        target_on_axis = fastest / 5 <= target <= slowest * 5
        low = (min(fastest, target) if target_on_axis else fastest) * 0.9
        high = (max(slowest, target) if target_on_axis else slowest) * 1.1
        latencies = [low + (high - low) * k / 100 for k in range(101)]
        rewards = sorted({r.reward for r in measured if r.reward is not None}, reverse=True)
        levels = [rewards[0], *(rewards[len(rewards) // k] for k in (2, 4) if len(rewards) > k)] if rewards else []
        for level in dict.fromkeys(levels):
            fig.add_trace(
                go.Scatter(
                    x=latencies,
                    y=[reward.accuracy_for(level, latency) for latency in latencies],
                    mode="lines",
                    name=f"reward = {level:.3f}",
                    line={"dash": "dot", "width": 1, "color": "#7f7f7f"},
                    hoverinfo="name",
                )
            )
        if target_on_axis:
            fig.add_vline(x=target, line={"color": TARGET_COLOR, "dash": "dash"}, annotation_text=f"T = {target:g} ms")
        else:
            title += f" (target T = {target:g} ms lies far outside the measured {fastest:.3g}-{slowest:.3g} ms)"
    fig.update_layout(
        title=title,
        xaxis_title="latency (ms, LiteRT median)",
        yaxis_title="proxy accuracy (held-out fraction)",
        height=560,
        legend={"orientation": "h", "y": -0.18},
    )
    return fig


def hypervolume_figure(info: ParetoInfo):
    import plotly.graph_objects as go

    numbers = [n for n, _ in info.hypervolume_history]
    volumes = [v for _, v in info.hypervolume_history]
    ref_acc, ref_lat = info.hypervolume_reference
    fig = go.Figure(go.Scatter(x=numbers, y=volumes, mode="lines+markers", name="hypervolume", line={"shape": "hv"}))
    fig.update_layout(
        title=f"Hypervolume of the front over trials (reference point: accuracy {ref_acc:g}, latency {ref_lat:.3f} ms)",
        xaxis_title="trial number",
        yaxis_title="hypervolume (accuracy x ms)",
        height=380,
    )
    return fig


def comparison_figures(records: list) -> list:
    """Retrained models against the references, per precision: test accuracy vs measured latency,
    the front of the retrained models as a line, every point labelled."""
    import plotly.graph_objects as go

    from results.compare import PRECISIONS, front

    figures = []
    for precision in PRECISIONS:
        fig = go.Figure()
        line = front(records, precision)
        fig.add_trace(
            go.Scatter(
                x=[r.point(precision)[0] for r in line],
                y=[r.point(precision)[1] for r in line],
                mode="lines",
                line={"shape": "hv", "color": "#888"},
                name="front of the retrained models",
            )
        )
        for kind, color, symbol in (("found", FRONT_COLOR, "circle"), ("reference", "#1f77b4", "diamond")):
            shown = [r for r in records if r.kind == kind and None not in r.point(precision)]
            fig.add_trace(
                go.Scatter(
                    x=[r.point(precision)[0] for r in shown],
                    y=[r.point(precision)[1] for r in shown],
                    mode="markers+text",
                    text=[r.model for r in shown],
                    textposition="top center",
                    marker={"color": color, "size": 11, "symbol": symbol},
                    hovertext=[f"{r.arch_id}<br>{r.params_count:,} params<br>{r.arch}" for r in shown],
                    name="found" if kind == "found" else "references",
                )
            )
        epochs = sorted({r.epochs for r in records})
        fig.update_layout(
            title=f"Retrained under one recipe ({', '.join(map(str, epochs))} epochs): {precision} test accuracy vs latency",
            xaxis_title=f"{precision} latency (ms, timed side by side)",
            yaxis_title="test accuracy",
            height=460,
        )
        figures.append(fig)
    return figures


def histogram_figures(info: ParetoInfo):
    import plotly.graph_objects as go

    measured = [r for r in info.rows if r.measured]
    latency = go.Figure(go.Histogram(x=[r.latency_ms for r in measured], nbinsx=30, marker={"color": OTHER_COLOR}))
    latency.update_layout(title="Latency of all measured trials", xaxis_title="latency (ms)", yaxis_title="trials", height=340)
    accuracy = go.Figure(go.Histogram(x=[r.accuracy for r in measured], nbinsx=30, marker={"color": FRONT_COLOR}))
    accuracy.update_layout(title="Proxy accuracy of all trained trials", xaxis_title="accuracy", yaxis_title="trials", height=340)
    return latency, accuracy


def choice_figures(info: ParetoInfo):
    import plotly.graph_objects as go

    figures = []
    for kind in CHOICE_KINDS:
        names = [name for name in info.choice_frequencies if name.split("_", 1)[1] == kind]
        if not names:
            continue
        labels, front, everywhere = [], [], []
        for name in names:
            for value, (front_share, all_share) in info.choice_frequencies[name].items():
                labels.append(f"{name.split('_', 1)[0]}: {value}")
                front.append(front_share)
                everywhere.append(all_share)
        fig = go.Figure(
            [
                go.Bar(name="on the front", x=labels, y=front, marker={"color": FRONT_COLOR}),
                go.Bar(name="all trials", x=labels, y=everywhere, marker={"color": OTHER_COLOR}),
            ]
        )
        fig.update_layout(
            title=f"Which {kind.replace('_', ' ')} the front prefers, per block",
            barmode="group",
            height=360,
            yaxis_title="share of trials",
            yaxis_tickformat=".0%",
        )
        figures.append(fig)
    return figures


def _front_table(info: ParetoInfo) -> str:
    columns = [
        ("trial", "number", "d"),
        ("arch", "arch", "s"),
        ("accuracy", "accuracy", ".3f"),
        ("latency p50 ms", "latency_ms", ".3f"),
        ("latency p90 ms", "latency_p90_ms", ".3f"),
        ("params", "params_count", ","),
        ("reward", "reward", ".4f"),
        ("seconds", "trial_seconds", ".1f"),
    ]
    head = "".join(f'<th onclick="sortTable({k})">{html.escape(title)}</th>' for k, (title, _, _) in enumerate(columns))
    body = []
    for row in info.front:
        cells = []
        for _, attr, spec in columns:
            value = getattr(row, attr)
            text = number(value, spec)
            sort_key = value if isinstance(value, (int, float)) else html.escape(str(value))
            cells.append(f'<td data-sort="{sort_key}">{html.escape(text)}</td>')
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f'<table id="front"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'


_SORT_SCRIPT = """
function sortTable(column) {
  const table = document.getElementById("front"), body = table.tBodies[0];
  const rows = Array.from(body.rows), ascending = table.dataset.sorted !== String(column);
  rows.sort((a, b) => {
    const x = a.cells[column].dataset.sort, y = b.cells[column].dataset.sort;
    const nx = parseFloat(x), ny = parseFloat(y);
    const order = isNaN(nx) || isNaN(ny) ? x.localeCompare(y) : nx - ny;
    return ascending ? order : -order;
  });
  rows.forEach(r => body.appendChild(r));
  table.dataset.sorted = ascending ? String(column) : "";
}
"""

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; }
h1 { margin-bottom: 0.2em; } .meta { color: #555; }
table { border-collapse: collapse; width: 100%; font-size: 13px; }
th { cursor: pointer; background: #f0f3f6; text-align: left; }
th, td { border-bottom: 1px solid #ddd; padding: 4px 6px; }
td:nth-child(2) { font-family: monospace; font-size: 11px; word-break: break-all; }
pre { background: #f6f8fa; padding: 1em; overflow-x: auto; }
"""


def _divs(figures) -> str:
    return "\n".join(f.to_html(full_html=False, include_plotlyjs=False, config={"responsive": True}) for f in figures)


def render_html(info: ParetoInfo, comparison: list | None = None) -> str:
    import plotly.offline

    from results.compare import format_table, groups

    figures = [front_figure(info), hypervolume_figure(info), *histogram_figures(info), *choice_figures(info)]
    divs = _divs(figures)
    retrained = ""
    if comparison:
        retrained = (
            "<h2>Retrained: found models against the references</h2>"
            '<p class="meta">From <code>nas compare</code>: every model retrained with the same recipe, scored on the '
            "test split with LiteRT, timed side by side (plotted: the latest run's models).</p>"
            f"{_divs(comparison_figures(next(iter(groups(comparison).values()))))}<pre>{html.escape(format_table(comparison))}</pre>"
        )
    counts = ", ".join(f"{n} {state.lower()}" for state, n in sorted(info.counts.items()))
    if info.reused:
        counts += f"; and {info.reused} re-proposals answered from the study"
    best = info.best_reward
    best_text = f"best reward {best.reward:.4f} (trial {best.number})" if best else "no trained trial yet"
    settings = html.escape(json.dumps(info.settings.to_attr(), indent=2, sort_keys=True))
    return f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>nas report: {html.escape(info.study_name)}</title>
<style>{_STYLE}</style>
<script>{plotly.offline.get_plotlyjs()}</script>
<script>{_SORT_SCRIPT}</script></head>
<body>
<h1>Study {html.escape(info.study_name)}</h1>
<p class="meta">{len(info.rows)} trials ({counts}); {len(info.front)} on the Pareto front; {best_text}.
Reward: ACC x (LAT/T)^w, MnasNet (Tan et al., arXiv:1807.11626). Data: CIFAR (Krizhevsky, 2009).</p>
{divs}
{retrained}
<h2>The Pareto front</h2><p class="meta">Click a column to sort.</p>
{_front_table(info)}
<h2>Configuration and latency fingerprint</h2>
<pre>{settings}</pre>
</body></html>
"""


def write_report(info: ParetoInfo, out_dir: str, *, comparison: list | None = None) -> dict[str, str]:
    """report.html, front.csv and front.json in `out_dir`; returns their paths. `comparison`
    (records of `nas compare`) adds the retrained models' section."""
    os.makedirs(out_dir, exist_ok=True)
    paths = {name: os.path.join(out_dir, name) for name in ("report.html", "front.csv", "front.json")}
    write_text_atomic(paths["report.html"], render_html(info, comparison))
    write_csv_atomic(list(info.front), paths["front.csv"])
    front = [asdict(row) for row in info.front]
    write_text_atomic(
        paths["front.json"], json.dumps({"study": info.study_name, "settings": info.settings.to_attr(), "front": front}, indent=1)
    )
    return paths
