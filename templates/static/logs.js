// 日志查看器：按行高亮（错误/警告/阶段）、关键字搜索、构建进行中时实时追加。
// 日志内容一律经 textContent 写入，不会被当作 HTML 执行。
(function () {
  "use strict";
  var pre = document.getElementById("log");
  if (!pre) { return; }
  var search = document.getElementById("log-search");
  var matches = document.getElementById("log-matches");
  var follow = document.getElementById("log-follow");
  var state = document.getElementById("log-state");
  // 续读位置只用服务器给的数（按 Python 字符计）：浏览器的字符串长度按 UTF-16 计，且会把 CRLF 折成 LF
  var offset = parseInt(pre.dataset.offset, 10) || 0;
  var pending = "";

  function classify(line) {
    if (/\[Pipeline\] (stage|\{ \()|^Stage "/.test(line)) { return "l-stage"; }
    if (/\b(ERROR|FATAL|FAILURE|Exception|Traceback)\b|错误|失败/.test(line)) { return "l-error"; }
    if (/\b(WARN|WARNING|UNSTABLE)\b|警告/.test(line)) { return "l-warn"; }
    if (/Finished: SUCCESS/.test(line)) { return "l-ok"; }
    return "";
  }

  function renderLines(text, target) {
    var lines = (pending + text).split("\n");
    pending = lines.pop();  // 最后一段可能是半行，等下一次补齐
    var frag = document.createDocumentFragment();
    lines.forEach(function (line) {
      var span = document.createElement("span");
      span.className = "line " + classify(line);
      span.textContent = line + "\n";
      frag.appendChild(span);
    });
    target.appendChild(frag);
  }

  function applySearch() {
    var q = (search.value || "").toLowerCase();
    var count = 0;
    pre.querySelectorAll("span.line").forEach(function (span) {
      var hit = !q || span.textContent.toLowerCase().indexOf(q) !== -1;
      span.classList.toggle("l-hidden", !hit);
      if (q && hit) { count += 1; }
    });
    matches.textContent = q ? count + " / " + pre.querySelectorAll("span.line").length : "";
  }

  var initial = pre.textContent;
  pre.textContent = "";
  renderLines(initial + "\n", pre);
  search.addEventListener("input", applySearch);

  function poll() {
    if (state.dataset.complete === "1") { return; }
    fetch(pre.dataset.tailUrl + "&offset=" + offset, { credentials: "same-origin" })
      .then(function (r) { return r.json(); })
      .then(function (data) {
        if (data.error && data.error.code) { return; }
        if (data.reset) { pre.textContent = ""; pending = ""; }
        if (data.text) { renderLines(data.text, pre); applySearch(); }
        offset = data.offset;
        if (follow.checked) { window.scrollTo(0, document.body.scrollHeight); }
        if (data.complete) {
          state.dataset.complete = "1";
          state.textContent = pre.dataset.doneText;
          if (pending) { renderLines("\n", pre); }
          return;
        }
        setTimeout(poll, 2000);
      })
      .catch(function () { setTimeout(poll, 5000); });
  }
  setTimeout(poll, 2000);
}());
