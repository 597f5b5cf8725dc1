#!/bin/bash
# Runs inside the build container as the unprivileged stack user. The builder lays out:
#   /app                 the source (BUILD_DIR)       /cache  the app's build cache (CACHE_DIR)
#   /env                 one file per config var      /buildpacks/N  the buildpacks, in order
#   /slipway/mode        "detect" (pick the first built-in that detects) or "all" (.buildpacks,
#                        BUILDPACK_URL: run each in order)
#   /slipway/out/        results: used (one name per line), release-N.yml, failure
# Output goes to the user line by line, in the classic shape.
set -uo pipefail
out=/slipway/out
mode=$(cat /slipway/mode)
mapfile -t packs < <(ls -1d /buildpacks/* | sort -t/ -k3 -n)

fail() { # what, code
  printf '%s\n' "$1" > "$out/failure"
  exit "${2:-1}"
}

# Where the build is, for the builder to say should the deadline stop it.
at() {
  printf '%s\n' "$1" > "$out/phase"
}

selected=()
names=()
if [ "$mode" = detect ]; then
  tried=()
  for bp in "${packs[@]}"; do
    label=$(cat "$bp/.slipway-name" 2>/dev/null || basename "$bp")
    tried+=("$label")
    at "bin/detect of $label"
    if name=$("$bp/bin/detect" /app 2>/dev/null); then
      selected=("$bp")
      names=("${name:-$label}")
      break
    fi
  done
  if [ "${#selected[@]}" -eq 0 ]; then
    echo " !     No buildpack recognised this app. Tried: ${tried[*]}."
    echo " !     Add the file your language's buildpack looks for (requirements.txt, package.json,"
    echo " !     go.mod, index.html, or a Procfile), or set BUILDPACK_URL."
    fail "detect" 1
  fi
  echo "-----> ${names[0]} app detected"
else
  for bp in "${packs[@]}"; do
    label=$(cat "$bp/.slipway-name" 2>/dev/null || basename "$bp")
    at "bin/detect of $label"
    if ! name=$("$bp/bin/detect" /app 2>/dev/null); then
      # Chosen by BUILDPACK_URL, .buildpacks or --buildpack: it runs, but say so.
      echo "-----> $label: its bin/detect does not recognise this app; running it anyway, as chosen"
      name=$label
    fi
    selected+=("$bp")
    names+=("${name:-$label}")
  done
  if [ "${#selected[@]}" -gt 1 ]; then
    echo "-----> Multiple buildpacks: ${names[*]}"
  fi
fi

i=0
for bp in "${selected[@]}"; do
  name=${names[$i]}
  [ "${#selected[@]}" -gt 1 ] && echo "-----> Buildpack $((i + 1))/${#selected[@]}: $name"
  t0=$(date +%s.%N)
  at "bin/compile of $name"
  "$bp/bin/compile" /app /cache /env 2>&1
  code=$?
  echo "$t0 $(date +%s.%N)" > "$out/compile-time-$i"
  if [ "$code" -ne 0 ]; then
    echo " !     Buildpack $name failed (exit code $code)."
    fail "compile $i $code $name" "$code"
  fi
  # A buildpack may leave an `export` file for the ones after it.
  if [ -f "$bp/export" ]; then
    # shellcheck disable=SC1091
    . "$bp/export"
  fi
  if [ -x "$bp/bin/release" ]; then
    at "bin/release of $name"
    if ! "$bp/bin/release" /app > "$out/release-$i.yml" 2> "$out/release-$i.err"; then
      echo " !     $name: bin/release failed: $(tail -n 3 "$out/release-$i.err")"
      fail "release $i $name" 1
    fi
  fi
  echo "$name" >> "$out/used"
  i=$((i + 1))
done
