"""The login, consent and error pages: plain server-rendered HTML, no JavaScript, English and
Chinese. Every value is escaped; the forms carry the authorization request as hidden fields."""

from __future__ import annotations

from html import escape

TEXT = {
    "en": {
        "title": "SonoBridge sign-in", "username": "User name", "password": "Password",
        "otp_label": "Authenticator code (6 digits)", "sign_in": "Sign in",
        "consent_title": "Allow access?", "wants": "wants to access, on your behalf:",
        "patient": "Patient", "choose_patient": "Choose the patient for this app",
        "patient_id": "or type a patient id", "allow": "Allow", "deny": "Deny",
        "signed_in_as": "Signed in as", "error": "The request cannot be completed",
        "credentials": "The user name or password is not right.",
        "wait": "Too many failed attempts: wait a moment, then try again.",
        "stale": "The sign-in form had expired: please sign in again.",
        "sign_out": "Sign out",
        "otp": "The authenticator code is not right (or was already used).",
        "otp-required": "Enter the code from your authenticator app.",
        "otp-setup": "Your role needs a second factor: ask the security administrator to "
                     "enrol your authenticator app.",
        "disabled": "This account is disabled.", "no-patient": "Choose a patient.",
        "session": "Your session has ended; sign in again.",
        "language": "中文", "other": "zh",
    },
    "zh": {
        "title": "SonoBridge 登录", "username": "用户名", "password": "密码",
        "otp_label": "动态验证码（6位）", "sign_in": "登录",
        "consent_title": "是否授权？", "wants": "请求以您的身份访问：",
        "patient": "患者", "choose_patient": "请选择本应用使用的患者",
        "patient_id": "或输入患者 ID", "allow": "允许", "deny": "拒绝",
        "signed_in_as": "当前用户", "error": "无法完成该请求",
        "credentials": "用户名或密码不正确。",
        "wait": "失败次数过多，请稍候再试。",
        "stale": "登录页面已过期，请重新登录。",
        "sign_out": "退出登录",
        "otp": "动态验证码不正确（或已被使用）。",
        "otp-required": "请输入身份验证器中的动态验证码。",
        "otp-setup": "您的角色需要双因素认证，请联系安全管理员绑定身份验证器。",
        "disabled": "该账户已停用。", "no-patient": "请选择患者。",
        "session": "会话已结束，请重新登录。",
        "language": "English", "other": "en",
    },
}

_STYLE = ("body{font-family:system-ui,sans-serif;max-width:32rem;margin:3rem auto;padding:0 1rem;"
          "color:#1d2a35}label{display:block;margin:.8rem 0 .2rem}input[type=text],"
          "input[type=password]{width:100%;padding:.5rem;font-size:1rem}button{margin:1rem .5rem"
          " 0 0;padding:.5rem 1.2rem;font-size:1rem}.error{color:#a40000}li{margin:.2rem 0}"
          "code{background:#eef;padding:0 .2rem}")


def language(ui_locales: str | None, accept_language: str | None) -> str:
    for text in (ui_locales or "", accept_language or ""):
        for part in text.replace(",", " ").split():
            tag = part.split(";")[0].strip().lower()
            if tag.startswith("zh"):
                return "zh"
            if tag.startswith("en"):
                return "en"
    return "en"


def _page(lang: str, title: str, body: str) -> str:
    return (f'<!doctype html><html lang="{"zh-CN" if lang == "zh" else "en"}"><head>'
            f'<meta charset="utf-8"><meta name="viewport" content="width=device-width">'
            f"<title>{escape(title)}</title><style>{_STYLE}</style></head><body>{body}"
            "</body></html>")


def _hidden(params: list[tuple[str, str]]) -> str:
    return "".join(f'<input type="hidden" name="{escape(k)}" value="{escape(v)}">'
                   for k, v in params)


def login_page(lang: str, action: str, params: list[tuple[str, str]], error: str | None,
               username: str = "", csrf: str = "") -> str:
    t = TEXT[lang]
    message = f'<p class="error" role="alert">{escape(t[error])}</p>' if error else ""
    body = (f"<h1>{escape(t['title'])}</h1>{message}"
            f'<form method="post" action="{escape(action)}">{_hidden(params)}'
            '<input type="hidden" name="_action" value="login">'
            f'<input type="hidden" name="_login" value="{escape(csrf)}">'
            f'<label for="username">{escape(t["username"])}</label>'
            f'<input type="text" id="username" name="username" value="{escape(username)}" '
            'autocomplete="username" required maxlength="64">'
            f'<label for="password">{escape(t["password"])}</label>'
            '<input type="password" id="password" name="password" '
            'autocomplete="current-password" required maxlength="256">'
            f'<label for="otp">{escape(t["otp_label"])}</label>'
            '<input type="text" id="otp" name="otp" inputmode="numeric" '
            'autocomplete="one-time-code" maxlength="8">'
            f'<button type="submit">{escape(t["sign_in"])}</button></form>'
            f'<p><a href="?{escape(_query(params, lang=t["other"]))}">{t["language"]}</a></p>')
    return _page(lang, t["title"], body)


def consent_page(lang: str, action: str, params: list[tuple[str, str]], csrf: str,
                 client_name: str, username: str, scopes: list[str],
                 patients: list[tuple[str, str]] | None, error: str | None = None) -> str:
    t = TEXT[lang]
    message = f'<p class="error" role="alert">{escape(t[error])}</p>' if error else ""
    picker = ""
    if patients is not None:
        options = "".join(f'<label><input type="radio" name="patient" value="{escape(pid)}"> '
                          f"{escape(label)} <code>{escape(pid)}</code></label>"
                          for pid, label in patients)
        picker = (f"<fieldset><legend>{escape(t['choose_patient'])}</legend>{options}"
                  f'<label for="patient_id">{escape(t["patient_id"])}</label>'
                  '<input type="text" id="patient_id" name="patient_id" maxlength="64">'
                  "</fieldset>")
    items = "".join(f"<li><code>{escape(s)}</code></li>" for s in scopes)
    body = (f"<h1>{escape(t['consent_title'])}</h1>{message}"
            f"<p><strong>{escape(client_name)}</strong> {escape(t['wants'])}</p><ul>{items}</ul>"
            f'<form method="post" action="{escape(action)}">{_hidden(params)}'
            f'<input type="hidden" name="_csrf" value="{escape(csrf)}">{picker}'
            f'<button type="submit" name="_action" value="allow">{escape(t["allow"])}</button>'
            f'<button type="submit" name="_action" value="deny">{escape(t["deny"])}</button>'
            f"</form><p>{escape(t['signed_in_as'])} {escape(username)}</p>")
    return _page(lang, t["consent_title"], body)


def logout_page(lang: str) -> str:
    """Signing out is a POST (a link or an image elsewhere cannot sign anyone out)."""
    t = TEXT[lang]
    body = (f"<h1>{escape(t['sign_out'])}</h1>"
            '<form method="post" action="/auth/logout">'
            f'<button type="submit">{escape(t["sign_out"])}</button></form>')
    return _page(lang, t["sign_out"], body)


def error_page(lang: str, error: str, description: str) -> str:
    t = TEXT[lang]
    body = (f"<h1>{escape(t['error'])}</h1><p><code>{escape(error)}</code></p>"
            f"<p>{escape(description)}</p>")
    return _page(lang, t["error"], body)


def _query(params: list[tuple[str, str]], **extra: str) -> str:
    from urllib.parse import urlencode

    kept = [(k, v) for k, v in params if k not in extra]
    return urlencode(kept + list(extra.items()))
