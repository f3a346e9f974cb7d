// scunext serve: the page's logic. Plain JS, no dependencies; talks to /api/models and /api/segment.
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  const blobUrls = [];
  let maxBytes = 10 * 1024 * 1024;

  function showError(message) {
    const box = $("error");
    box.textContent = message;
    box.hidden = !message;
  }

  function setBusy(busy, text) {
    $("segment").disabled = busy || !$("model").options.length;
    $("status").textContent = text || "";
  }

  function forgetBlobs() {
    while (blobUrls.length) URL.revokeObjectURL(blobUrls.pop());
  }

  function pngUrl(base64) {
    const bytes = Uint8Array.from(atob(base64), (c) => c.charCodeAt(0));
    const url = URL.createObjectURL(new Blob([bytes], { type: "image/png" }));
    blobUrls.push(url);
    return url;
  }

  async function readJson(response) {
    try {
      return await response.json();
    } catch (err) {
      return { error: "the server sent an unexpected answer (HTTP " + response.status + ")" };
    }
  }

  async function loadModels() {
    try {
      const response = await fetch("/api/models", { cache: "no-store" });
      const body = await readJson(response);
      if (!response.ok) throw new Error(body.error || "HTTP " + response.status);
      const select = $("model");
      for (const m of body.models) {
        const option = document.createElement("option");
        option.value = m.id;
        option.textContent = m.label;
        select.appendChild(option);
      }
      maxBytes = Math.floor(body.max_upload_mb * 1024 * 1024);
      $("limits").textContent = "PNG, JPEG or DICOM, at most " + body.max_upload_mb + " MB and " +
        body.max_megapixels + " megapixels.";
      setBusy(false);
    } catch (err) {
      showError("Could not load the list of models: " + err.message);
    }
  }

  async function segment(event) {
    event.preventDefault();
    showError("");
    const file = $("file").files[0];
    if (!file) {
      showError("Choose an image file first.");
      return;
    }
    if (file.size > maxBytes) {
      showError("The file is " + (file.size / 1048576).toFixed(1) + " MB, above the " +
        (maxBytes / 1048576).toFixed(0) + " MB limit.");
      return;
    }
    const form = new FormData();
    form.append("image", file, "upload");
    form.append("model", $("model").value);
    $("result").hidden = true;
    setBusy(true, "Segmenting…");
    try {
      let response;
      try {
        response = await fetch("/api/segment", { method: "POST", body: form });
      } catch (err) {
        throw new Error("the server did not answer (is it still running?)");
      }
      const body = await readJson(response);
      if (!response.ok) throw new Error(body.error || "HTTP " + response.status);  // 503 says when to retry
      showResult(body, file);
    } catch (err) {
      showError("Could not segment this file: " + err.message);
    } finally {
      setBusy(false);
    }
  }

  function showResult(body, file) {
    forgetBlobs();
    // the browser can show a PNG or JPEG as uploaded; a DICOM it cannot: only the overlay (drawn by the server)
    const viewable = /^image\/(png|jpeg)$/.test(file.type);
    $("original").closest("figure").hidden = !viewable;
    $("original").removeAttribute("src");
    if (viewable) {
      const original = URL.createObjectURL(file);
      blobUrls.push(original);
      $("original").src = original;
    }
    $("overlay").src = pngUrl(body.overlay_png);
    $("area-px").textContent = body.area_px.toLocaleString("en-US");
    $("area-pct").textContent = body.area_percent.toFixed(2);
    $("img-size").textContent = body.width + " × " + body.height + " px";
    // area in mm² only where the image records its pixel spacing (e.g. DICOM); PNG and JPEG do not
    const hasMm2 = typeof body.area_mm2 === "number";
    $("area-mm2").textContent = hasMm2 ? body.area_mm2.toLocaleString("en-US", { maximumFractionDigits: 1 }) : "";
    $("area-mm2-box").hidden = !hasMm2;
    const reduced = body.computed_width !== body.width || body.computed_height !== body.height;
    $("computed-size").textContent = body.computed_width + " × " + body.computed_height + " px";
    $("computed-box").hidden = !reduced;
    // the model's own quality score and review flag (docs/robustness.md): a person should check a flagged mask
    $("quality").textContent = typeof body.quality_score === "number" ? body.quality_score.toFixed(2) : "";
    $("review").hidden = !body.review;
    $("review-reason").textContent = body.review_reason || "";
    $("ms").textContent = body.inference_ms.toFixed(1);
    $("used-model").textContent = body.label;
    const link = $("download");
    link.href = pngUrl(body.mask_png);
    const stem = (file.name || "image").replace(/\.[^.]*$/, "").replace(/[^A-Za-z0-9._-]+/g, "_").slice(0, 80);
    link.download = (stem || "image") + "_mask.png";
    $("result").hidden = false;
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("form").addEventListener("submit", segment);
    $("file").addEventListener("change", () => showError(""));
    loadModels();
  });
})();
