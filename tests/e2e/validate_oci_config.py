#!/usr/bin/python3
"""Validates an OCI runtime config.json against the runtime-spec JSON schema (draft 4), resolving
$refs to the sibling files of config-schema.json. Usage: validate_oci_config.py SCHEMA_DIR FILE.
Exit 0 when valid; prints the first errors otherwise. Exit 3 when python3-jsonschema is missing."""
import json
import pathlib
import sys

try:
    import jsonschema
except ImportError:
    print("python3-jsonschema is not installed", file=sys.stderr)
    sys.exit(3)


def main():
    schema_dir = pathlib.Path(sys.argv[1]).resolve()
    with open(schema_dir / "config-schema.json") as f:
        schema = json.load(f)
    with open(sys.argv[2]) as f:
        config = json.load(f)
    resolver = jsonschema.RefResolver(base_uri=schema_dir.as_uri() + "/", referrer=schema)
    validator = jsonschema.Draft4Validator(schema, resolver=resolver)
    errors = sorted(validator.iter_errors(config), key=lambda e: list(e.path))
    for error in errors[:10]:
        print("/".join(str(p) for p in error.path) + ": " + error.message)
    sys.exit(1 if errors else 0)


if __name__ == "__main__":
    main()
