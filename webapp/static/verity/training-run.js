// A training run's page: live progress over a WebSocket (polling as a fallback), the
// loss and accuracy curves as epochs arrive, then the new and the active version side by
// side and the Promote button.
(() => {
  let state = JSON.parse(document.getElementById("initial-run").textContent);
  const id = state.id;
  const promoteBase = document.getElementById("run-live").dataset.modelsUrl;
  let ws = null, retries = 0, polling = null;
  const seen = [];
  const $ = (x) => document.getElementById(x);
  const active = (s) => s.status === "queued" || s.status === "running";
  const esc = (t) => String(t).replace(/[&<>"]/g, (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;"}[c]));

  function drawCurve(svg, train, val, fixed01) {
    const W = 400, H = 200, L = 40, R = 10, T = 10, B = 28;
    const all = train.concat(val).filter((v) => Number.isFinite(v));
    const n = Math.max(state.epochs || 1, train.length, val.length, 1);
    let lo = fixed01 ? 0 : Math.min(...all, 0), hi = fixed01 ? 1 : Math.max(...all, 1e-6);
    if (hi - lo < 1e-6) hi = lo + 1;
    const x = (i) => L + (W - L - R) * (n === 1 ? 0.5 : i / (n - 1));
    const y = (v) => T + (H - T - B) * (1 - (v - lo) / (hi - lo));
    let h = `<line x1="${L}" y1="${H - B}" x2="${W - R}" y2="${H - B}" stroke="#9ca3af"/><line x1="${L}" y1="${T}" x2="${L}" y2="${H - B}" stroke="#9ca3af"/>`;
    h += `<text x="4" y="${y(hi) + 4}" font-size="10">${hi.toFixed(2)}</text><text x="4" y="${y(lo) + 4}" font-size="10">${lo.toFixed(2)}</text>`;
    for (let i = 0; i < n; i++) h += `<text x="${x(i) - 3}" y="${H - 10}" font-size="10">${i + 1}</text>`;
    h += `<text x="${W / 2 - 14}" y="${H}" font-size="10">epoch</text>`;
    for (const [vals, cls] of [[train, "train"], [val, "val"]]) {
      if (!vals.length) continue;
      h += `<polyline class="${cls}" fill="none" stroke-width="2" points="${vals.map((v, i) => `${x(i)},${y(v)}`).join(" ")}"/>`;
      vals.forEach((v, i) => { h += `<circle class="pt ${cls}" cx="${x(i)}" cy="${y(v)}" r="3.5"><title>epoch ${i + 1}: ${v.toFixed(4)}</title></circle>`; });
    }
    if (!all.length) h += `<text x="${W / 2 - 80}" y="${H / 2}" font-size="12">The first epoch is on its way</text>`;
    svg.innerHTML = h;
  }

  const ROWS = [["accuracy", "Accuracy"], ["balanced_accuracy", "Balanced accuracy"], ["roc_auc", "ROC AUC"], ["f1", "F1"], ["precision", "Precision"], ["recall", "Recall"], ["n", "Faces"]];
  function drawComparison(s) {
    const m = s.metrics || {};
    if (!m.new) { $("comparison").hidden = true; return; }
    $("comparison").hidden = false;
    const a = m.active || {}, nf = (m.new.frame || {}), af = (a.frame || {});
    const fmt = (v, k) => v === null || v === undefined ? "–" : (k === "n" ? String(v) : v.toFixed(3));
    let h = `<thead><tr><th>Frame-level</th><th>New: ${esc(m.new.version)}</th><th>Active: ${esc(a.version || "–")}</th></tr></thead><tbody>`;
    for (const [k, label] of ROWS) {
      const better = typeof nf[k] === "number" && typeof af[k] === "number" && k !== "n" ? (nf[k] > af[k] ? "new" : nf[k] < af[k] ? "active" : "") : "";
      h += `<tr data-metric="${k}"><th scope="row">${label}</th><td class="${better === "new" ? "better" : ""}">${fmt(nf[k], k)}</td><td class="${better === "active" ? "better" : ""}">${fmt(af[k], k)}</td></tr>`;
    }
    h += "</tbody>";
    $("comparison-table").innerHTML = h;
    $("comparison-note").textContent = `${m.test_faces} faces from ${m.test_clips} held-out clip(s) or image(s), none of them seen in training.` + (a.error ? " " + a.error : "");
    $("comparison-verdict").textContent = aucVerdict(m.auc_difference);
    $("comparison-verdict").hidden = !$("comparison-verdict").textContent;
    const canPromote = s.status === "done" && s.model_version_id && s.model_version_status === "ready";
    $("promote-form").hidden = !canPromote;
    if (canPromote) $("promote-form").action = `${promoteBase}${s.model_version_id}/promote/`;
  }

  // New minus active ROC AUC, and what its paired interval (over the test clips) says.
  function aucVerdict(d) {
    if (!d || typeof d.difference !== "number") return "";
    const signed = (v) => (v >= 0 ? "+" : "\u2212") + Math.abs(v).toFixed(3);
    let text = `ROC AUC, new minus active: ${signed(d.difference)}`;
    if (!d.ci) return text + ". Too few held-out clips of each class for an interval.";
    text += ` (95% interval ${signed(d.ci[0])} to ${signed(d.ci[1])}, resampling whole clips): `;
    if (d.ci[0] > 0) return text + "the new version is better on clips like these.";
    if (d.ci[1] < 0) return text + "the new version is worse on clips like these.";
    return text + "these clips cannot tell the two apart.";
  }

  function render(s) {
    state = s;
    seen.push({status: s.status, epoch: s.epoch, progress: s.progress});
    $("run-status").textContent = s.status; $("run-status").className = "badge " + s.status;
    $("run-stage").textContent = s.stage; $("run-pct").textContent = s.progress;
    $("run-epoch").textContent = s.epoch; $("run-epochs").textContent = s.epochs;
    $("run-bar").style.width = s.progress + "%"; $("run-progressbar").setAttribute("aria-valuenow", s.progress);
    $("run-cancel-form").hidden = !active(s);
    if (s.status === "failed" || s.status === "cancelled") {
      $("run-error").hidden = false;
      $("run-error").textContent = (s.status === "failed" ? "This run failed: " : "") + (s.error || s.status);
    }
    const c = s.curves || {};
    drawCurve($("chart-loss"), c.loss || [], c.val_loss || [], false);
    drawCurve($("chart-accuracy"), c.accuracy || [], c.val_accuracy || [], true);
    drawComparison(s);
    if (s.log !== undefined) $("run-log").textContent = s.log;
    if (!active(s) && ws) ws.close();
    if (!active(s) && polling) { clearInterval(polling); polling = null; }
  }

  async function poll() {
    try { const r = await fetch(`/api/training-runs/${id}/`, {credentials: "same-origin"}); if (r.ok) render(await r.json()); } catch (e) {}
  }

  function connect() {
    if (!active(state)) return;
    const proto = location.protocol === "https:" ? "wss" : "ws";
    ws = new WebSocket(`${proto}://${location.host}/ws/training-runs/${id}/`);
    ws.onopen = () => { retries = 0; if (polling) { clearInterval(polling); polling = null; } };
    ws.onmessage = (ev) => render(JSON.parse(ev.data));
    ws.onclose = () => {
      ws = null;
      if (!active(state)) return;
      retries += 1;
      // WebSocket blocked or down: poll the state meanwhile, and keep trying to reconnect.
      if (retries >= 2 && !polling) polling = setInterval(poll, 3000);
      setTimeout(connect, Math.min(10000, 500 * 2 ** retries));
    };
  }
  // Read by the browser tests (and handy in the console).
  window.verityRun = {get state() { return state; }, seen, aucVerdict};
  render(state);
  connect();
})();
