// The result page: live progress over a WebSocket (polling as a fallback), then the
// verdict, the annotated video, the probability chart and the face tracks.
(() => {
  const LABELS = {fake: "Fake", real: "Real", uncertain: "Uncertain", no_face: "No face found"};
  const HELP = {
    fake: "At least one face looks manipulated.",
    real: "No face shows signs of manipulation the model can see.",
    uncertain: "The model's score is too close to its threshold to call.",
    no_face: "No face was found in the sampled frames, so nothing was judged.",
  };
  // Faces narrower than this are where the shipped model raises most false alarms on real
  // faces (the README's model card, "False alarms on real faces"): say so where it matters.
  const SMALL_FACE_PX = 80;
  const SMALL_NOTE = `Every face behind this verdict is under ${SMALL_FACE_PX} px wide, where the model often calls real faces fake: look at those faces yourself before relying on it.`;
  const faceWidth = (t) => t.box[2] - t.box[0];
  const smallText = (t) => t.note ? ` · too small to judge (${faceWidth(t)} px)` :
    faceWidth(t) < SMALL_FACE_PX ? ` · small face (${faceWidth(t)} px)` : "";
  let state = JSON.parse(document.getElementById("initial-state").textContent);
  const id = state.id;
  let shown = false, ws = null, retries = 0, polling = null;
  const $ = (x) => document.getElementById(x);

  const seen = [];
  function render(s) {
    state = s;
    seen.push({status: s.status, progress: s.progress, stage: s.stage});
    $("status-badge").textContent = s.status; $("status-badge").className = "badge " + s.status;
    $("stage").textContent = s.stage; $("pct").textContent = s.progress;
    $("bar").style.width = s.progress + "%"; $("progressbar").setAttribute("aria-valuenow", s.progress);
    const active = s.status === "queued" || s.status === "running";
    $("cancel-form").hidden = !active;
    if (s.status === "failed" || s.status === "cancelled") {
      $("error-box").hidden = false;
      $("error-box").textContent = (s.status === "failed" ? "This analysis failed: " : "") + (s.error || s.status);
    }
    if (s.status === "done" && !shown) { shown = true; showResult(); }
    if (!active && ws) { ws.close(); }
    if (!active && polling) { clearInterval(polling); polling = null; }
  }

  async function showResult() {
    const r = await (await fetch(`/analyses/${id}/report.json`, {credentials: "same-origin"})).json();
    $("running-box").hidden = true; $("live").hidden = true; $("result").hidden = false;
    const v = r.verdict;
    $("verdict").textContent = LABELS[v.label]; $("verdict").className = "verdict " + v.label;
    const judged = !(v.note && r.tracks.every(t => t.note));  // some face big enough to judge
    // An uncertain verdict claims no confidence: it says which way the score leans.
    const claim = !judged ? "Not judged" : v.label === "uncertain"
      ? `Leans ${v.fake_probability >= v.threshold ? "fake" : "real"}, too close to call`
      : `Confidence ${Math.round(v.confidence * 100)}%`;
    $("confidence").textContent = v.label === "no_face" ? "" :
      `${claim} · fake probability ${v.fake_probability.toFixed(2)} (threshold ${v.threshold.toFixed(2)})`;
    // What the verdict rests on: the model and the options it ran with.
    const ran = [`Model ${r.model.name} ${r.model.version}`];
    if (r.options) {
      ran.push(`${r.options.frames} frames sampled`);
      if (typeof r.options.min_face === "number")  // reports since the minimum face size
        ran.push(r.options.min_face ? `faces ${r.options.min_face} px and wider judged` : "every face judged");
    }
    $("model-version").textContent = ran.join(" · ");
    const fakes = r.tracks.filter(t => t.label === "fake");
    const onlySmall = v.label === "fake" && fakes.length > 0 && fakes.every(t => faceWidth(t) < SMALL_FACE_PX);
    // v.note (reports since the minimum face size) says which faces were too small to judge.
    // With some faces left out, "no face" would overstate what a Real verdict rests on.
    const help = !judged ? "" : v.note && v.label === "real" ? "No face big enough to judge shows signs of manipulation the model can see." : HELP[v.label];
    $("verdict-help").textContent = [help, v.note, onlySmall ? SMALL_NOTE : ""].filter(Boolean).join(" ");
    const player = $("player");
    player.src = `/analyses/${id}/video/`;
    drawChart(r, player);
    drawTracks(r);
  }

  function drawChart(r, player) {
    const svg = $("chart"), W = 600, H = 160, dur = r.video.duration || 1;
    // A frame whose faces were all too small to judge is drawn grey: scored, not judged.
    const unjudged = new Set(r.tracks.filter(t => t.note).map(t => t.id));
    const pts = r.frames.filter(f => f.faces.length).map(f => [f.time, Math.max(...f.faces.map(x => x.fake_probability)), f.faces.every(x => unjudged.has(x.track_id))]);
    const x = t => 30 + (W - 40) * (t / dur), y = p => 10 + (H - 30) * (1 - p);
    let html = `<line x1="30" x2="${W-10}" y1="${y(r.verdict.threshold)}" y2="${y(r.verdict.threshold)}" stroke="#b45309" stroke-dasharray="4 3"/>`;
    html += `<text x="2" y="${y(1)+4}" font-size="10">1.0</text><text x="2" y="${y(0)+4}" font-size="10">0.0</text>`;
    if (pts.length) html += `<polyline fill="none" stroke="#1d4ed8" stroke-width="2" points="${pts.map(([t,p]) => `${x(t)},${y(p)}`).join(" ")}"/>`;
    pts.forEach(([t, p, small]) => { html += `<circle class="pt" data-t="${t}" cx="${x(t)}" cy="${y(p)}" r="4" fill="${small ? '#9ca3af' : p >= r.verdict.threshold ? '#b91c1c' : '#15803d'}"><title>${t.toFixed(2)} s: ${p.toFixed(2)}${small ? " (too small to judge)" : ""}</title></circle>`; });
    if (!pts.length) html += `<text x="${W/2-60}" y="${H/2}" font-size="13">No face in any sampled frame</text>`;
    svg.innerHTML = html;
    svg.onclick = (ev) => {
      const rect = svg.getBoundingClientRect();
      const t = Math.max(0, Math.min(dur, ((ev.clientX - rect.left) / rect.width * W - 30) / (W - 40) * dur));
      const target = ev.target.dataset && ev.target.dataset.t ? parseFloat(ev.target.dataset.t) : t;
      player.currentTime = target;
    };
  }

  function drawTracks(r) {
    const box = $("tracks");
    if (!r.tracks.length) { box.innerHTML = "<p class='muted'>No faces found.</p>"; return; }
    box.innerHTML = r.tracks.map(t => `<div class="track" data-track="${t.id}">
      <img src="/analyses/${id}/faces/${t.id}.jpg" alt="Face ${t.id + 1} crops" style="width:100%;border-radius:4px">
      <p><strong>Face ${t.id + 1}</strong> <span class="badge ${t.label}">${t.note ? "Too small" : LABELS[t.label]}</span></p>
      <p class="muted">P(fake) ${t.fake_probability.toFixed(2)} · ${t.faces} frame(s)${smallText(t)}</p></div>`).join("");
  }

  async function poll() {
    try { const res = await fetch(`/analyses/${id}/state/`, {credentials: "same-origin"}); if (res.ok) render(await res.json()); } catch (e) {}
  }

  function connect() {
    if (!(state.status === "queued" || state.status === "running")) return;
    const proto = location.protocol === "https:" ? "wss" : "ws";
    ws = new WebSocket(`${proto}://${location.host}/ws/analyses/${id}/`);
    ws.onopen = () => { retries = 0; if (polling) { clearInterval(polling); polling = null; } };
    ws.onmessage = (ev) => render(JSON.parse(ev.data));
    ws.onclose = () => {
      ws = null;
      if (!(state.status === "queued" || state.status === "running")) return;
      retries += 1;
      // WebSocket blocked or down: poll the state meanwhile, and keep trying to reconnect.
      if (retries >= 2 && !polling) polling = setInterval(poll, 2000);
      setTimeout(connect, Math.min(10000, 500 * 2 ** retries));
    };
  }
  // Read by the browser tests (and handy in the console).
  window.verity = {get state() { return state; }, seen};
  render(state);
  connect();
})();
