"""The live page at `/`: server-rendered HTML with an SVG chart, nothing fetched from anywhere else.
It reloads itself every few seconds (a meta refresh: no script, no chart library)."""

from __future__ import annotations

from datetime import UTC, datetime
from html import escape
from typing import Any

REFRESH_S = 5
CHART_W, CHART_H, PAD = 720, 220, 32


def _clock(iso: str) -> str:
    return datetime.fromisoformat(iso).astimezone(UTC).strftime("%H:%M")


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def chart_svg(throughput: list[dict[str, Any]]) -> str:
    """Bars of status changes per minute, oldest left; the current minute is still filling."""
    peak = max((point["changes"] for point in throughput), default=0) or 1
    slot = (CHART_W - 2 * PAD) / max(len(throughput), 1)
    bars, labels = [], []
    for index, point in enumerate(throughput):
        height = (CHART_H - 2 * PAD) * point["changes"] / peak
        x = PAD + index * slot
        y = CHART_H - PAD - height
        bars.append(
            f'<rect class="bar" x="{x + 2:.1f}" y="{y:.1f}" width="{slot - 4:.1f}" '
            f'height="{height:.1f}" data-minute="{escape(point["minute"])}" '
            f'data-changes="{point["changes"]}"><title>{_clock(point["minute"])}: '
            f"{point['changes']} changes</title></rect>"
        )
        if index % 3 == 0 or index == len(throughput) - 1:
            labels.append(
                f'<text x="{x + slot / 2:.1f}" y="{CHART_H - PAD + 16}" '
                f'text-anchor="middle">{_clock(point["minute"])}</text>'
            )
    return (
        f'<svg id="throughput" viewBox="0 0 {CHART_W} {CHART_H}" width="{CHART_W}" '
        f'height="{CHART_H}" role="img" aria-label="status changes per minute">'
        f'<line x1="{PAD}" y1="{CHART_H - PAD}" x2="{CHART_W - PAD}" y2="{CHART_H - PAD}" '
        f'class="axis"/><text x="{PAD}" y="{PAD - 10}">peak {peak}/min</text>'
        + "".join(bars)
        + "".join(labels)
        + "</svg>"
    )


def render(overview: dict[str, Any]) -> str:
    rows = "".join(
        f'<tr data-restaurant="{escape(r["restaurant_id"])}">'
        f"<td>{escape(r['restaurant_id'])}</td>"
        f'<td class="changes">{r["changes_last_minute"]}</td>'
        f'<td class="conflicts">{r["conflicts_last_minute"]}</td>'
        f'<td class="p50">{_seconds(r["prep_p50_s"])}</td>'
        f'<td class="p95">{_seconds(r["prep_p95_s"])}</td>'
        f'<td class="hour">{r["changes_last_hour"]}</td></tr>'
        for r in overview["restaurants"]
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="refresh" content="{REFRESH_S}">
<title>Order Status: live figures</title>
<style>
body {{ font: 14px system-ui, sans-serif; margin: 24px; color: #1d2330; }}
h1 {{ font-size: 20px; }}
.bar {{ fill: #3b7dd8; }} .axis {{ stroke: #888; }} svg text {{ font-size: 11px; fill: #555; }}
table {{ border-collapse: collapse; margin-top: 16px; }}
th, td {{ padding: 4px 10px; border-bottom: 1px solid #ddd; text-align: right; }}
td:first-child, th:first-child {{ text-align: left; font-family: monospace; }}
.muted {{ color: #777; }}
</style></head>
<body>
<h1>Order Status: live figures</h1>
<p class="muted">as of <span id="as-of">{escape(overview["as_of"])}</span>, refreshed every
{REFRESH_S} s; JSON: <a href="figures">/figures</a>,
<code>/restaurants/&lt;id&gt;/figures</code>, <a href="metrics">/metrics</a></p>
<h2>Status changes per minute, last {len(overview["throughput"])} minutes</h2>
{chart_svg(overview["throughput"])}
<h2>Restaurants (busiest first)</h2>
<table id="restaurants"><thead><tr><th>restaurant</th><th>changes/min</th>
<th>conflicts/min</th><th>prep p50 s</th><th>prep p95 s</th><th>changes, last hour</th></tr>
</thead><tbody>{rows}</tbody></table>
</body></html>
"""
