"""The report as one self-contained HTML file: the tables plus three SVG charts drawn
here (levels per window, the daily satisfaction trend, reasons of bad ratings). No
script, no web font, no chart library: a few rectangles and a polyline are all a chart
of counts needs, and the file opens offline years later exactly as it was written."""

from __future__ import annotations

from html import escape

from city_platform.report import (
    LEVEL_LABELS,
    LEVELS,
    REASON_LABELS,
    Report,
    Tally,
    fmt,
    iter_rows,
    percent,
)

COLOURS = {5: "#1a7f37", 4: "#4caf50", 3: "#a5d6a7", 2: "#ff9800", 1: "#c62828"}
MAX_WINDOWS_IN_CHART = 60
FONT = 'font-family="WenQuanYi Zen Hei, Noto Sans CJK SC, Microsoft YaHei, sans-serif"'


def _label(t: Tally) -> str:
    name = t.window_name or t.window_id
    return f"{t.hall_id} {name}"


def levels_chart(report: Report) -> str:
    windows = [w for hall in report.halls for w in hall.windows if w.total]
    windows = sorted(windows, key=lambda w: -w.total)[:MAX_WINDOWS_IN_CHART]
    if not windows:
        return '<p class="none">此期间无评价</p>'
    row, left, width = 26, 220, 560
    height = 40 + row * len(windows) + 30
    biggest = max(w.total for w in windows)
    parts = [f'<svg class="chart" id="chart-levels" xmlns="http://www.w3.org/2000/svg" '
             f'viewBox="0 0 {left + width + 60} {height}" width="{left + width + 60}" '
             f'height="{height}" {FONT} font-size="13" role="img" '
             f'aria-label="各窗口评价等级分布">']
    for i, level in enumerate(LEVELS):
        key_x = left + i * 110
        parts.append(f'<rect x="{key_x}" y="6" width="14" height="14" '
                     f'fill="{COLOURS[level]}"/>'
                     f'<text x="{key_x + 18}" y="18">{LEVEL_LABELS[level]}</text>')
    for i, w in enumerate(windows):
        y = 34 + i * row
        parts.append(f'<text x="{left - 8}" y="{y + 15}" text-anchor="end">'
                     f'{escape(_label(w))}</text>')
        x = float(left)
        for level in LEVELS:
            n = w.levels.get(level, 0)
            if not n:
                continue
            span = width * n / biggest
            parts.append(f'<rect class="bar" x="{x:.1f}" y="{y}" width="{span:.1f}" '
                         f'height="{row - 6}" fill="{COLOURS[level]}">'
                         f'<title>{escape(_label(w))} {LEVEL_LABELS[level]} {n}</title></rect>')
            x += span
        parts.append(f'<text x="{x + 6:.1f}" y="{y + 15}">{w.total}（{fmt(w.rate)}%）</text>')
    parts.append("</svg>")
    return "".join(parts)


def trend_chart(report: Report) -> str:
    days = [(d, n, g) for d, n, g in report.daily if n]
    if not days:
        return '<p class="none">此期间无评价</p>'
    left, top, width, height = 50, 20, 760, 240
    step = width / max(1, len(days) - 1) if len(days) > 1 else 0
    biggest = max(n for _, n, _ in days)
    parts = [f'<svg class="chart" id="chart-trend" xmlns="http://www.w3.org/2000/svg" '
             f'viewBox="0 0 {left + width + 40} {top + height + 50}" '
             f'width="{left + width + 40}" height="{top + height + 50}" {FONT} '
             f'font-size="12" role="img" aria-label="每日满意率走势">']
    for pct in (0, 50, 80, 100):
        y = top + height * (1 - pct / 100)
        parts.append(f'<line x1="{left}" y1="{y:.1f}" x2="{left + width}" y2="{y:.1f}" '
                     f'stroke="#ccd" stroke-dasharray="{"" if pct in (0, 100) else "4 3"}"/>'
                     f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{pct}%</text>')
    bar = max(2.0, min(24.0, width / max(1, len(days)) * 0.6))
    points = []
    for i, (day, n, good) in enumerate(days):
        x = left + (i * step if len(days) > 1 else width / 2)
        h = height * 0.4 * n / biggest
        parts.append(f'<rect class="bar" x="{x - bar / 2:.1f}" y="{top + height - h:.1f}" '
                     f'width="{bar:.1f}" height="{h:.1f}" fill="#9fb8e0">'
                     f'<title>{day} 评价 {n}</title></rect>')
        rate = percent(good, n)
        y = top + height * (1 - float(rate or 0) / 100)
        points.append(f"{x:.1f},{y:.1f}")
        parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="#0b3d91">'
                     f'<title>{day} 满意率 {fmt(rate)}%</title></circle>')
        if len(days) <= 16 or i % max(1, len(days) // 8) == 0:
            parts.append(f'<text x="{x:.1f}" y="{top + height + 18}" text-anchor="middle">'
                         f'{day.month}/{day.day}</text>')
    parts.append(f'<polyline class="line" points="{" ".join(points)}" fill="none" '
                 f'stroke="#0b3d91" stroke-width="2.5"/>')
    parts.append(f'<text x="{left}" y="{top + height + 40}">折线：每日满意率；柱：每日评价数'
                 f'（最多 {biggest}）</text></svg>')
    return "".join(parts)


def reasons_chart(report: Report) -> str:
    reasons = sorted(report.reasons.items(), key=lambda item: (-item[1], item[0]))
    if not reasons:
        return '<p class="none">此期间无差评</p>'
    row, left, width = 28, 120, 500
    height = 10 + row * len(reasons)
    biggest = max(n for _, n in reasons)
    parts = [f'<svg class="chart" id="chart-reasons" xmlns="http://www.w3.org/2000/svg" '
             f'viewBox="0 0 {left + width + 60} {height}" width="{left + width + 60}" '
             f'height="{height}" {FONT} font-size="13" role="img" aria-label="差评原因">']
    for i, (code, n) in enumerate(reasons):
        y = 6 + i * row
        span = width * n / biggest
        label = REASON_LABELS.get(code, code)
        parts.append(f'<text x="{left - 8}" y="{y + 16}" text-anchor="end">{escape(label)}'
                     f'</text><rect class="bar" x="{left}" y="{y}" width="{span:.1f}" '
                     f'height="{row - 8}" fill="#c62828"><title>{escape(code)} {n}</title>'
                     f'</rect><text x="{left + span + 6:.1f}" y="{y + 16}">{n}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _table(report: Report) -> str:
    head = ("<tr><th>范围</th><th>大厅</th><th>窗口</th><th>排名</th><th>评价数</th>"
            + "".join(f"<th>{LEVEL_LABELS[level]}</th>" for level in LEVELS)
            + "<th>满意率</th><th>主动评价</th><th>超时未评</th><th>差评原因</th>"
              "<th>差评数</th><th>回访率</th><th>整改率</th></tr>")
    rows = []
    for scope, t in iter_rows(report):
        name = "合计" if scope == "hall" else escape(t.window_name or t.window_id)
        rows.append(
            f'<tr class="{scope}"><td>{"大厅" if scope == "hall" else "窗口"}</td>'
            f"<td>{escape(t.hall_id)}</td><td>{name}</td>"
            f"<td>{'' if t.rank is None else t.rank}</td><td>{t.total}</td>"
            + "".join(f"<td>{t.levels.get(level, 0)}</td>" for level in LEVELS)
            + f"<td>{fmt(t.rate)}%</td><td>{t.spontaneous}（"
              f"{fmt(percent(t.spontaneous, t.total))}%）</td><td>{t.expired}</td>"
              f"<td>{escape(t.reasons_text())}</td><td>{t.followups}</td>"
              f"<td>{fmt(t.contact_rate)}%</td><td>{fmt(t.rectify_rate)}%</td></tr>")
    return f"<table>{head}{''.join(rows)}</table>"


def to_html(report: Report) -> str:
    span = f"{report.first or '最早'} 至 {report.last or '最近'}"
    return f"""<!doctype html>
<html lang="zh-CN"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>好差评分析报告 {escape(span)}</title>
<style>
body {{ font-family: "WenQuanYi Zen Hei", "Noto Sans CJK SC", "Microsoft YaHei", sans-serif;
       margin: 1.5em; color: #1b1f24; }}
h1 {{ font-size: 1.6em; }} h2 {{ font-size: 1.2em; margin-top: 1.6em; }}
table {{ border-collapse: collapse; font-size: .9em; }}
th, td {{ border: 1px solid #d5dae3; padding: .25em .5em; text-align: right; }}
th {{ background: #e8edf6; }} tr.hall td {{ font-weight: bold; background: #f4f6fa; }}
td:nth-child(3), td:nth-child(15) {{ text-align: left; }}
svg.chart {{ max-width: 100%; height: auto; }} .none {{ color: #667; }}
</style></head><body>
<h1>好差评分析报告</h1>
<p>统计期间：{escape(span)}（{escape(report.timezone)}）。满意率 = 非常满意、满意、基本满意
之和 ÷ 全部评价；回访率、整改率 = 按期回访、按期整改的差评 ÷ 全部差评；超时未评不计入评价。</p>
<h2>各窗口评价等级</h2>
{levels_chart(report)}
<h2>每日满意率走势</h2>
{trend_chart(report)}
<h2>差评原因</h2>
{reasons_chart(report)}
<h2>明细与排名</h2>
{_table(report)}
</body></html>
"""
