#!/usr/bin/env python3
"""Offline validator for OpenLineage RunEvents written as JSON Lines.

Usage: python validate_openlineage.py [--lenient] SCHEMA_DIR EVENTS.jsonl

SCHEMA_DIR holds OpenLineage.json (the core spec, e.g. 2-0-2) and facet
schema files (spec/facets/*.json).  Every *.json file in SCHEMA_DIR is
registered under its "$id", so $refs to https://openlineage.io/spec/...
resolve to the local copies; nothing is fetched from the network.

Each non-blank line must be one RunEvent.  It is checked against:
  1. OpenLineage.json#/$defs/RunEvent (and the root oneOf) -- draft 2020-12,
     with format checking (uuid, date-time, uri) enforced;
  2. event.schemaURL must point at the local core schema's $id;
  3. every facet in run.facets, job.facets, inputs[].facets,
     inputs[].inputFacets, outputs[].facets, outputs[].outputFacets
     (and the nested facets of a ParentRunFacet) against the definition its
     `_schemaURL` points to (e.g. ...SchemaDatasetFacet.json#/$defs/SchemaDatasetFacet).
     A facet whose _schemaURL base is not a locally known $id is an error.
  4. placement: a facet definition extends exactly one of RunFacet, JobFacet,
     DatasetFacet, InputDatasetFacet, OutputDatasetFacet; it must sit in the
     matching container, and its key should be the one the facet file
     declares (e.g. "outputStatistics").  With --lenient these two checks
     only warn.  One placement is accepted as the ecosystem uses it:
     dataQualityAssertions (an InputDatasetFacet by its schema) among an
     output's dataset facets, as dbt's integration writes it for the tests of
     a model it builds; the core schema admits it there.

Exit status: 0 all valid ("N events valid"), 1 validation errors, 2 setup/usage error.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from urllib.parse import urldefrag

try:
    import referencing
    import referencing.exceptions
    import referencing.jsonschema
    from referencing import Registry, Resource
    from referencing.jsonschema import DRAFT202012
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import ValidationError
except ImportError as e:  # pragma: no cover
    sys.exit(f"error: {e}; install with: pip install 'jsonschema[format-nongpl]'")

CORE_FILE = "OpenLineage.json"
# container -> facet base type it must hold
BASE_KINDS = ("RunFacet", "JobFacet", "DatasetFacet", "InputDatasetFacet", "OutputDatasetFacet")
REQUIRED_FORMATS = ("uuid", "date-time", "uri")


def fail_setup(msg: str) -> "NoReturn":  # type: ignore[name-defined]
    print(f"error: {msg}", file=sys.stderr)
    sys.exit(2)


def json_path(parts) -> str:
    out = "$"
    for p in parts:
        if isinstance(p, int):
            out += f"[{p}]"
        elif isinstance(p, str) and p.isidentifier():
            out += f".{p}"
        else:
            out += "[" + json.dumps(p) + "]"
    return out


def resolve_pointer(doc, fragment: str):
    """Resolve a JSON-pointer fragment ('/$defs/X') inside doc; KeyError if absent."""
    if fragment in ("", "/"):
        return doc
    if not fragment.startswith("/"):
        raise KeyError(f"fragment {fragment!r} is not a JSON pointer")
    node = doc
    for tok in fragment[1:].split("/"):
        tok = tok.replace("~1", "/").replace("~0", "~")
        if isinstance(node, list):
            node = node[int(tok)]
        else:
            node = node[tok]
    return node


class Schemas:
    def __init__(self, schema_dir: Path):
        self.docs: dict[str, dict] = {}  # $id (no fragment) -> contents
        self.files: dict[str, str] = {}  # $id -> file name
        resources = []
        files = sorted(schema_dir.glob("*.json"))
        if not files:
            fail_setup(f"no *.json files in {schema_dir}")
        for f in files:
            try:
                contents = json.loads(f.read_text(encoding="utf-8"))
            except (OSError, ValueError) as e:
                fail_setup(f"cannot read schema {f}: {e}")
            sid = contents.get("$id") if isinstance(contents, dict) else None
            if not sid:
                fail_setup(f"schema {f} has no $id")
            sid = urldefrag(sid)[0]
            if sid in self.docs:
                fail_setup(f"duplicate $id {sid} in {f.name} and {self.files[sid]}")
            Draft202012Validator.check_schema(contents)
            self.docs[sid] = contents
            self.files[sid] = f.name
            resources.append((sid, Resource.from_contents(contents, default_specification=DRAFT202012)))
        # Unknown URIs raise instead of being fetched: referencing never retrieves by default.
        self.registry = Registry().with_resources(resources)

        core = [sid for sid, name in self.files.items() if name == CORE_FILE]
        if not core:
            fail_setup(f"{CORE_FILE} not found in {schema_dir}")
        self.core_id = core[0]

        fc = Draft202012Validator.FORMAT_CHECKER
        missing = [f for f in REQUIRED_FORMATS if f not in fc.checkers]
        if missing:
            fail_setup(f"format checkers unavailable for {missing}; pip install 'jsonschema[format-nongpl]'")
        self._validators: dict[str, Draft202012Validator] = {}
        self.run_event = self.validator(f"{self.core_id}#/$defs/RunEvent")
        self.root = self.validator(self.core_id)

    def validator(self, uri: str) -> Draft202012Validator:
        v = self._validators.get(uri)
        if v is None:
            v = Draft202012Validator(
                {"$schema": "https://json-schema.org/draft/2020-12/schema", "$ref": uri},
                registry=self.registry,
                format_checker=Draft202012Validator.FORMAT_CHECKER,
            )
            self._validators[uri] = v
        return v

    def base_kind(self, schema_url: str) -> str | None:
        """Which core facet type (RunFacet, ...) the definition at schema_url extends."""
        base, frag = urldefrag(schema_url)
        try:
            node = resolve_pointer(self.docs[base], frag)
        except (KeyError, IndexError, ValueError):
            return None
        kinds = set()
        for sub in node.get("allOf", []) + ([node] if "$ref" in node else []):
            ref = sub.get("$ref") if isinstance(sub, dict) else None
            if not ref:
                continue
            rbase, rfrag = urldefrag(ref)
            if rbase == self.core_id and rfrag.startswith("/$defs/"):
                name = rfrag[len("/$defs/"):]
                if name in BASE_KINDS:
                    kinds.add(name)
        return kinds.pop() if len(kinds) == 1 else None

    def declared_keys(self, schema_url: str) -> list[str]:
        """Facet keys that the facet file's top-level "properties" map to this definition."""
        base, frag = urldefrag(schema_url)
        doc = self.docs.get(base, {})
        keys = []
        for key, sub in (doc.get("properties") or {}).items():
            if isinstance(sub, dict) and "$ref" in sub:
                rbase, rfrag = urldefrag(sub["$ref"])
                if (rbase in ("", base)) and rfrag == frag:
                    keys.append(key)
        return keys


def leaf_errors(err: ValidationError):
    """Flatten anyOf/oneOf/allOf wrappers so messages point at the real problem."""
    if err.context and err.validator in ("anyOf", "oneOf", "allOf"):
        for sub in sorted(err.context, key=lambda e: list(e.absolute_path)):
            yield from leaf_errors(sub)
    else:
        yield err


class Checker:
    def __init__(self, schemas: Schemas, lenient: bool, src: str):
        self.s = schemas
        self.lenient = lenient
        self.src = src
        self.errors = 0
        self.warnings = 0

    def error(self, line: int, path, msg: str):
        self.errors += 1
        print(f"{self.src}:{line}: {json_path(path)}: {msg}")

    def warn(self, line: int, path, msg: str):
        self.warnings += 1
        print(f"{self.src}:{line}: warning: {json_path(path)}: {msg}", file=sys.stderr)

    def policy(self, line, path, msg):
        (self.warn if self.lenient else self.error)(line, path, msg)

    def report(self, line: int, prefix: list, validator: Draft202012Validator, instance, what: str):
        seen = set()
        try:
            errs = list(validator.iter_errors(instance))
        except referencing.exceptions.Unresolvable as e:  # a $ref not available locally (never fetched)
            self.error(line, prefix, f"schema reference not resolvable offline: {e} [{what}]")
            return
        for err in errs:
            for leaf in leaf_errors(err):
                path = prefix + list(leaf.absolute_path)
                key = (json_path(path), leaf.message)
                if key in seen:
                    continue
                seen.add(key)
                self.error(line, path, f"{leaf.message} [{what}: {leaf.validator}]")

    def check_event(self, line: int, ev):
        if not isinstance(ev, dict):
            self.error(line, [], "event is not a JSON object")
            return
        before = self.errors
        self.report(line, [], self.s.run_event, ev, "RunEvent")
        if self.errors == before and not self.s.root.is_valid(ev):
            self.error(line, [], "RunEvent is valid but document fails the root oneOf of OpenLineage.json")

        surl = ev.get("schemaURL")
        if isinstance(surl, str):
            base, frag = urldefrag(surl)
            if base != self.s.core_id:
                self.error(line, ["schemaURL"], f"{surl!r} does not reference the local core schema {self.s.core_id}")
            elif frag != "/$defs/RunEvent":
                self.warn(line, ["schemaURL"], f"expected fragment '#/$defs/RunEvent', got {surl!r}")

        run, job = ev.get("run"), ev.get("job")
        if isinstance(run, dict):
            self.check_facets(line, ["run", "facets"], run.get("facets"), "RunFacet")
        if isinstance(job, dict):
            self.check_facets(line, ["job", "facets"], job.get("facets"), "JobFacet")
        for side, extra, kind in (("inputs", "inputFacets", "InputDatasetFacet"),
                                  ("outputs", "outputFacets", "OutputDatasetFacet")):
            ds_list = ev.get(side)
            if not isinstance(ds_list, list):
                continue
            for i, ds in enumerate(ds_list):
                if not isinstance(ds, dict):
                    continue
                self.check_facets(line, [side, i, "facets"], ds.get("facets"), "DatasetFacet")
                self.check_facets(line, [side, i, extra], ds.get(extra), kind)

    def check_facets(self, line: int, path: list, facets, expected_kind: str):
        if facets is None or not isinstance(facets, dict):
            return  # absence is fine; wrong type already reported by the core schema
        for key, facet in facets.items():
            fpath = path + [key]
            if not isinstance(facet, dict):
                self.error(line, fpath, "facet is not a JSON object")
                continue
            surl = facet.get("_schemaURL")
            if not isinstance(surl, str) or not surl:
                self.error(line, fpath, "facet has no _schemaURL string; cannot validate it")
                continue
            base, frag = urldefrag(surl)
            if base not in self.s.docs:
                self.error(line, fpath + ["_schemaURL"], f"unknown facet schema {base!r} (no local file with this $id)")
                continue
            doc = self.s.docs[base]
            if not frag:
                # No fragment: fall back to the facet file's own key mapping.
                target = (doc.get("properties") or {}).get(key, {}).get("$ref")
                if not target:
                    self.error(line, fpath + ["_schemaURL"],
                               f"{surl!r} has no '#/$defs/...' fragment and {self.s.files[base]} does not map key {key!r}")
                    continue
                tbase, frag = urldefrag(target)
                self.warn(line, fpath + ["_schemaURL"], f"no fragment; expected {base}#{frag}")
            try:
                resolve_pointer(doc, frag)
            except (KeyError, IndexError, ValueError):
                self.error(line, fpath + ["_schemaURL"], f"fragment #{frag} does not exist in {self.s.files[base]}")
                continue
            full = f"{base}#{frag}"
            self.report(line, fpath, self.s.validator(full), facet, frag.rsplit("/", 1)[-1])

            kind = self.s.base_kind(full)
            if kind is None:
                self.policy(line, fpath, f"cannot tell which core facet type {full} extends")
            elif kind != expected_kind and not (
                    frag.endswith("/DataQualityAssertionsDatasetFacet")
                    and expected_kind == "DatasetFacet"
                    and path[0] == "outputs"):
                self.policy(line, fpath, f"{frag.rsplit('/', 1)[-1]} extends {kind} but is placed where a "
                                         f"{expected_kind} belongs")
            keys = self.s.declared_keys(full)
            if keys and key not in keys:
                self.policy(line, fpath, f"facet key {key!r} differs from the key {self.s.files[base]} declares: {keys}")

            # ParentRunFacet forwards selected facets of the parent/root run and job.
            if kind == "RunFacet" and frag.endswith("/ParentRunFacet"):
                for sub, k in ((["run"], "RunFacet"), (["job"], "JobFacet"),
                               (["root", "run"], "RunFacet"), (["root", "job"], "JobFacet")):
                    node = facet
                    for s in sub:
                        node = node.get(s) if isinstance(node, dict) else None
                    if isinstance(node, dict):
                        self.check_facets(line, fpath + sub + ["facets"], node.get("facets"), k)


def strict_loads(text: str):
    def no_dupes(pairs):
        d = {}
        for k, v in pairs:
            if k in d:
                raise ValueError(f"duplicate key {k!r}")
            d[k] = v
        return d

    def no_constants(name):
        raise ValueError(f"non-JSON constant {name}")

    return json.loads(text, object_pairs_hook=no_dupes, parse_constant=no_constants)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("schema_dir", type=Path)
    ap.add_argument("events", type=Path)
    ap.add_argument("--lenient", action="store_true",
                    help="facet placement / key-name mismatches only warn")
    a = ap.parse_args(argv)
    if not a.schema_dir.is_dir():
        fail_setup(f"{a.schema_dir} is not a directory")
    schemas = Schemas(a.schema_dir)
    chk = Checker(schemas, a.lenient, str(a.events))
    n = 0
    try:
        fh = a.events.open(encoding="utf-8")
    except OSError as e:
        fail_setup(str(e))
    with fh:
        for lineno, raw in enumerate(fh, 1):
            if not raw.strip():
                continue
            n += 1
            try:
                ev = strict_loads(raw)
            except ValueError as e:
                chk.error(lineno, [], f"invalid JSON: {e}")
                continue
            chk.check_event(lineno, ev)
    if n == 0:
        print(f"{a.events}: no events found")
        return 1
    if chk.errors:
        print(f"{chk.errors} error(s) in {n} event(s)")
        return 1
    print(f"{n} events valid")
    return 0


if __name__ == "__main__":
    sys.exit(main())
