#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
# Checks the expectations of tests/data/config/cases2020.json (run against gw_schema by
# unit_schema_suite) with an independent JSON Schema implementation, Debian's python3-jsonschema
# (Draft202012Validator), so a wrong expectation cannot hide a validator bug. Exit 77 = skipped.
import json
import os
import sys

try:
    from jsonschema import Draft202012Validator
except ImportError:
    print("python3-jsonschema with Draft202012Validator not installed: skipped")
    sys.exit(77)

src = os.environ.get("GW_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "..", "..", ".."))
path = os.path.join(src, "tests", "data", "config", "cases2020.json")
with open(path, encoding="utf-8") as f:
    groups = json.load(f)
checked = mismatches = 0
for group in groups:
    Draft202012Validator.check_schema(group["schema"])
    validator = Draft202012Validator(group["schema"])
    for test in group["tests"]:
        checked += 1
        if validator.is_valid(test["data"]) != test["valid"]:
            mismatches += 1
            print(f"{path}: \"{group['description']}\" / \"{test['description']}\": "
                  f"python-jsonschema says valid={not test['valid']}")
print(f"cases2020 oracle: {checked} cases checked, {mismatches} mismatches")
sys.exit(1 if mismatches or checked == 0 else 0)
