// Small helpers for the nodejs buildpack, run with the build stack's node.
//   node info.js package DIR             fields of DIR/package.json, one `key<TAB>value` a line
//   node info.js satisfies VERSION RANGE exit 0 if VERSION is in RANGE
//   node info.js max RANGE               reads a JSON version list (or one version) on stdin,
//                                        prints the highest in RANGE (exit 1 if none)
//   node info.js lines                   reads a JSON version list on stdin, prints the latest
//                                        release of each major line, oldest first
//   node info.js lockversion FILE        the format version of a yarn.lock or pnpm-lock.yaml
"use strict";
const fs = require("fs");
const path = require("path");

function semver() {
  const tries = ["semver", "/usr/share/nodejs/semver", "/usr/share/nodejs/npm/node_modules/semver",
    "/usr/lib/node_modules/npm/node_modules/semver"];
  for (const t of tries) {
    try {
      return require(t);
    } catch (e) {
      // next
    }
  }
  console.error("no semver module in this stack (needed to read version ranges)");
  process.exit(2);
}

function readStdin() {
  return fs.readFileSync(0, "utf8");
}

function versionsFromStdin() {
  const text = readStdin().trim();
  if (!text) return [];
  let v;
  try {
    v = JSON.parse(text);
  } catch (e) {
    return [];
  }
  return Array.isArray(v) ? v : [v];
}

const [cmd, ...args] = process.argv.slice(2);
switch (cmd) {
  case "package": {
    const file = path.join(args[0], "package.json");
    let pkg;
    try {
      pkg = JSON.parse(fs.readFileSync(file, "utf8"));
    } catch (e) {
      console.error(`package.json cannot be read: ${e.message}`);
      process.exit(1);
    }
    if (pkg === null || typeof pkg !== "object" || Array.isArray(pkg)) {
      console.error("package.json does not hold a JSON object");
      process.exit(1);
    }
    const engines = pkg.engines && typeof pkg.engines === "object" ? pkg.engines : {};
    const scripts = pkg.scripts && typeof pkg.scripts === "object" ? pkg.scripts : {};
    const out = {
      "engines.node": engines.node,
      "engines.npm": engines.npm,
      "engines.yarn": engines.yarn,
      "engines.pnpm": engines.pnpm,
      packageManager: pkg.packageManager,
      workspaces: pkg.workspaces ? "yes" : "",
    };
    for (const s of ["heroku-prebuild", "build", "heroku-postbuild", "heroku-cleanup", "start"]) {
      out[`script.${s}`] = typeof scripts[s] === "string" && scripts[s].trim() ? "yes" : "";
    }
    for (const [k, v] of Object.entries(out)) {
      if (typeof v === "string" && v !== "") {
        // One line each: a value with a newline or tab is refused.
        if (/[\t\r\n]/.test(v)) {
          console.error(`package.json: ${k} holds a tab or newline`);
          process.exit(1);
        }
        console.log(`${k}\t${v.trim()}`);
      }
    }
    break;
  }
  case "satisfies": {
    const s = semver();
    const range = s.validRange(args[1]);
    process.exit(range && s.satisfies(args[0], range) ? 0 : 1);
    break;
  }
  case "valid-range": {
    process.exit(semver().validRange(args[0]) ? 0 : 1);
    break;
  }
  case "max": {
    const s = semver();
    const best = s.maxSatisfying(versionsFromStdin(), args[0]);
    if (!best) process.exit(1);
    console.log(best);
    break;
  }
  case "lines": {
    const s = semver();
    const latest = new Map();
    for (const v of versionsFromStdin()) {
      if (!s.valid(v) || s.prerelease(v)) continue;
      const m = s.major(v);
      if (!latest.has(m) || s.gt(v, latest.get(m))) latest.set(m, v);
    }
    console.log([...latest.keys()].sort((a, b) => a - b).slice(-10).map((m) => latest.get(m)).join(" "));
    break;
  }
  case "lockversion": {
    let text = "";
    try {
      text = fs.readFileSync(args[0], "utf8");
    } catch (e) {
      process.exit(1);
    }
    let m;
    if (path.basename(args[0]) === "yarn.lock") {
      // Yarn 2+: `__metadata:\n  version: 8`; classic: `# yarn lockfile v1`.
      if ((m = /^__metadata:\s*\n\s+version:\s*"?(\d+)/m.exec(text))) console.log(`berry-${m[1]}`);
      else if (/^# yarn lockfile v1/m.test(text)) console.log("v1");
      else console.log("unknown");
    } else {
      if ((m = /^lockfileVersion:\s*['"]?([\d.]+)/m.exec(text))) console.log(m[1]);
      else console.log("unknown");
    }
    break;
  }
  default:
    console.error(`info.js: unknown command ${cmd}`);
    process.exit(2);
}
