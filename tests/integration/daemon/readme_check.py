#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Each adapter's README documents its configuration: every property name in
schema/adapters/<kind>.schema.json (at any depth) must appear in adapters/<kind>/README.md as
`name` (in backquotes), so the reference cannot silently fall behind the schema."""
import json
import os
import re
import sys

src = os.environ.get("GW_SOURCE_DIR", ".")
missing_total = 0


def props(node, out):
    if isinstance(node, dict):
        for k, v in node.get("properties", {}).items():
            if k != "$schema":
                out.add(k)
            props(v, out)
        for key in ("items", "additionalProperties", "then", "else", "not"):
            props(node.get(key), out)
        for key in ("$defs", "definitions", "patternProperties"):
            for v in node.get(key, {}).values():
                props(v, out)
        for key in ("allOf", "anyOf", "oneOf", "prefixItems"):
            for v in node.get(key, []):
                props(v, out)
    return out


for path in sorted(os.listdir(os.path.join(src, "schema", "adapters"))):
    kind = path.split(".")[0]
    schema = json.load(open(os.path.join(src, "schema", "adapters", path)))
    readme = os.path.join(src, "adapters", kind, "README.md")
    if not os.path.exists(readme):
        print(f"FAIL {kind}: no {readme}")
        missing_total += 1
        continue
    text = open(readme).read()
    names = props(schema, set())
    missing = sorted(n for n in names if not re.search(r"`[^`]*\b" + re.escape(n) + r"\b[^`]*`", text))
    if missing:
        print(f"FAIL {kind}: README does not document: {', '.join(missing)}")
        missing_total += len(missing)
    else:
        print(f"ok   {kind}: all {len(names)} schema properties documented in its README")
sys.exit(1 if missing_total else 0)
