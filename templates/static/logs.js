// 日志查看器：行号、按行高亮（错误/警告/阶段）、阶段目录与折叠、关键字搜索、构建进行中时实时追加。
// 日志内容一律经 textContent / 文本节点写入，不会被当作 HTML 执行。
// 服务器说 final（日志完整，或构建/审批已结束而日志取不到）时停止轮询；取不到日志时逐步放慢（最长 60 秒一次）。
(function () {
  "use strict";
  var pre = document.getElementById("log");
  if (!pre) { return; }
  var search = document.getElementById("log-search");
  var matches = document.getElementById("log-matches");
  var follow = document.getElementById("log-follow");
  var state = document.getElementById("log-state");
  var notice = document.getElementById("log-notice");
  var stagesNav = document.getElementById("log-stages");
  // 续读位置只用服务器给的数（按 Python 字符计）：浏览器的字符串长度按 UTF-16 计，且会把 CRLF 折成 LF
  var offset = parseInt(pre.dataset.offset, 10) || 0;
  var pending = "";
  var lines = [];  // 每行一个 {el, text, stage}
  var stage = 0;  // 当前所在阶段的编号（0 = 第一个阶段之前）
  var folded = {};
  var delay = 2000;
  var query = "";

  function classify(line) {
    if (/\[Pipeline\] (stage|\{ \()|^Stage "/.test(line)) { return "l-stage"; }
    if (/\b(ERROR|FATAL|FAILURE|Exception|Traceback)\b|错误|失败/.test(line)) { return "l-error"; }
    if (/\b(WARN|WARNING|UNSTABLE)\b|警告/.test(line)) { return "l-warn"; }
    if (/Finished: SUCCESS/.test(line)) { return "l-ok"; }
    return "";
  }

  // 声明式流水线的阶段开头是 “[Pipeline] { (名字)”；老式的是 Stage "名字"
  function stageName(line) {
    var m = /^\[Pipeline\] \{ \((.+)\)\s*$/.exec(line) || /^Stage "(.+)"/.exec(line);
    return m ? m[1] : null;
  }

  function toggleStage(number, open) {
    folded[number] = open === undefined ? !folded[number] : !open;
    lines.forEach(function (line) {
      if (line.stage === number && !line.head) { line.el.classList.toggle("l-folded", !!folded[number]); }
      if (line.stage === number && line.head) { line.el.setAttribute("aria-expanded", folded[number] ? "false" : "true"); }
    });
  }

  function addStage(name, el) {
    stage += 1;
    var number = stage;
    el.id = "stage-" + number;
    el.classList.add("stage-head");
    el.setAttribute("role", "button");
    el.setAttribute("tabindex", "0");
    el.setAttribute("aria-expanded", "true");
    el.title = pre.dataset.foldTitle || "";
    el.addEventListener("click", function () { toggleStage(number); });
    el.addEventListener("keydown", function (event) {
      if (event.key === "Enter" || event.key === " ") { event.preventDefault(); toggleStage(number); }
    });
    var link = document.createElement("a");
    link.href = "#stage-" + number;
    link.textContent = name;
    link.addEventListener("click", function () { toggleStage(number, true); follow.checked = false; });
    stagesNav.appendChild(link);
    stagesNav.hidden = false;
    return number;
  }

  function paint(line) {
    // 搜索词高亮：把命中的片段包进 <mark>，其余仍是文本节点
    var el = line.el;
    el.textContent = "";
    var text = line.text;
    if (!query) { el.textContent = text; return; }
    var lower = text.toLowerCase();
    var at = 0;
    var hit = lower.indexOf(query);
    while (hit !== -1) {
      el.appendChild(document.createTextNode(text.slice(at, hit)));
      var mark = document.createElement("mark");
      mark.textContent = text.slice(hit, hit + query.length);
      el.appendChild(mark);
      at = hit + query.length;
      hit = lower.indexOf(query, at);
    }
    el.appendChild(document.createTextNode(text.slice(at)));
  }

  function renderLines(text) {
    var parts = (pending + text).split("\n");
    pending = parts.pop();  // 最后一段可能是半行，等下一次补齐
    var frag = document.createDocumentFragment();
    parts.forEach(function (raw) {
      var textLine = raw.replace(/\r$/, "");
      var el = document.createElement("span");
      var line = { el: el, text: textLine, stage: stage, head: false };
      el.className = "line " + classify(textLine);
      el.dataset.n = String(lines.length + 1);
      var name = stageName(textLine);
      if (name) {
        line.stage = addStage(name, el);
        line.head = true;
      } else if (folded[line.stage]) {
        el.classList.add("l-folded");
      }
      lines.push(line);
      if (query) { applyTo(line); } else { el.textContent = textLine; }
      frag.appendChild(el);
    });
    pre.appendChild(frag);
    updateCount();
  }

  function applyTo(line) {
    var hit = !query || line.text.toLowerCase().indexOf(query) !== -1;
    line.el.classList.toggle("l-hidden", !hit);
    line.hit = hit;
    paint(line);
  }

  function updateCount() {
    if (!query) { matches.textContent = ""; return; }
    var count = lines.filter(function (line) { return line.hit; }).length;
    matches.textContent = count + " / " + lines.length;
  }

  function applySearch() {
    query = (search.value || "").toLowerCase();
    lines.forEach(applyTo);
    updateCount();
  }

  var initial = pre.textContent;
  pre.textContent = "";
  renderLines(initial);
  if (pending) { renderLines("\n"); }
  var typing = null;
  search.addEventListener("input", function () {
    clearTimeout(typing);
    typing = setTimeout(applySearch, 120);  // 几十万行的日志：停手再过滤
  });

  function showNotice(text) {
    notice.textContent = text || "";
    notice.hidden = !text;
  }

  function settle() {
    state.dataset.final = "1";
    if (pending) { renderLines("\n"); }
  }

  function poll() {
    if (state.dataset.final === "1") { return; }
    fetch(pre.dataset.tailUrl + "&offset=" + offset, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (r) { return r.json(); })
      .then(function (data) {
        if (data.error) {  // 无权查看、审批不存在、参数错：不会自己好，停下并说明
          showNotice(data.error.message);
          settle();
          return;
        }
        if (data.reset) {  // 日志在 Jenkins 上被重建：从头显示
          pre.textContent = ""; pending = ""; lines = []; stage = 0; folded = {};
          stagesNav.querySelectorAll("a").forEach(function (a) { a.remove(); });
          stagesNav.hidden = true;
        }
        if (data.text) { renderLines(data.text); }
        offset = data.offset;
        state.textContent = data.status;
        showNotice(data.notice);
        if (follow.checked && data.text) { window.scrollTo(0, document.body.scrollHeight); }
        if (data.final) { settle(); return; }
        delay = data.notice ? Math.min(delay * 2, 60000) : 2000;
        setTimeout(poll, delay);
      })
      .catch(function () {
        delay = Math.min(delay * 2, 60000);
        setTimeout(poll, delay);
      });
  }
  if (state.dataset.final !== "1") { setTimeout(poll, delay); }
}());
