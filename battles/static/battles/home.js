// The upload form: shows the chosen file, refuses one over the size limit before it is sent,
// accepts a file dropped anywhere on the drop zone, and stops a double submit.
// The file name is the user's own but still only ever goes in as text.
"use strict";

(() => {
  const form = document.getElementById("upload-form");
  const input = document.getElementById("id_file");
  const zone = document.getElementById("dropzone");
  const info = document.getElementById("file-info");
  const submit = document.getElementById("start-battle");
  if (!form || !input) return;

  const configEl = document.getElementById("home-config");
  const maxBytes = configEl ? Number(JSON.parse(configEl.textContent)) || 0 : 0;

  function formatSize(bytes) {
    if (bytes < 1024) return `${bytes} bytes`;
    if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(1)} KB`;
    return `${(bytes / (1024 * 1024)).toFixed(1)} MB`;
  }

  function showChosenFile() {
    const file = input.files && input.files[0];
    input.setCustomValidity("");
    if (zone) zone.classList.toggle("has-file", Boolean(file));
    if (!info) return;
    info.classList.remove("file-info-error");
    if (!file) {
      info.textContent = "";
      return;
    }
    info.textContent = `${file.name} · ${formatSize(file.size)}`;
    if (maxBytes && file.size > maxBytes) {
      const message = `This file is ${formatSize(file.size)}; the limit is ${formatSize(maxBytes)}.`;
      input.setCustomValidity(message);
      info.textContent = message;
      info.classList.add("file-info-error");
    }
  }

  input.addEventListener("change", showChosenFile);
  showChosenFile();

  if (zone) {
    const isFileDrag = (e) => e.dataTransfer && Array.from(e.dataTransfer.types || []).includes("Files");
    zone.addEventListener("dragover", (e) => {
      if (!isFileDrag(e)) return;
      e.preventDefault();
      zone.classList.add("dragging");
    });
    zone.addEventListener("dragleave", (e) => {
      if (!zone.contains(e.relatedTarget)) zone.classList.remove("dragging");
    });
    zone.addEventListener("drop", (e) => {
      zone.classList.remove("dragging");
      if (!isFileDrag(e)) return;
      e.preventDefault();
      if (e.dataTransfer.files.length) {
        input.files = e.dataTransfer.files;
        showChosenFile();
      }
    });
    // A file dropped just beside the zone would otherwise make the browser leave the page to open it.
    for (const type of ["dragover", "drop"]) {
      window.addEventListener(type, (e) => {
        if (isFileDrag(e) && !e.defaultPrevented) e.preventDefault();
      });
    }
  }

  form.addEventListener("submit", () => {
    if (!submit) return;
    // Disabled after this tick, so the click still submits the form once.
    setTimeout(() => {
      submit.disabled = true;
      submit.textContent = "Starting…";
      form.setAttribute("aria-busy", "true");
    }, 0);
  });

  // Coming back with the browser's Back button may restore the page as it was left.
  window.addEventListener("pageshow", () => {
    if (!submit) return;
    submit.disabled = false;
    submit.textContent = "Start the battle";
    form.removeAttribute("aria-busy");
  });
})();
