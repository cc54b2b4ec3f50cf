#!/usr/bin/python3
"""Checks recorded HTTP responses against docs/openapi.yaml.

Usage: openapi_check.py OPENAPI_YAML LOG_TSV

LOG_TSV has one response per line: method, target (path?query), status, content type, and the
file holding the body, tab-separated. For every response: the path must match a documented path
(else the status must be 404, or 405 for a known path), the operation must document the status,
the content type must be one the spec lists for it, and a JSON body must validate against the
schema (type, nullable, enum, required, properties, additionalProperties: false, items,
minimum/maximum, minLength/maxLength, oneOf, $ref). Query parameters must be documented for the
operation unless the response is a 400. Prints every violation and exits 1 if there was any.
"""
import json
import re
import sys
import urllib.parse

import yaml


def resolve(spec, node):
    while isinstance(node, dict) and "$ref" in node:
        ref = node["$ref"]
        assert ref.startswith("#/"), ref
        node = spec
        for part in ref[2:].split("/"):
            node = node[part]
    return node


def validate(spec, schema, value, where, errors):
    schema = resolve(spec, schema)
    if "oneOf" in schema:
        matches = 0
        for alt in schema["oneOf"]:
            sub = []
            validate(spec, alt, value, where, sub)
            matches += not sub
        if matches != 1:
            errors.append(f"{where}: matches {matches} of the oneOf alternatives")
        return
    if value is None:
        if not schema.get("nullable"):
            errors.append(f"{where}: null but not nullable")
        return
    t = schema.get("type")
    ok = {
        None: True,
        "object": isinstance(value, dict),
        "array": isinstance(value, list),
        "string": isinstance(value, str),
        "integer": isinstance(value, int) and not isinstance(value, bool),
        "number": isinstance(value, (int, float)) and not isinstance(value, bool),
        "boolean": isinstance(value, bool),
    }[t]
    if not ok:
        errors.append(f"{where}: expected {t}, got {type(value).__name__} {json.dumps(value)[:60]}")
        return
    if "enum" in schema and value not in schema["enum"]:
        errors.append(f"{where}: {value!r} not in {schema['enum']}")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            errors.append(f"{where}: {value} < minimum {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            errors.append(f"{where}: {value} > maximum {schema['maximum']}")
    if isinstance(value, str):
        if len(value) < schema.get("minLength", 0):
            errors.append(f"{where}: shorter than {schema['minLength']}")
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            errors.append(f"{where}: longer than {schema['maxLength']}")
    if t == "object":
        props = schema.get("properties", {})
        for r in schema.get("required", []):
            if r not in value:
                errors.append(f"{where}: missing required '{r}'")
        for k, v in value.items():
            if k in props:
                validate(spec, props[k], v, f"{where}.{k}", errors)
            elif schema.get("additionalProperties") is False:
                errors.append(f"{where}: unexpected property '{k}'")
    if t == "array":
        for i, v in enumerate(value):
            validate(spec, schema.get("items", {}), v, f"{where}[{i}]", errors)


def match_path(spec, path):
    for template in spec["paths"]:
        rx = "^" + re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(template)) + "$"
        if re.match(rx, path):
            return template
    return None


def media_matches(listed, ctype):
    base = ctype.split(";")[0].strip().lower()
    for m in listed:
        if m == base or (m.endswith("/*") and base.startswith(m[:-1])):
            return True
    return False


def main():
    spec = yaml.safe_load(open(sys.argv[1]))
    errors = []
    checked = 0
    seen = set()
    for line in open(sys.argv[2]):
        line = line.rstrip("\n")
        if not line:
            continue
        method, target, status, ctype, body_file = line.split("\t")
        status = int(status)
        url = urllib.parse.urlsplit(target)
        path = url.path
        where = f"{method} {target} -> {status}"
        body = open(body_file, "rb").read()
        checked += 1
        template = match_path(spec, path)
        op = spec["paths"].get(template, {}).get(method.lower()) if template else None
        if op is None:
            allowed = {404} if template is None else {405}
            if status not in allowed:
                errors.append(f"{where}: undocumented endpoint answered {status}")
                continue
            responses, op_params = {str(status): {"$ref": "#/components/responses/NotFound"}}, []
        else:
            responses = op["responses"]
            op_params = [resolve(spec, p) for p in
                         spec["paths"][template].get("parameters", []) + op.get("parameters", [])]
            seen.add((template, method.lower(), status))
        if str(status) not in responses:
            errors.append(f"{where}: status {status} is not documented for this operation")
            continue
        resp = resolve(spec, responses[str(status)])
        if status != 400 and op is not None:
            names = {p["name"] for p in op_params if p["in"] == "query"}
            for k, _ in urllib.parse.parse_qsl(url.query, keep_blank_values=True):
                if k not in names:
                    errors.append(f"{where}: query parameter '{k}' is not documented")
        content = resp.get("content", {})
        if not content:
            if body:
                errors.append(f"{where}: body present but none documented")
            continue
        if not media_matches(content.keys(), ctype):
            errors.append(f"{where}: content type '{ctype}' not in {list(content)}")
            continue
        base = ctype.split(";")[0].strip().lower()
        if base == "application/json":
            try:
                value = json.loads(body)
            except ValueError as e:
                errors.append(f"{where}: body is not JSON: {e}")
                continue
            validate(spec, content["application/json"]["schema"], value, f"{where}: body", errors)
        elif base == "image/jpeg" and not body.startswith(b"\xff\xd8\xff"):
            errors.append(f"{where}: not a JPEG")
    for e in errors:
        print("openapi:", e)
    ops = sum(len([m for m in v if m in ("get", "post", "put", "patch", "delete")]) for v in spec["paths"].values())
    covered = len({(t, m) for t, m, _ in seen})
    print(f"openapi: {checked} responses checked, {covered}/{ops} operations exercised, "
          f"{len(errors)} violations")
    sys.exit(1 if errors else 0)


if __name__ == "__main__":
    main()
