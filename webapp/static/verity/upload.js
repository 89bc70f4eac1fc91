// The upload page: checks before sending, drag and drop, and an upload progress bar.
(() => {
  const form = document.getElementById("upload-form"), input = document.getElementById("file");
  const MAX = Number(form.dataset.maxBytes);
  const drop = document.getElementById("drop"), err = document.getElementById("upload-error");
  const okExt = /\.(mp4|mov|m4v|3gp|webm|mkv|avi|mpg|mpeg|ts|flv)$/i;
  function fail(msg) { err.textContent = msg; err.hidden = false; }
  function check(f) {
    err.hidden = true;
    if (!f) return fail("Choose a video file to upload."), false;
    if (f.size === 0) return fail("The file is empty (0 bytes)."), false;
    if (f.size > MAX) return fail(`The file is ${(f.size/1e6).toFixed(0)} MB; the limit is ${(MAX/1e6).toFixed(0)} MB.`), false;
    if (!(f.type.startsWith("video/") || okExt.test(f.name))) return fail("This file is not a video. Verity accepts MP4, MOV, WebM, MKV or AVI clips."), false;
    document.getElementById("chosen").textContent = `${f.name} (${(f.size/1e6).toFixed(1)} MB)`;
    return true;
  }
  input.addEventListener("change", () => check(input.files[0]));
  ["dragenter", "dragover"].forEach(e => drop.addEventListener(e, ev => { ev.preventDefault(); drop.classList.add("over"); }));
  ["dragleave", "drop"].forEach(e => drop.addEventListener(e, ev => { ev.preventDefault(); drop.classList.remove("over"); }));
  drop.addEventListener("drop", ev => { if (ev.dataTransfer.files.length) { input.files = ev.dataTransfer.files; check(input.files[0]); } });
  form.addEventListener("submit", ev => {
    ev.preventDefault();
    const f = input.files[0];
    if (!check(f)) return;
    const xhr = new XMLHttpRequest();
    xhr.open("POST", form.action);
    xhr.setRequestHeader("Accept", "application/json");
    document.getElementById("upload-progress").hidden = false;
    document.getElementById("upload-submit").disabled = true;
    xhr.upload.onprogress = e => { if (e.lengthComputable) { const p = Math.round(100 * e.loaded / e.total);
      document.getElementById("upload-pct").textContent = p; document.getElementById("upload-bar").style.width = p + "%"; } };
    xhr.onload = () => {
      document.getElementById("upload-submit").disabled = false;
      let body = {}; try { body = JSON.parse(xhr.responseText); } catch (e) {}
      if (xhr.status === 201) { window.location = body.url; }
      else { document.getElementById("upload-progress").hidden = true; fail(body.error || `Upload failed (HTTP ${xhr.status}).`); }
    };
    xhr.onerror = () => { document.getElementById("upload-submit").disabled = false; fail("The upload was interrupted. Check your connection and try again."); };
    xhr.send(new FormData(form));
  });
})();
