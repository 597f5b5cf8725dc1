"""Picks the stack's Python interpreter for an app.

    python3 python_version.py APP_DIR

Reads the version the app asks for (.python-version, runtime.txt, Pipfile.lock
or Pipfile, then pyproject.toml's requires-python) and prints one line:
INTERPRETER<TAB>VERSION<TAB>WHERE<TAB>NOTE. Exits 1 with one message on
stderr when the stack has no Python that matches.
"""
import glob
import json
import os
import re
import subprocess
import sys
import tomllib


def stack_pythons():
    """[(major, minor, micro, path)] of /usr/bin/python3.N, newest first."""
    found = []
    for path in glob.glob("/usr/bin/python3.*"):
        if not re.fullmatch(r"/usr/bin/python3\.\d+", path) or not os.access(path, os.X_OK):
            continue
        try:
            out = subprocess.run(
                [path, "-c", "import sys; print('%d %d %d' % sys.version_info[:3])"],
                capture_output=True, text=True, check=True, timeout=30,
            ).stdout.split()
        except (OSError, subprocess.SubprocessError):
            continue
        found.append((int(out[0]), int(out[1]), int(out[2]), path))
    return sorted(found, reverse=True)


def fmt(v):
    return ".".join(str(x) for x in v if x is not None)


def read_toml(path):
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        return None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        die(f"{os.path.basename(path)} is not valid TOML ({e}); fix it and push again")


def die(message):
    print(message, file=sys.stderr)
    sys.exit(1)


VERSION = re.compile(r"(\d+)(?:\.(\d+))?(?:\.(\d+))?")


def parse_version(text, where):
    m = VERSION.fullmatch(text)
    if not m:
        die(f"{where} asks for Python {text!r}, which is not a version this buildpack reads; "
            f"write a version such as 3.11 there")
    return tuple(int(x) if x is not None else None for x in m.groups())


def requested(app):
    """(version tuple, where) of an explicit request, or None."""
    path = os.path.join(app, ".python-version")
    if os.path.isfile(path):
        with open(path, encoding="utf-8", errors="replace") as f:
            lines = [l.strip() for l in f if l.strip() and not l.strip().startswith("#")]
        if not lines:
            die(".python-version is empty; write a version such as 3.11 in it, or remove it")
        text = re.sub(r"^(?:cpython|python)[-@]?", "", lines[0])
        return parse_version(text, ".python-version"), ".python-version"
    path = os.path.join(app, "runtime.txt")
    if os.path.isfile(path):
        with open(path, encoding="utf-8", errors="replace") as f:
            text = f.read().strip()
        m = re.fullmatch(r"python-(\S+)", text)
        if not m:
            die(f"runtime.txt says {text!r}; it should name a Python version as python-3.11 "
                f"(or move to a .python-version file holding 3.11)")
        return parse_version(m.group(1), "runtime.txt"), "runtime.txt"
    path = os.path.join(app, "Pipfile.lock")
    if os.path.isfile(path):
        try:
            with open(path, encoding="utf-8") as f:
                req = json.load(f).get("_meta", {}).get("requires", {})
        except (ValueError, AttributeError) as e:
            die(f"Pipfile.lock is not valid JSON ({e}); run 'pipenv lock' and commit it")
        for key in ("python_full_version", "python_version"):
            if isinstance(req.get(key), str):
                return parse_version(req[key], f"Pipfile.lock ({key})"), f"Pipfile.lock ({key})"
    pipfile = read_toml(os.path.join(app, "Pipfile"))
    if pipfile:
        req = pipfile.get("requires", {})
        for key in ("python_full_version", "python_version"):
            if isinstance(req.get(key), str):
                return parse_version(req[key], f"Pipfile ({key})"), f"Pipfile ({key})"
    return None


def requires_python(app):
    project = read_toml(os.path.join(app, "pyproject.toml")) or {}
    spec = project.get("project", {}).get("requires-python")
    return spec if isinstance(spec, str) and spec.strip() else None


def main():
    app = sys.argv[1]
    pythons = stack_pythons()
    if not pythons:
        die("this stack has no Python (no /usr/bin/python3.N); build on the 'build' stack")
    have = ", ".join(fmt(p[:2]) for p in pythons)
    have_full = ", ".join(fmt(p[:3]) for p in pythons)
    chosen, where, note = pythons[0], "the stack's default", ""

    req = requested(app)
    if req:
        (major, minor, micro), where = req
        matches = [p for p in pythons if p[0] == major and (minor is None or p[1] == minor)]
        if not matches:
            asked = fmt((major, minor, micro))
            ask = fmt(pythons[0][:2])
            if where == "runtime.txt":
                ask = "python-" + ask
            # slipway's stacks side by side: which one has the Python asked for.
            other = {(3, 11): "slipway-12", (3, 13): "slipway-13"}.get((major, minor))
            elsewhere = (f"or set the config var STACK={other}, whose Python is {fmt((major, minor))}"
                         if other else "or run the app on a stack that has Python "
                         + fmt((major, minor)) + " (slipway-12 has 3.11, slipway-13 has 3.13)")
            die(f"Python {asked} was requested in {where}, but this stack has Python {have} "
                f"only ({have_full}). Ask for {ask} in {where.split(' ')[0]}, {elsewhere}.")
        chosen = matches[0]
        if micro is not None and micro != chosen[2]:
            note = (f"{where} asks for {fmt((major, minor, micro))}; this stack's "
                    f"{fmt(chosen[:2])} release is {fmt(chosen[:3])}, which is used")

    spec = requires_python(app)
    if spec:
        try:
            from pip._vendor.packaging.specifiers import InvalidSpecifier, SpecifierSet
        except ImportError:
            SpecifierSet = None
        if SpecifierSet is not None:
            try:
                specs = SpecifierSet(spec)
            except InvalidSpecifier:
                die(f"pyproject.toml has requires-python = {spec!r}, which is not a valid "
                    f"version specifier (PEP 440); fix it, e.g. '>=3.11'")
            if not specs.contains(fmt(chosen[:3]), prereleases=True):
                if req:
                    die(f"Python {fmt(chosen[:3])} ({where}) does not satisfy pyproject.toml's "
                        f"requires-python = {spec!r}; make the two agree")
                fits = [p for p in pythons if specs.contains(fmt(p[:3]), prereleases=True)]
                if not fits:
                    die(f"pyproject.toml's requires-python = {spec!r} excludes every Python "
                        f"this stack has ({have_full}). Allow {fmt(pythons[0][:2])} there, "
                        f"or run the app on a stack with a Python it accepts.")
                chosen = fits[0]
                where = "pyproject.toml (requires-python)"
            elif not req:
                where = f"pyproject.toml (requires-python {spec})"
    print(f"{chosen[3]}\t{fmt(chosen[:3])}\t{where}\t{note}")


if __name__ == "__main__":
    main()
