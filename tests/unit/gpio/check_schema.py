#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""GPIO schema and example against an independent validator (Debian's python3-jsonschema, draft
2020-12), plus the house rules: additionalProperties false on every object schema, and
description, default and examples on every property. Exit 0 on success, 1 with the reasons."""
import json
import os
import sys

import jsonschema

src = os.environ.get("GW_SOURCE_DIR") or os.path.join(os.path.dirname(__file__), "..", "..", "..")
schema = json.load(open(os.path.join(src, "schema/adapters/gpio.schema.json")))
example = json.load(open(os.path.join(src, "schema/examples/gpio.json")))
problems = []

jsonschema.Draft202012Validator.check_schema(schema)
v = jsonschema.Draft202012Validator(schema)
problems += ["example: %s at %s" % (e.message, "/".join(map(str, e.path))) for e in v.iter_errors(example)]


def walk(node, where):
    if not isinstance(node, dict):
        return
    if node.get("type") == "object" and node.get("additionalProperties") is not False:
        problems.append("%s: object without additionalProperties false" % where)
    for name, prop in node.get("properties", {}).items():
        for key in ("description", "default", "examples"):
            if key not in prop:
                problems.append("%s/properties/%s: no %s" % (where, name, key))
        if "default" in prop:
            # a default must itself be valid for its property (editors insert it)
            for e in jsonschema.Draft202012Validator(prop).iter_errors(prop["default"]):
                if prop.get("type") != "array":
                    problems.append("%s/properties/%s: default invalid: %s" % (where, name, e.message))
        walk(prop, "%s/properties/%s" % (where, name))
    if "items" in node:
        walk(node["items"], where + "/items")


walk(schema, "")
bad = [
    {"type": "gpio", "name": "t", "lines": [{"name": "a", "offset": 1, "direction": "input", "bias": "up"}]},
    {"type": "gpio", "name": "t", "lines": [{"name": "a", "direction": "input", "extra": 1}]},
    {"type": "gpio", "name": "t", "lines": []},
]
for i, doc in enumerate(bad):
    if v.is_valid(doc):
        problems.append("bad document %d accepted" % i)
for p in problems:
    print(p)
print("gpio schema: %s" % ("FAIL" if problems else "ok"))
sys.exit(1 if problems else 0)
