#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Every schema in schema/ is a valid draft 2020-12 schema for an independent validator (Debian's
# python3-jsonschema), loads in ours (which refuses keywords it does not support), and every
# example in schema/examples/ is valid for both validators.
set -u
build=${GW_BUILD_DIR:?}
src=${GW_SOURCE_DIR:?}
D=$build/gateway/daemon/iotmp-gatewayd
fail=0
/usr/bin/python3 - "$src/schema" <<'PY' || fail=1
import json, sys, os, glob
import jsonschema
root = sys.argv[1]
bad = 0
for path in sorted(glob.glob(os.path.join(root, '*.schema.json')) + glob.glob(os.path.join(root, 'adapters', '*.schema.json'))):
    try:
        jsonschema.Draft202012Validator.check_schema(json.load(open(path)))
        print('python-jsonschema: schema ok:', os.path.relpath(path, root))
    except Exception as e:
        print('python-jsonschema: BAD SCHEMA', path, e); bad += 1
for ex in sorted(glob.glob(os.path.join(root, 'examples', '*.json'))):
    kind = os.path.basename(ex)[:-5]
    sp = os.path.join(root, 'gateway.schema.json') if kind == 'gateway' else os.path.join(root, 'adapters', kind + '.schema.json')
    try:
        jsonschema.Draft202012Validator(json.load(open(sp))).validate(json.load(open(ex)))
        print('python-jsonschema: example valid:', os.path.basename(ex))
    except Exception as e:
        print('python-jsonschema: EXAMPLE INVALID', ex, e); bad += 1
sys.exit(1 if bad else 0)
PY
for ex in "$src"/schema/examples/*.json; do
    if out=$("$D" validate --schema-dir "$src/schema" "$ex" 2>&1); then
        echo "iotmp-gatewayd: example valid: $(basename "$ex")"
    else
        echo "iotmp-gatewayd: EXAMPLE INVALID: $ex"; echo "$out"; fail=1
    fi
done
# Every adapter schema must have an example.
for s in "$src"/schema/adapters/*.schema.json; do
    kind=$(basename "$s" .schema.json)
    [ -f "$src/schema/examples/$kind.json" ] || { echo "no example for adapter kind $kind"; fail=1; }
done
exit $fail
