//! `sangha form`: the signup form as an HTML snippet to paste into another site's page.
//!
//! The snippet is a plain `<form>` that posts to `{base_url}/subscribe` and works with no
//! script (Sangha answers with its own page), followed by a small inline script that fills in
//! the time zone and, where `fetch` exists, sends the same fields with
//! `Accept: application/json` and shows the answer in the form's `role="status"` element. That
//! request is a CORS "simple" one (a form body, the `Accept` header, no cookie), so the browser
//! sends no preflight; it lets the page read the answer only when the page's origin is in
//! `server.cors_origins`. Everything taken from the configuration is HTML-escaped.

use std::io::Write;

use handlebars::html_escape;

use crate::config::{Config, OfferingConfig};
use crate::domain::Slug;

/// How the snippet is laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FormStyle {
    /// One field under another, with no styles of its own (the site's CSS applies).
    Plain,
    /// A compact line (email, offerings, button) with a small `<style>` of its own.
    Inline,
}

/// Prints the snippet for `offerings` (default: every public offering) to `out`.
pub fn print(
    config: &Config,
    offerings: &[Slug],
    style: FormStyle,
    out: &mut (dyn Write + Send),
) -> anyhow::Result<()> {
    let chosen = choose(config, offerings)?;
    write!(out, "{}", snippet(config, &chosen, style))?;
    if !config
        .server
        .cors_origins
        .iter()
        .any(|o| !o.trim().is_empty())
    {
        // On stderr, so `sangha form > snippet.html` keeps the snippet alone.
        eprintln!(
            "note: server.cors_origins is empty, so the script cannot read Sangha's answer on \
             another site; add the site's origin (e.g. \"https://www.example.org\") to show \
             it in place. Without it the form still works, by leaving for Sangha's page."
        );
    }
    Ok(())
}

/// The offerings named by `--offering` (each public), or every public one.
fn choose<'a>(config: &'a Config, slugs: &[Slug]) -> anyhow::Result<Vec<&'a OfferingConfig>> {
    let public: Vec<&OfferingConfig> = config.offerings.iter().filter(|o| o.public).collect();
    if slugs.is_empty() {
        if public.is_empty() {
            anyhow::bail!(
                "there is no public offering to sign up for: add one to [[offerings]] in the \
                 config"
            );
        }
        return Ok(public);
    }
    let mut chosen: Vec<&OfferingConfig> = Vec::new();
    for slug in slugs {
        let Some(offering) = config.offerings.iter().find(|o| &o.slug == slug) else {
            anyhow::bail!("--offering: there is no offering `{slug}`");
        };
        if !offering.public {
            anyhow::bail!(
                "--offering: `{slug}` is not public (public = false), and the signup form \
                 only accepts public offerings"
            );
        }
        if !chosen.iter().any(|o| o.slug == offering.slug) {
            chosen.push(offering);
        }
    }
    Ok(chosen)
}

/// The snippet's HTML.
fn snippet(config: &Config, offerings: &[&OfferingConfig], style: FormStyle) -> String {
    let e = |text: &str| html_escape(text);
    let action = format!("{}/subscribe", config.base_url());
    let class = match style {
        FormStyle::Plain => "sangha-form",
        FormStyle::Inline => "sangha-form sangha-form-inline",
    };
    let mut html = String::new();
    html.push_str(&format!(
        "<!-- Signup form for {site}, made by `sangha form`. It posts to Sangha and works \
         without its script. -->\n",
        site = e(&config.site.name).replace("--", "- -"),
    ));
    if style == FormStyle::Inline {
        html.push_str(INLINE_STYLE);
    }
    html.push_str(&format!(
        "<form class=\"{class}\" method=\"post\" action=\"{action}\" accept-charset=\"utf-8\" \
         data-sangha-form>\n",
        action = e(&action),
    ));
    html.push_str(
        "  <label class=\"sangha-email\">Email address \
         <input type=\"email\" name=\"email\" required autocomplete=\"email\"></label>\n",
    );
    if style == FormStyle::Plain {
        html.push_str(
            "  <label class=\"sangha-name\">Your name (optional) \
             <input type=\"text\" name=\"name\" autocomplete=\"name\"></label>\n",
        );
    }
    if let [only] = offerings {
        html.push_str(&format!(
            "  <input type=\"hidden\" name=\"offerings\" value=\"{}\">\n",
            e(only.slug.as_str())
        ));
    } else {
        html.push_str("  <fieldset class=\"sangha-offerings\">\n");
        html.push_str("    <legend>What would you like to receive?</legend>\n");
        for offering in offerings {
            html.push_str(&format!(
                "    <label><input type=\"checkbox\" name=\"offerings\" value=\"{slug}\" \
                 checked> {name}</label>\n",
                slug = e(offering.slug.as_str()),
                name = e(&offering.name),
            ));
        }
        html.push_str("  </fieldset>\n");
    }
    html.push_str("  <input type=\"hidden\" name=\"timezone\" value=\"\">\n");
    // Hidden from people by CSS (not `type=hidden`, which bots skip); a bot that fills it is
    // answered as if it had signed up.
    html.push_str(&format!(
        "  <div style=\"position:absolute;left:-10000px;width:1px;height:1px;overflow:hidden\" \
         aria-hidden=\"true\"><label>Leave this empty <input type=\"text\" name=\"{}\" \
         value=\"\" tabindex=\"-1\" autocomplete=\"off\"></label></div>\n",
        e(&config.signup.honeypot_field)
    ));
    html.push_str(&format!(
        "  <small class=\"sangha-consent\">{}</small>\n",
        e(&config.signup.consent_text)
    ));
    html.push_str("  <button type=\"submit\">Sign up</button>\n");
    html.push_str("  <p class=\"sangha-answer\" role=\"status\" aria-live=\"polite\"></p>\n");
    html.push_str("</form>\n");
    html.push_str(&SCRIPT.replace("SIGNUP_PAGE", &js_string(&action)));
    html
}

/// A JSON string literal safe inside an inline `<script>` (no `</script>` can end it early).
fn js_string(text: &str) -> String {
    serde_json::Value::from(text)
        .to_string()
        .replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026")
}

/// The compact layout of `--style inline`.
const INLINE_STYLE: &str = "<style>\
.sangha-form-inline{display:flex;flex-wrap:wrap;align-items:center;gap:.5em}\
.sangha-form-inline fieldset{display:contents}\
.sangha-form-inline legend{display:none}\
.sangha-form-inline .sangha-consent{flex-basis:100%;order:9}\
.sangha-form-inline .sangha-answer{flex-basis:100%;margin:0;order:10}\
</style>\n";

/// Fills in the time zone; where `fetch` exists, sends the form with it and shows the answer
/// in place. No cookie goes with it (`credentials: "omit"`).
const SCRIPT: &str = r#"<script>
(function () {
  var signupPage = SIGNUP_PAGE;
  var forms = document.querySelectorAll("form[data-sangha-form]");
  Array.prototype.forEach.call(forms, function (form) {
    if (form.getAttribute("data-sangha-ready")) return;
    form.setAttribute("data-sangha-ready", "1");
    var zone = form.querySelector('input[name="timezone"]');
    try {
      if (zone && !zone.value) zone.value = Intl.DateTimeFormat().resolvedOptions().timeZone || "";
    } catch (e) {}
    if (!window.fetch || !window.URLSearchParams || !window.FormData) return;
    var status = form.querySelector('[role="status"]');
    var button = form.querySelector('button[type="submit"]');
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      button.disabled = true;
      status.textContent = "Sending\u2026";
      fetch(form.action, {
        method: "POST",
        body: new URLSearchParams(new FormData(form)),
        headers: { "Accept": "application/json" },
        credentials: "omit",
        mode: "cors"
      }).then(function (response) {
        return response.json().then(function (answer) {
          return { ok: response.ok, answer: answer };
        });
      }).then(function (reply) {
        var answer = reply.answer || {};
        if (reply.ok) {
          status.textContent = answer.message || "Please check your inbox.";
          form.setAttribute("data-sangha-done", "1");
          return;
        }
        var text = answer.error || "The signup did not go through.";
        var fields = answer.fields || {};
        Object.keys(fields).forEach(function (name) { text += " " + name + ": " + fields[name]; });
        status.textContent = text;
      }).catch(function () {
        status.textContent = "The answer could not be read on this page. Please check your " +
          "inbox, or sign up at " + signupPage + ".";
        form.setAttribute("data-sangha-failed", "1");
      }).then(function () { button.disabled = false; });
    });
  });
})();
</script>
"#;

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        let mut config = Config::default();
        config.server.base_url = "https://news.example.org/".into();
        config.site.name = "Tara's <Sangha> -->".into();
        config.signup.consent_text = "I agree & \"consent\"".into();
        let mut offering: OfferingConfig = toml::from_str(
            "slug = \"weekly\"\nname = \"Weekly <b>talks</b>\"\nkind = \"newsletter\"",
        )
        .expect("an offering");
        config.offerings = vec![offering.clone()];
        offering.slug = "hidden".parse().expect("a slug");
        offering.public = false;
        config.offerings.push(offering);
        config
    }

    #[test]
    fn config_text_is_escaped_and_the_form_posts_to_base_url() {
        let config = config();
        let html = snippet(&config, &choose(&config, &[]).unwrap(), FormStyle::Plain);
        assert!(html.contains(r#"action="https://news.example.org/subscribe""#));
        assert!(html.contains("I agree &amp; &quot;consent&quot;"));
        assert!(
            html.contains("Tara&#x27;s &lt;Sangha&gt; - -&gt;"),
            "{html}"
        );
        assert!(!html.contains("<Sangha>") && !html.contains("<b>"));
        assert!(html.contains(r#"name="website""#));
        assert!(html.contains(r#"name="timezone""#));
        assert!(!html.contains("<style>"));
        assert!(!html.contains("credentials: \"include\""));
        // One offering: carried by a hidden field, no checkbox to untick.
        assert!(html.contains(r#"<input type="hidden" name="offerings" value="weekly">"#));
    }

    #[test]
    fn offerings_named_must_exist_and_be_public() {
        let config = config();
        let slug = |s: &str| s.parse::<Slug>().unwrap();
        let err = choose(&config, &[slug("nope")]).unwrap_err().to_string();
        assert!(err.contains("no offering `nope`"), "{err}");
        let err = choose(&config, &[slug("hidden")]).unwrap_err().to_string();
        assert!(err.contains("not public"), "{err}");
    }

    #[test]
    fn the_script_cannot_be_closed_by_the_base_url() {
        assert_eq!(js_string("a</script>"), r#""a\u003c/script\u003e""#);
    }
}
