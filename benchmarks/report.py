"""Writing a run's results: results.json (everything), results.csv and results.md (one row per
cell), PNG plots, and report.html with the tables and plots embedded."""

from __future__ import annotations

import base64
import csv
import html
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from tritonstack.benchmarks.perf_analyzer import write_csv  # noqa: E402
from tritonstack.benchmarks.saving import save_json, why  # noqa: E402
from tritonstack.benchmarks.stats import PERCENTILES, SERVER_PHASES  # noqa: E402
from tritonstack.errors import TritonstackError, UsageError  # noqa: E402

COLUMNS = (
    "model", "format", "served_by", "load_generator", "batch_size", "mode", "level", "stable", "mean_ms",
    "p50_ms", "p90_ms", "p95_ms", "p99_ms", "p99_samples", "inferences_per_s", "samples_per_s",
    "send_lag_p99_ms", "queue_us",
    "compute_input_us", "compute_infer_us", "compute_output_us", "server_total_us", "client_remainder_us",
    "overhead_p50_ms", "throughput_ratio", "formed_batch", "throughput_ratio_formed", "pool_requests",
)  # fmt: skip


def row(cell: dict[str, Any]) -> dict[str, Any]:
    """One flat row per cell for the CSV and the Markdown table (runs from before a field was
    recorded leave it empty)."""
    latency, server, overhead = cell["latency_ms"], cell["server_us"], cell["overhead"]
    values = {k: cell[k] for k in ("format", "batch_size", "mode", "level", "stable")}
    values["model"] = cell.get("name", cell["model"])
    values["served_by"] = cell.get("served_by", {}).get("label")
    values["load_generator"] = cell.get("load_generator", "tritonstack")
    values |= {f"{k}_ms": latency[k] for k in ("mean", *(f"p{q}" for q in PERCENTILES))}
    values["p99_samples"] = cell.get("latency_samples")
    values |= {k: cell[k] for k in ("inferences_per_s", "samples_per_s", "client_remainder_us")}
    values["send_lag_p99_ms"] = cell.get("send_lag_ms", {}).get("p99")
    values |= {f"{phase}_us": server[phase] for phase in SERVER_PHASES}
    values["server_total_us"] = server["total"]
    values["overhead_p50_ms"] = overhead.get("p50_ms")
    values["throughput_ratio"] = overhead.get("throughput_ratio")
    values["formed_batch"] = server.get("formed_batch")
    values["throughput_ratio_formed"] = overhead.get("throughput_ratio_formed")
    values["pool_requests"] = cell.get("pool", {}).get("requests")
    return values


def read_results(path: Path) -> dict[str, Any]:
    try:
        results: dict[str, Any] = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise UsageError(f"cannot read benchmark results {path}: {exc}") from exc
    return results


def write_all(results: dict[str, Any], out: Path) -> list[Path]:
    """results.json first (benchmarks.saving: a disk that is full keeps the measurements), then
    the files made from it, which `tritonstack bench report` can make again."""
    json_path = out / "results.json"
    report = f"`tritonstack bench report {json_path}`"
    save_json(results, json_path, f"copy it to {json_path} and run {report}")
    try:
        with (out / "results.csv").open("w", newline="") as f:
            writer = csv.DictWriter(f, COLUMNS)
            writer.writeheader()
            writer.writerows(row(c) for c in results["cells"])
        (out / "results.md").write_text(markdown(results))
        write_perf_analyzer_csvs(results["cells"], out / "perf_analyzer")
        plots = {name: draw(results) for name, draw in PLOTS.items()}
        try:
            for name, figure in plots.items():
                figure.savefig(out / f"{name}.png", dpi=90)
            (out / "report.html").write_text(report_html(results, plots))
        finally:
            for figure in plots.values():
                plt.close(figure)
    except OSError as exc:
        raise TritonstackError(
            f"{json_path} is written, the files made from it are not ({why(exc)}): free some space and run "
            f"{report}"
        ) from exc
    return sorted(out.iterdir())


def write_perf_analyzer_csvs(cells: list[dict[str, Any]], folder: Path) -> None:
    """The closed-loop cells as perf_analyzer writes them (`-f`, `--verbose-csv`): one file per
    model, batch size and load generator, a row per concurrency, e.g. `dlrm_onnx-b64-tritonstack.csv`."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for cell in cells:
        if cell["mode"] == "concurrency":
            generator = cell.get("load_generator", "tritonstack")
            groups.setdefault(f"{cell['name']}-b{cell['batch_size']}-{generator}", []).append(cell)
    if groups:
        folder.mkdir(exist_ok=True)
    for stem, group in groups.items():
        write_csv(group, folder / f"{stem}.csv")


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"
    return str(value)


def _table_rows(results: dict[str, Any]) -> tuple[list[str], list[list[str]], list[str], list[list[str]]]:
    served = [[_fmt(row(c)[k]) for k in COLUMNS] for c in results["cells"]]
    base_head = ["model", "runtime", "batch_size", "stable", "p50_ms", "p99_ms", "p99_samples",
                 "inferences_per_s", "pool_requests"]  # fmt: skip
    base = [
        [b.get("name") or b["model"], b["runtime"], str(b["batch_size"]), str(b["stable"]),
         _fmt(b["latency_ms"]["p50"]), _fmt(b["latency_ms"]["p99"]), _fmt(b.get("latency_samples")),
         _fmt(b["inferences_per_s"]), _fmt(b.get("pool", {}).get("requests"))]
        for b in results["baselines"]
    ]  # fmt: skip
    return list(COLUMNS), served, base_head, base


def _models_rows(results: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """One row per model: version, platform, the backend that served it, and its in-process baseline
    (or why there is none)."""
    labels = {c.get("name"): c.get("served_by", {}) for c in results["cells"]}
    head = ["model", "version", "platform", "served by", "in process"]
    rows = [
        [m["name"], str(m["version"]), m["platform"] or m["backend"],
         labels.get(m["name"], {}).get("description", ""), m["in_process"]]
        for m in results.get("models", [])
    ]  # fmt: skip
    return head, rows


def stability(results: dict[str, Any]) -> str:
    """How many cells and baselines met the stability rule."""
    cells, baselines = results["cells"], results["baselines"]
    stable_cells = sum(c["stable"] for c in cells)
    stable_baselines = sum(b["stable"] for b in baselines)
    return (
        f"{stable_cells} of {len(cells)} cells and {stable_baselines} of {len(baselines)} in-process "
        "baselines stable"
    )


def _pools(results: dict[str, Any]) -> str:
    """The input pools, one phrase per (model, batch size)."""
    seen: dict[tuple[str, int], dict[str, Any]] = {}
    rows: dict[tuple[str, int], dict[str, Any]] = {}
    for cell in results["cells"]:
        if "pool" in cell:
            seen.setdefault((cell["name"], cell["batch_size"]), cell["pool"])
        if "data" in cell:  # perf_analyzer's: rows it takes `batch_size` at a time
            rows.setdefault((cell["name"], cell["batch_size"]), cell["data"])
    ours = [
        f"{name} b{batch}: {pool['requests']} distinct requests ({pool['bytes'] / 2**20:.2g} MiB, seed "
        f"{pool['seed']})"
        for (name, batch), pool in seen.items()
    ]
    theirs = [
        f"{name} b{batch}: perf_analyzer {data['rows']} {data['kind']} rows (seed {data['seed']})"
        for (name, batch), data in rows.items()
    ]
    return "; ".join(ours + theirs)


def _load_average(env: dict[str, Any]) -> str:
    """The machine's load averages over the run: what else ran shows here."""
    moments = {
        "start": "at the start",
        "served_cells_start": "when the served cells began",
        "end": "at the end",
    }
    seen = env.get("load_average", {})
    if not isinstance(seen, dict) or "end" not in seen:  # runs from before it was recorded
        return ""
    said = "; ".join(f"{moments[k]} {', '.join(f'{v:.2f}' for v in seen[k])}" for k in moments if k in seen)
    return f"Load average (1, 5, 15 min) on {env['cpu_count']} cores: {said}.\n\n"


def markdown(results: dict[str, Any]) -> str:
    env = results["environment"]
    head, served, base_head, base = _table_rows(results)
    models_head, models = _models_rows(results)

    def table(columns: list[str], rows: list[list[str]]) -> str:
        lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
        return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])

    config = results["config"]
    rule = (
        f"Windows: {config['window_s']:g} s at first, counted with at least "
        f"{config.get('min_window_requests', 1)} requests, lengthened until the last "
        f"{config['stable_windows']} agree within {config['tolerance']:.0%} on throughput and p50, at "
        f"most {config['max_cell_s']:g} s per cell; {stability(results)}."
        if "min_window_requests" in config
        else f"{stability(results)} (this run's rule compared p99 across windows)."
    )
    pools = _pools(results)
    load = _load_average(env)
    generators = ", ".join(config.get("load_generators", ["tritonstack"]))
    transport = {
        "none": "in the gRPC messages",
        "system": "in system shared memory",
        "cuda": "in CUDA shared memory",
    }
    sent = f"Load generator: {generators}; tensors {transport[config.get('shared_memory', 'none')]}.\n\n"
    return (
        f"# tritonstack bench\n\n`{env['command']}` on {env['cpu']} ({env['cpu_count']} cores), GPU "
        f"{env['gpu'] or 'none'}; Triton {env['triton_server']}"
        f"{' (' + env['server'] + ')' if 'server' in env else ''}, torch {env['torch']}, onnxruntime "
        f"{env['onnxruntime']}, commit {env['git_commit']}.\n\n{rule}\n\n{sent}{load}"
        + (f"Inputs: {pools}.\n\n" if pools else "")
        + (f"## Models\n\n{table(models_head, models)}\n\n" if models else "")
        + f"## Served (latency ms, server-side us per request)\n\n{table(head, served)}\n\n"
        f"## In process, sequential\n\n{table(base_head, base)}\n"
    )


def _figure(
    results: dict[str, Any], key: str, x: str, draw: Callable[[Any, list[dict[str, Any]]], None]
) -> Figure:
    """One subplot per format; `draw` plots the cells of that format (closed loop only)."""
    formats = sorted({c["format"] for c in results["cells"]})
    figure, axes = plt.subplots(1, len(formats), figsize=(6 * len(formats), 4), squeeze=False)
    for ax, fmt in zip(axes[0], formats, strict=True):
        draw(ax, [c for c in results["cells"] if c["format"] == fmt and c["mode"] == "concurrency"])
        ax.set(title=f"{fmt}", xlabel=x, ylabel=key, xscale="log")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
        else:  # an open-loop run has no closed-loop cells to draw
            ax.text(0.5, 0.5, "no closed-loop cells", ha="center", transform=ax.transAxes)
    figure.tight_layout()
    return figure


def _series(
    cells: list[dict[str, Any]], group: tuple[str, str]
) -> dict[tuple[Any, Any, str], list[dict[str, Any]]]:
    """Cells by the two keys of `group` and by load generator (perf_analyzer's: a suffix to label with)."""
    series: dict[tuple[Any, Any, str], list[dict[str, Any]]] = {}
    for c in cells:
        suffix = " (perf_analyzer)" if c.get("load_generator") == "perf_analyzer" else ""
        series.setdefault((c[group[0]], c[group[1]], suffix), []).append(c)
    return series


def latency_plot(results: dict[str, Any]) -> Figure:
    def draw(ax: Any, cells: list[dict[str, Any]]) -> None:
        for (model, batch, suffix), group in _series(cells, ("model", "batch_size")).items():
            x = [c["level"] for c in group]
            label = f"{model} b{batch} p50{suffix}"
            line = ax.plot(x, [c["latency_ms"]["p50"] for c in group], marker="o", label=label)
            ax.plot(x, [c["latency_ms"]["p99"] for c in group], ls="--", color=line[0].get_color())
        ax.set_yscale("log")

    return _figure(results, "latency ms (p50 solid, p99 dashed)", "concurrency", draw)


def throughput_plot(results: dict[str, Any]) -> Figure:
    def draw(ax: Any, cells: list[dict[str, Any]]) -> None:
        for (model, level, suffix), group in _series(cells, ("model", "level")).items():
            ax.plot([c["batch_size"] for c in group], [c["samples_per_s"] for c in group], marker="o",
                    label=f"{model} c{level:g}{suffix}")  # fmt: skip
        ax.set_yscale("log")

    return _figure(results, "samples/s", "batch size", draw)


def breakdown_plot(results: dict[str, Any]) -> Figure:
    """Where a request's time goes at concurrency 1: Triton's phases and the client-side rest."""
    cells = [c for c in results["cells"] if c["mode"] == "concurrency" and c["level"] == 1]
    labels = [
        f"{c['model']}\n{c['format']} b{c['batch_size']}"
        + ("\nperf_analyzer" if c.get("load_generator") == "perf_analyzer" else "")
        for c in cells
    ]
    parts = {p: [c["server_us"][p] / 1e3 for c in cells] for p in SERVER_PHASES}
    parts["client + network"] = [max(c["client_remainder_us"], 0.0) / 1e3 for c in cells]
    figure, ax = plt.subplots(figsize=(max(6.0, 0.6 * len(cells)), 4.5))
    bottom = [0.0] * len(cells)
    for name, values in parts.items():
        ax.bar(labels, values, bottom=bottom, label=name)
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    ax.set(ylabel="ms per request (mean)", title="served latency breakdown, concurrency 1")
    ax.tick_params(axis="x", labelsize=6)
    ax.legend(fontsize=7)
    figure.tight_layout()
    return figure


PLOTS: dict[str, Callable[[dict[str, Any]], Figure]] = {
    "latency_vs_concurrency": latency_plot,
    "throughput_vs_batch": throughput_plot,
    "overhead_breakdown": breakdown_plot,
}


def _png_base64(figure: Figure) -> str:
    from io import BytesIO

    buffer = BytesIO()
    figure.savefig(buffer, format="png", dpi=90)
    return base64.b64encode(buffer.getvalue()).decode()


def report_html(results: dict[str, Any], plots: dict[str, Figure]) -> str:
    head, served, base_head, base = _table_rows(results)

    def table(columns: list[str], rows: list[list[str]]) -> str:
        cells = "".join("<tr>" + "".join(f"<td>{html.escape(v)}</td>" for v in r) + "</tr>" for r in rows)
        return (
            "<table><tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in columns) + f"</tr>{cells}</table>"
        )

    images = "".join(
        f'<h2>{name}</h2><img src="data:image/png;base64,{_png_base64(f)}">' for name, f in plots.items()
    )
    env = html.escape(json.dumps(results["environment"], indent=1))
    return (
        "<!doctype html><meta charset='utf-8'><title>tritonstack bench</title><style>"
        "table{border-collapse:collapse;font:12px monospace}td,th{border:1px solid #ccc;padding:2px 4px}"
        f"</style><h1>tritonstack bench</h1><pre>{env}</pre><h2>Served</h2>{table(head, served)}"
        f"<h2>In process</h2>{table(base_head, base)}{images}\n"
    )
