// The login form: send the token as JSON (never in a URL), then go to the page.
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  const form = document.getElementById("login-form");
  const input = document.getElementById("token");
  const error = document.getElementById("login-error");
  const button = document.getElementById("login-button");

  function showError(text) {
    error.textContent = text;
    error.hidden = false;
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const token = input.value.trim();
    if (!token) {
      showError("Paste the token first.");
      return;
    }
    button.disabled = true;
    error.hidden = true;
    try {
      const resp = await fetch("/ui/login", {
        method: "POST",
        credentials: "same-origin",
        headers: {"Content-Type": "application/json", "Accept": "application/json"},
        body: JSON.stringify({token}),
      });
      if (resp.ok) {
        input.value = "";
        window.location.replace("/ui/");
        return;
      }
      if (resp.status === 401) {
        showError("That is not this node's token.");
      } else if (resp.status === 429) {
        showError("Too many attempts; wait a moment and try again.");
      } else {
        let detail = "";
        try { detail = (await resp.json()).detail || ""; } catch (_) { /* not JSON */ }
        showError(`The node answered ${resp.status}. ${detail}`.trim());
      }
    } catch (_) {
      showError("Cannot reach the node. Is it running?");
    } finally {
      button.disabled = false;
    }
  });
});
