"""Writes the nginx config of a static site, honouring static.json.

    python3 nginx_conf.py APP_DIR OUT_FILE

static.json has the format of Heroku's static buildpack: root, clean_urls,
routes, redirects, headers, error_page, https_only. Everything in it is
treated as hostile: paths and globs are limited to characters that cannot
leave a quoted nginx string or a regex, header values are escaped, `$`
never reaches nginx as a variable, and root must stay inside the app.
Prints notes (one a line) on stdout; exits 1 with one message on stderr
when static.json cannot be honoured safely. The output keeps __PORT__ and
__RUN__ for the start script to fill in.
"""
import json
import os
import re
import sys

MAX_BYTES = 256 * 1024
# Request paths and globs: no quote, backslash, `$`, braces, `;`, spaces,
# control characters; `*` is the glob.
PATH_RE = re.compile(r"/[A-Za-z0-9._~!@+,=:%*/-]*")
# Files inside the root.
FILE_RE = re.compile(r"/?[A-Za-z0-9._~@+,=:%/-]+")
# Redirect targets: a path or an http(s) URL, with a query and fragment.
URL_RE = re.compile(r"(https?://[A-Za-z0-9.-]+(:[0-9]+)?)?/[A-Za-z0-9._~!@+,=:%/?&#;'()\[\]*-]*")
HEADER_NAME_RE = re.compile(r"[A-Za-z0-9_-]+")
REDIRECT_CODES = {301, 302, 303, 307, 308}
KNOWN = {"root", "clean_urls", "routes", "redirects", "headers", "error_page", "https_only"}


class Refused(Exception):
    pass


def check_path(value, what):
    if not isinstance(value, str) or not PATH_RE.fullmatch(value) or len(value) > 1024:
        raise Refused(
            f"{what} {json.dumps(value)} is not a path this buildpack accepts: it must start "
            f"with / and hold only letters, digits and . _ ~ ! @ + , = : % * / -")
    return value


def glob_regex(glob):
    """`**` matches across path segments, `*` within one; the rest is literal."""
    out = []
    i = 0
    while i < len(glob):
        if glob.startswith("**", i):
            out.append(".*")
            i += 2
        elif glob[i] == "*":
            out.append("[^/]*")
            i += 1
        else:
            c = glob[i]
            out.append("\\" + c if c in ".+" else c)
            i += 1
    return "^" + "".join(out) + "$"


def quote(value):
    """A double-quoted nginx string holding `value` literally."""
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        raise Refused(f"the value {json.dumps(value)} holds a control character (a newline?)")
    value = value.replace("\\", "\\\\").replace('"', '\\"').replace("$", "${slipway_dollar}")
    return '"' + value + '"'


def inside(base, path):
    base = os.path.realpath(base)
    path = os.path.realpath(path)
    return path == base or path.startswith(base + os.sep)


def main():
    app, out_file = sys.argv[1], sys.argv[2]
    app_real = os.path.realpath(app)
    notes = []
    spec = {}
    spec_file = os.path.join(app, "static.json")
    if os.path.isfile(spec_file):
        if os.path.getsize(spec_file) > MAX_BYTES:
            raise Refused(f"static.json is larger than {MAX_BYTES // 1024} KiB")
        try:
            with open(spec_file, encoding="utf-8") as f:
                spec = json.load(f)
        except (ValueError, UnicodeDecodeError) as e:
            raise Refused(f"static.json is not valid JSON ({e})")
        if not isinstance(spec, dict):
            raise Refused("static.json must hold a JSON object")
        for key in sorted(set(spec) - KNOWN):
            notes.append(f"static.json: '{key}' is not supported here and is ignored")

    # Document root.
    if "root" in spec:
        root = spec["root"]
        if not isinstance(root, str) or not root.strip():
            raise Refused("static.json: root must be a directory of the app, such as \"public/\"")
        if root.startswith("/"):
            # Heroku's form is relative; /app/... is accepted when inside the app.
            rel = os.path.relpath(root, app) if root.startswith(app_real + "/") or root == app_real else None
            if rel is None:
                raise Refused(f"static.json: root {json.dumps(root)} is outside the app; "
                              f"give a directory of the app, such as \"public/\"")
            root = rel
        full = os.path.normpath(os.path.join(app, root))
        if not inside(app, full):
            raise Refused(f"static.json: root {json.dumps(spec['root'])} leads outside the app")
        if not os.path.isdir(full):
            raise Refused(f"static.json: root {json.dumps(spec['root'])} is not a directory of the app")
        doc_root = os.path.realpath(full)
    elif spec and os.path.isdir(os.path.join(app, "public_html")):
        doc_root = os.path.realpath(os.path.join(app, "public_html"))
    elif os.path.isfile(os.path.join(app, "public", "index.html")):
        doc_root = os.path.realpath(os.path.join(app, "public"))
    else:
        doc_root = app_real
    if not re.fullmatch(r"/[A-Za-z0-9._@+,=:%/-]*", doc_root):
        raise Refused(f"the document root {doc_root} has characters nginx config cannot hold")

    clean_urls = spec.get("clean_urls", False)
    if not isinstance(clean_urls, bool):
        raise Refused("static.json: clean_urls must be true or false")
    if "https_only" in spec:
        notes.append("static.json: https_only is ignored (the router serves plain HTTP here)")

    def target_file(value, what):
        if not isinstance(value, str) or not FILE_RE.fullmatch(value) or len(value) > 1024:
            raise Refused(f"static.json: {what} {json.dumps(value)} must name a file of the site "
                          f"(letters, digits and . _ ~ @ + , = : % / -)")
        uri = "/" + value.lstrip("/")
        if not inside(doc_root, os.path.normpath(doc_root + uri)):
            raise Refused(f"static.json: {what} {json.dumps(value)} leads outside the document root")
        return uri

    error_page = None
    if "error_page" in spec:
        error_page = target_file(spec["error_page"], "error_page")

    routes = spec.get("routes", {})
    if not isinstance(routes, dict):
        raise Refused("static.json: routes must map path globs to files, e.g. {\"/**\": \"index.html\"}")
    route_list = [(check_path(k, "static.json: the route"), target_file(v, f"the file of route {k}"))
                  for k, v in routes.items()]

    redirects = spec.get("redirects", {})
    if not isinstance(redirects, dict):
        raise Refused("static.json: redirects must map paths to {\"url\": ..., \"status\": ...}")
    redirect_list = []
    for k, v in redirects.items():
        check_path(k, "static.json: the redirect")
        if isinstance(v, str):
            v = {"url": v}
        if not isinstance(v, dict):
            raise Refused(f"static.json: redirect {k} must be {{\"url\": ..., \"status\": ...}}")
        url = v.get("url")
        if not isinstance(url, str) or not URL_RE.fullmatch(url) or len(url) > 2048:
            raise Refused(f"static.json: redirect {k} has url {json.dumps(url)}; give a path "
                          f"(/new) or an http(s) URL without spaces, quotes, braces or $")
        status = v.get("status", 301)
        if status not in REDIRECT_CODES or isinstance(status, bool):
            raise Refused(f"static.json: redirect {k} has status {json.dumps(status)}; "
                          f"use one of {sorted(REDIRECT_CODES)}")
        redirect_list.append((k, url, status))

    headers = spec.get("headers", {})
    if not isinstance(headers, dict):
        raise Refused("static.json: headers must map path globs to {\"Header-Name\": \"value\"}")
    by_name = {}  # lower-case name -> (name, [(glob, value)])
    for glob, values in headers.items():
        check_path(glob, "static.json: the headers path")
        if not isinstance(values, dict):
            raise Refused(f"static.json: headers for {glob} must be an object of header names to values")
        for name, value in values.items():
            if not isinstance(name, str) or not HEADER_NAME_RE.fullmatch(name) or len(name) > 128:
                raise Refused(f"static.json: {json.dumps(name)} is not a header name "
                              f"(letters, digits, - and _)")
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                value = str(value)
            if not isinstance(value, str) or len(value) > 8192:
                raise Refused(f"static.json: header {name} for {glob} must be a string")
            if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
                raise Refused(f"static.json: header {name} for {glob} holds a control character "
                              f"(a newline?); header values are one line")
            by_name.setdefault(name.lower(), (name, []))[1].append((glob, value))

    # ---- the config ----
    L = []
    w = L.append
    w("worker_processes 1;")
    w("daemon off;")
    w("pid __RUN__/nginx.pid;")
    w("error_log stderr;")
    w("events { worker_connections 512; }")
    w("http {")
    w("    include /etc/nginx/mime.types;")
    w("    default_type application/octet-stream;")
    w("    # The router logs every request; nginx could not reopen a container's")
    w("    # stdout (a pipe owned by root) as the app user anyway.")
    w("    access_log off;")
    for t in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        w(f"    {t}_temp_path __RUN__/{t.replace('client_', '')};")
    w("    sendfile on;")
    w("    server_tokens off;")
    w("    # A literal $ for values from static.json (geo values are never variables).")
    w('    geo $slipway_dollar { default "$"; }')
    if by_name:
        w("    # Header rules match the path the client asked for (not a rewritten one).")
        w('    map $request_uri $slipway_path { "~^(?<slipway_p>[^?]*)" $slipway_p; default $uri; }')
    for i, (lname, (name, rules)) in enumerate(sorted(by_name.items())):
        w(f"    # {name}")
        w(f"    map $slipway_path $slipway_header_{i} {{")
        w('        default "";')
        for glob, value in rules:
            # Paths and globs hold no quote, backslash or $ (check_path).
            key = glob if "*" not in glob else "~" + glob_regex(glob)
            w(f'        "{key}" {quote(value)};')
        w("    }")
    w("    server {")
    w("        listen __PORT__;")
    w(f"        root {quote(doc_root)};")
    w("        index index.html;")
    w("        # Relative Location headers: the router, not nginx, knows the public address.")
    w("        absolute_redirect off;")
    w("        # Symlinks out of the site (to /etc/passwd, say) are not followed.")
    w("        disable_symlinks if_not_owner from=$document_root;")
    for i, (lname, (name, rules)) in enumerate(sorted(by_name.items())):
        w(f"        add_header {name} $slipway_header_{i};")
    if error_page:
        w(f"        error_page 404 {quote(error_page)};")
    exact = [(k, u, s) for k, u, s in redirect_list if "*" not in k]
    globbed = [(k, u, s) for k, u, s in redirect_list if "*" in k]
    for k, url, status in exact:
        w(f"        location = {quote(k)} {{ return {status} {quote(url)}; }}")
    w("        # Never serve dotfiles (.profile.d, .slipway, .env, .git, ...).")
    w(r"        location ~ /\. { return 404; }")
    for k, url, status in globbed:
        w(f"        location ~ \"{glob_regex(k)}\" {{ return {status} {quote(url)}; }}")
    tries = "$uri $uri.html $uri/" if clean_urls else "$uri $uri/"
    for k, target in route_list:
        w(f"        location ~ \"{glob_regex(k)}\" {{ try_files {tries} {quote(target)}; }}")
    w(f"        location / {{ try_files {tries} =404; }}")
    w("    }")
    w("}")
    with open(out_file, "w", encoding="utf-8") as f:
        f.write("\n".join(L) + "\n")
    print(f"root\t{doc_root}")
    for n in notes:
        print(f"note\t{n}")


if __name__ == "__main__":
    try:
        main()
    except Refused as e:
        print(str(e), file=sys.stderr)
        sys.exit(1)
