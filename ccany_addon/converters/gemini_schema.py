"""Tool input schemas (JSON Schema, as Anthropic clients write them) → the Schema object Gemini accepts.

Gemini's `FunctionDeclaration.parameters` is a proto-backed subset of OpenAPI 3.0: any other keyword
(`$schema`, `additionalProperties`, `$ref`, `const`…) fails the whole request with 400 "Unknown name", a `type`
list fails with "Proto field is not repeating", a node without `type` (and without `anyOf`) fails with "type
must be specified", and `required` naming an undefined property fails too. One tool Claude Code sends with
such a schema would break every turn, so cleaning keeps what Gemini can express, turns constraints it cannot
express into description hints where they tell the model something, and drops the rest. Pure; no I/O.
"""

from __future__ import annotations

import json

# The v1beta `Schema` fields (ai.google.dev API reference), minus `default` and `example`, which are
# accepted but ignored and only lengthen the prompt.
_PLAIN_KEYWORDS: dict[str, type | tuple[type, ...]] = {
    "title": str, "description": str, "pattern": str, "minimum": (int, float), "maximum": (int, float),
    "minItems": int, "maxItems": int, "minLength": int, "maxLength": int, "minProperties": int, "maxProperties": int,
}
_TYPES = {"string", "number", "integer", "boolean", "array", "object"}
# Gemini (the Developer API, unlike Vertex) rejects other formats.
_FORMATS = {"string": {"enum", "date-time"}, "integer": {"int32", "int64"}, "number": {"float", "double"}}
MAX_DEPTH = 40  # deeper schemas are cut
MAX_NODES = 5000  # inlining `$ref`s can multiply a schema; past this size the rest is cut


def clean_schema(schema: dict) -> dict:
    """The Gemini form of a tool's input schema; the root is always an object."""
    defs: dict = {}
    for key in ("definitions", "$defs"):
        if isinstance(schema.get(key), dict):
            defs.update({f"#/{key}/{name}": value for name, value in schema[key].items()})
    cleaned = _Cleaner(defs).clean(schema, (), 0)
    return cleaned if cleaned.get("type") == "object" else {"type": "object"}


class _Cleaner:
    def __init__(self, defs: dict[str, object]) -> None:
        self.defs = defs
        self.nodes = 0

    def clean(self, node: object, refs: tuple[str, ...], depth: int) -> dict:
        self.nodes += 1
        if not isinstance(node, dict) or depth > MAX_DEPTH or self.nodes > MAX_NODES:
            return {"type": "string"}  # `true`/`{}`-like "anything" schemas: a string is a valid anything
        if isinstance(ref := node.get("$ref"), str):
            target = self.defs.get(ref)
            if target is None or ref in refs:
                # An unknown or recursive reference: an untyped-object stand-in keeps the tool usable.
                return {"type": "object", "description": _join(node.get("description"), f"(see {ref})")}
            merged = {**target, **{k: v for k, v in node.items() if k != "$ref"}} if isinstance(target, dict) else {}
            return self.clean(merged, (*refs, ref), depth + 1)
        node, refs = self._merge_all_of(node, refs, depth)
        hints: list[str] = []
        types, nullable = _types(node)
        variants = node.get("anyOf") or node.get("oneOf")
        if isinstance(variants, list):
            return self._union(node, variants, nullable, refs, depth)
        if len(types) > 1:
            sub = [{k: v for k, v in node.items() if k not in ("type", "description", "title")} | {"type": t}
                   for t in types]
            return self._union(node, sub, nullable, refs, depth)

        kind = types[0] if types else _inferred_type(node) or "string"
        out: dict = {"type": kind}
        out.update({key: value for key, kinds in _PLAIN_KEYWORDS.items()
                    if isinstance(value := node.get(key), kinds) and not isinstance(value, bool)})
        if "const" in node:
            node = {**node, "enum": [node["const"]]}
        if isinstance(node.get("enum"), list):
            values = [v for v in node["enum"] if v is not None]
            nullable = nullable or len(values) < len(node["enum"])
            if kind == "string" and values:
                out["enum"] = [v if isinstance(v, str) else json.dumps(v) for v in values]
            elif values:
                # Gemini takes only string enums; the type decides the JSON the client validates, so keep it.
                hints.append("One of: " + ", ".join(json.dumps(v) for v in values))
        if isinstance(fmt := node.get("format"), str) and fmt in _FORMATS.get(kind, ()):
            out["format"] = fmt
        if kind == "object":
            properties = node.get("properties") if isinstance(node.get("properties"), dict) else {}
            out["properties"] = {name: self.clean(sub, refs, depth + 1) for name, sub in properties.items()}
            required = [n for n in _list(node.get("required")) if isinstance(n, str) and n in out["properties"]]
            if required:
                out["required"] = required
            if not out["properties"]:
                del out["properties"]
        elif kind == "array":
            out["items"] = self._items(node, refs, depth)
        if nullable:
            out["nullable"] = True
        if hints:
            out["description"] = _join(out.get("description"), *hints)
        return out

    def _union(self, node: dict, variants: list, nullable: bool, refs: tuple[str, ...], depth: int) -> dict:
        real = [v for v in variants if not _is_null(v)]
        nullable = nullable or len(real) < len(variants)
        out = _any_of([self.clean(v, refs, depth + 1) for v in real])
        for key in ("title", "description"):
            if isinstance(node.get(key), str):
                out[key] = node[key]
        if nullable:
            out["nullable"] = True
        return out

    def _items(self, node: dict, refs: tuple[str, ...], depth: int) -> dict:
        items = node.get("items", node.get("prefixItems"))
        if isinstance(items, list):  # tuple validation: any of the positions' schemas
            return _any_of([self.clean(item, refs, depth + 1) for item in items])
        # Gemini rejects an array without `items`.
        return self.clean(items, refs, depth + 1) if isinstance(items, dict) else {"type": "string"}

    def _merge_all_of(self, node: dict, refs: tuple[str, ...], depth: int) -> tuple[dict, tuple[str, ...]]:
        """`allOf` (no Gemini equivalent) as one schema: properties and required lists united, first value wins.
        Also returns the references it followed, so the merged schema cannot follow them again (a cycle)."""
        parts = node.get("allOf")
        if not isinstance(parts, list) or depth > MAX_DEPTH:
            return node, refs
        merged: dict = {k: v for k, v in node.items() if k != "allOf"}
        for part in parts:
            if isinstance(part, dict) and isinstance(ref := part.get("$ref"), str):
                part, refs = (None, refs) if ref in refs else (self.defs.get(ref), (*refs, ref))
            if not isinstance(part, dict):
                continue
            part, refs = self._merge_all_of(part, refs, depth + 1)
            for key, value in part.items():
                if key == "properties" and isinstance(value, dict):
                    known = merged.get("properties") or {}
                    merged["properties"] = known | {k: v for k, v in value.items() if k not in known}
                elif key == "required" and isinstance(value, list):
                    merged["required"] = [*_list(merged.get("required")), *value]
                else:
                    merged.setdefault(key, value)
        return merged, refs

def _types(node: dict) -> tuple[list[str], bool]:
    """The node's non-null types and whether null is allowed (`type: ["string", "null"]`)."""
    raw = node.get("type")
    listed = raw if isinstance(raw, list) else [raw] if isinstance(raw, str) else []
    types = [t for t in listed if isinstance(t, str) and t in _TYPES]
    nullable = "null" in listed or node.get("nullable") is True
    if listed == ["null"]:
        types = ["string"]
    return types, nullable


def _inferred_type(node: dict) -> str | None:
    if "properties" in node or "additionalProperties" in node:
        return "object"
    if "items" in node or "prefixItems" in node:
        return "array"
    enum = node.get("enum")
    value = node.get("const", enum[0] if isinstance(enum, list) and enum else None)
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    return None


def _is_null(node: object) -> bool:
    return isinstance(node, dict) and (node.get("type") == "null" or node.get("const", ...) is None)


def _any_of(schemas: list[dict]) -> dict:
    if not schemas:
        return {"type": "string"}
    return schemas[0] if len(schemas) == 1 else {"anyOf": schemas}


def _list(value: object) -> list:
    return value if isinstance(value, list) else []


def _join(*texts: object) -> str:
    return " ".join(t for t in texts if isinstance(t, str) and t)
