// relay studio: keeps the page in step with the files, and previews pasted or dropped events.
// The server renders everything; this only fetches the changed part and swaps it in.
(() => {
  "use strict";
  const app = document.getElementById("app");
  const live = document.getElementById("live");
  let shown = app.dataset.fingerprint;
  const POLL_MS = 300;

  async function refresh() {
    const response = await fetch("/fragment" + location.search, { cache: "no-store" });
    if (!response.ok) return;
    const html = await response.text();
    shown = response.headers.get("X-Studio-Fingerprint") || shown;
    app.innerHTML = html;
    app.dataset.fingerprint = shown;
  }

  async function poll() {
    try {
      const response = await fetch("/fingerprint", { cache: "no-store" });
      const { fingerprint } = await response.json();
      live.classList.remove("down");
      live.textContent = "live";
      if (fingerprint !== shown) await refresh();
    } catch (error) {
      live.classList.add("down");
      live.textContent = "studio stopped";
    }
    setTimeout(poll, POLL_MS);
  }

  async function preview(text) {
    const error = document.getElementById("paste-error");
    const response = await fetch("/events", { method: "POST", body: text });
    const answer = await response.json();
    if (!response.ok) {
      error.textContent = answer.error;
      error.hidden = false;
      return;
    }
    error.hidden = true;
    location.assign("/?event=" + encodeURIComponent(answer.event));
  }

  document.getElementById("paste-form").addEventListener("submit", (e) => {
    e.preventDefault();
    preview(document.getElementById("paste").value);
  });
  const stored = document.getElementById("stored-form");
  if (stored) {
    stored.addEventListener("submit", (e) => {
      e.preventDefault();
      const id = stored.elements.stored.value.trim();
      if (id) location.assign("/?event=" + encodeURIComponent("stored:" + id));
    });
  }
  document.addEventListener("dragover", (e) => { e.preventDefault(); document.body.classList.add("dropping"); });
  document.addEventListener("dragleave", () => document.body.classList.remove("dropping"));
  document.addEventListener("drop", async (e) => {
    e.preventDefault();
    document.body.classList.remove("dropping");
    const file = e.dataTransfer.files[0];
    const text = file ? await file.text() : e.dataTransfer.getData("text/plain");
    if (text) {
      document.getElementById("paste").value = text;
      preview(text);
    }
  });
  setTimeout(poll, POLL_MS);
})();
