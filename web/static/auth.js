// Passkeys in the console: WebAuthn ceremonies with @simplewebauthn/browser (global
// SimpleWebAuthnBrowser, vendored from npm), which turns the backend's JSON options into
// navigator.credentials.create()/get() calls and the authenticator's answer back into JSON.
(function () {
  "use strict";

  function lib() { return window.SimpleWebAuthnBrowser; }

  function csrf() {
    var meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.content : "";
  }

  function say(el, message, ok) {
    if (!el) { return; }
    el.textContent = message;
    el.className = ok ? "notice" : "notice error";
    el.hidden = !message;
  }

  async function post(url, body) {
    var response = await fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "Accept": "application/json", "X-CSRF-Token": csrf() },
      body: JSON.stringify(body || {})
    });
    var data;
    try { data = await response.json(); } catch (e) { data = {}; }
    if (!response.ok) {
      if (response.status === 401 && data.redirect) { window.location.assign(data.redirect); }
      var error = new Error(data.error || ("The console answered " + response.status + "."));
      error.stepUp = Boolean(data.step_up);
      throw error;
    }
    return data;
  }

  function explain(error) {
    if (error && error.name === "NotAllowedError") { return "The passkey request was cancelled or timed out."; }
    if (error && error.name === "InvalidStateError") { return "This authenticator holds a passkey for this account already."; }
    return (error && error.message) || "The passkey did not work.";
  }

  // Sign in (passwordless), second factor of a pending login, or step-up of a session.
  async function assert(button) {
    var mode = button.dataset.passkey;
    var status = document.getElementById(button.dataset.status || "passkey-status");
    var base = mode === "step-up" ? "/account/verify/passkey" : "/login/passkey";
    var tenant = document.getElementById("tenant");
    var body = {
      second_factor: mode === "second-factor",
      next: button.dataset.next || "/chat",
      tenant: tenant ? tenant.value : ""
    };
    button.disabled = true;
    say(status, "Waiting for your passkey…", true);
    try {
      var begun = await post(base + "/begin", body);
      var credential = await lib().startAuthentication({ optionsJSON: begun.options });
      var done = await post(base + "/finish", {
        ceremony_id: begun.ceremony_id, credential: credential, second_factor: body.second_factor, next: body.next
      });
      say(status, "Signed in.", true);
      window.location.assign(done.redirect);
    } catch (error) {
      say(status, explain(error), false);
      button.disabled = false;
    }
  }

  async function register(form) {
    var status = document.getElementById("passkey-status");
    var button = form.querySelector("button[type=submit]");
    var name = (form.elements.name.value || "passkey").trim();
    button.disabled = true;
    say(status, "Follow your browser's prompt to create the passkey…", true);
    try {
      var begun = await post("/account/passkeys/begin", { name: name });
      var credential = await lib().startRegistration({ optionsJSON: begun.options });
      var done = await post("/account/passkeys/finish", { ceremony_id: begun.ceremony_id, credential: credential, name: name });
      say(status, "Passkey registered.", true);
      window.location.assign(done.redirect);
    } catch (error) {
      say(status, explain(error), false);
      if (error.stepUp) {
        var stepUp = document.getElementById("step-up");
        if (stepUp) { stepUp.classList.add("attention"); stepUp.scrollIntoView(); }
      }
      button.disabled = false;
    }
  }

  document.addEventListener("click", function (event) {
    var button = event.target.closest ? event.target.closest("button[data-passkey]") : null;
    if (button) {
      event.preventDefault();
      assert(button);
    }
  });

  document.addEventListener("submit", function (event) {
    if (event.target && event.target.id === "passkey-register") {
      event.preventDefault();
      register(event.target);
    }
  });

  document.addEventListener("DOMContentLoaded", function () {
    if (lib() && lib().browserSupportsWebAuthn()) { return; }
    document.querySelectorAll("button[data-passkey], #passkey-register button").forEach(function (el) {
      el.disabled = true;
      el.title = "This browser does not support passkeys.";
    });
  });
})();
