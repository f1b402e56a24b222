"""The hall dashboard's page (GET /): one self-contained HTML file, Chinese, that fits a
1920×1080 hall screen and a phone. It draws /api/hall's snapshot and redraws it at every
server-sent event from /api/events (within 2 s of a change: the server pushes at once).
`/?hall=HG01` shows one hall's windows. Every text from a device or the store goes in
with textContent, never as HTML."""

PAGE = """<!doctype html>
<html lang="zh-CN">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>政务服务大厅 · 好差评实时看板</title>
<style>
  :root { --ok:#1a7f37; --bad:#c62828; --warn:#b26a00; --muted:#667; }
  * { box-sizing: border-box; }
  body { margin:0; font-family:"WenQuanYi Zen Hei","Noto Sans CJK SC","Microsoft YaHei",
         sans-serif; background:#f4f6fa; color:#1b1f24; }
  header { display:flex; flex-wrap:wrap; gap:.5em 2em; align-items:baseline;
           padding:.8em 1.2em; background:#0b3d91; color:#fff; }
  header h1 { margin:0; font-size:clamp(1.2rem, 2.2vw, 2.4rem); }
  header span { font-size:clamp(.9rem, 1.1vw, 1.3rem); opacity:.9; }
  main { padding:1em; }
  table { width:100%; border-collapse:collapse; background:#fff;
          font-size:clamp(.95rem, 1.25vw, 1.6rem); }
  th, td { padding:.45em .6em; border-bottom:1px solid #e3e6ec; text-align:center; }
  th { background:#e8edf6; font-weight:600; }
  td.name { text-align:left; }
  .on { color:var(--ok); font-weight:600; } .off { color:var(--bad); font-weight:600; }
  .unknown { color:var(--muted); }
  .low { color:var(--bad); font-weight:600; } .warn { color:var(--warn); font-weight:600; }
  .hint { color:var(--muted); font-size:.8em; }
  .tag { display:inline-block; padding:0 .4em; margin:.1em; border-radius:.3em;
         background:#fdecea; color:var(--bad); font-size:.85em; }
  #empty { padding:2em; text-align:center; color:var(--muted); }
  /* a phone: each window becomes a card, each cell a labelled line */
  @media (max-width: 700px) {
    thead { display:none; }
    table, tbody, tr, td { display:block; width:100%; }
    tr { margin-bottom:.8em; border:1px solid #d5dae3; border-radius:.5em; background:#fff; }
    td { display:flex; justify-content:space-between; text-align:right; border:none;
         border-bottom:1px solid #eef0f4; }
    td::before { content:attr(data-label); color:var(--muted); margin-right:1em; }
    td.name { font-weight:600; }
  }
</style>
</head>
<body>
<header>
  <h1>好差评实时看板</h1>
  <span id="day"></span><span id="link" class="unknown">连接中…</span>
  <span id="updated"></span>
</header>
<main>
<table>
  <thead><tr>
    <th>窗口</th><th>在线</th><th>待上传</th><th>今日评价</th><th>今日满意率</th>
    <th>未处理预警</th><th>差评待办</th><th>临期/超期</th><th>当班人员</th>
  </tr></thead>
  <tbody id="rows"></tbody>
</table>
<div id="empty" hidden>暂无窗口数据</div>
</main>
<script>
"use strict";
// A Map, not an object: a kind such as "constructor" or "__proto__" would find what every
// object inherits (function text) instead of falling back to the kind itself.
const ALERTS = new Map([["bad_rating_burst", "差评集中"], ["low_satisfaction", "满意率低"],
  ["device_silent", "设备离线"], ["backlog", "积压"], ["possible_gaming", "疑似刷评"],
  ["clock_unsynced", "时钟未同步"]]);
function cell(label, text, cls) {
  const td = document.createElement("td");
  td.dataset.label = label;
  td.textContent = text;
  if (cls) td.className = cls;
  return td;
}
function draw(hall) {
  document.getElementById("day").textContent =
    (hall.hall ? "大厅 " + hall.hall + " · " : "") + "日期 " + hall.today;
  document.getElementById("updated").textContent =
    "更新于 " + new Date(hall.at).toLocaleTimeString("zh-CN", {hour12:false});
  const rows = document.getElementById("rows");
  rows.replaceChildren();
  for (const w of hall.windows) {
    const tr = document.createElement("tr");
    tr.dataset.device = w.device_id;
    tr.append(cell("窗口", w.window_name, "name"));
    tr.append(w.online === null ? cell("在线", "未知", "unknown")
              : cell("在线", w.online ? "在线" : "离线", w.online ? "on" : "off"));
    tr.append(cell("待上传", w.backlog === null ? "—" : String(w.backlog),
                   w.backlog > 50 ? "warn" : ""));
    tr.append(cell("今日评价", String(w.today), "today"));
    const low = w.satisfaction !== null && Number(w.satisfaction) < 80;
    tr.append(cell("今日满意率", w.satisfaction === null ? "—" : w.satisfaction + "%",
                   low ? "low satisfaction" : "satisfaction"));
    const alerts = cell("未处理预警", w.alerts.length ? "" : "无");
    for (const a of w.alerts) {
      const tag = document.createElement("span");
      tag.className = "tag"; tag.textContent = ALERTS.get(a) || a; alerts.append(tag);
    }
    tr.append(alerts);
    tr.append(cell("差评待办", String(w.followups_open), w.followups_open ? "warn" : ""));
    tr.append(cell("临期/超期", w.followups_due + " / " + w.followups_overdue,
                   w.followups_overdue ? "low" : (w.followups_due ? "warn" : "")));
    // The clerk logged in (the device's status); from an older device that does not
    // report logins, the staff of its latest rating today, marked as such.
    const clerk = cell("当班人员", w.clerk || "—", w.clerk_source === "rating" ? "guess" : "");
    if (w.clerk && w.clerk_source === "rating") {
      const hint = document.createElement("small");
      hint.className = "hint"; hint.textContent = "（最近评价）";
      clerk.append(hint);
      clerk.title = "该设备不上报工作人员登录，显示今日最近一次评价中的工作人员";
    }
    tr.append(clerk);
    rows.append(tr);
  }
  document.getElementById("empty").hidden = hall.windows.length > 0;
}
// /?hall=HG01 shows one hall's windows (a hall's own screen); / shows every hall.
const HALL = new URLSearchParams(location.search).get("hall");
const QUERY = HALL ? "?hall=" + encodeURIComponent(HALL) : "";
function connect() {
  const link = document.getElementById("link");
  const events = new EventSource("api/events" + QUERY);
  events.addEventListener("hall", (e) => {
    link.textContent = "实时"; link.className = "on";
    draw(JSON.parse(e.data));
  });
  events.onerror = () => { link.textContent = "重新连接中…"; link.className = "off"; };
}
fetch("api/hall" + QUERY).then((r) => r.json()).then(draw).finally(connect);
</script>
</body>
</html>
"""
