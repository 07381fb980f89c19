"""The policy file format: pydantic models, and the JSON schema published from them.

One YAML file is one policy::

    name: secrets
    description: API keys and private keys never reach a model
    mode: enforce                 # or monitor: decide and record, never act
    scope: {direction: both, tenants: [], models: [], routes: []}
    detectors: {patterns: {secrets: true}}
    rules:
      - id: secrets.block-input
        when: {request.direction: input, patterns.any: "*"}
        action: block
        status: 403
        message: The request contains a credential.
    tests:
      - name: an AWS key in a prompt is blocked
        direction: input
        text: "my key is AKIA..."
        expect: {action: block, rules: [secrets.block-input]}

Conditions (``when``) are mappings checked by guard.policy.conditions, which also
describes their grammar; their JSON schema is written out here by hand, because
their keys are open (detector names and labels).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema, model_validator

RULE_ID = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$"
_CONDITION_MARK = "x-guard-condition"  # replaced by a $ref once the schema is built
Condition = Annotated[dict[str, Any], WithJsonSchema({_CONDITION_MARK: True})]
RedactMethod = Literal["mask", "replace", "hash", "pseudonymize"]

_COMPARISON = {
    "oneOf": [
        {"type": "number"},
        {
            "type": "object",
            "additionalProperties": False,
            "minProperties": 1,
            "properties": {op: {"type": "number"} for op in ("gt", "gte", "lt", "lte", "eq", "ne")},
        },
    ]
}
_VALUE = {"type": ["string", "number", "boolean", "null"]}
_MATCH = {
    "oneOf": [
        _VALUE,
        {"type": "array", "items": _VALUE},
        {
            "type": "object",
            "additionalProperties": False,
            "minProperties": 1,
            "properties": {
                "in": {"type": "array", "items": _VALUE},
                "not_in": {"type": "array", "items": _VALUE},
                "contains": _VALUE,
                "empty": {"type": "boolean"},
                **{op: {"type": ["number", "string", "boolean", "null"]} for op in ("eq", "ne")},
                **{op: {"type": "number"} for op in ("gt", "gte", "lt", "lte")},
            },
        },
    ]
}
_LABELS = {
    "oneOf": [
        {"const": "*"},
        {"type": "array", "items": {"type": "string"}, "minItems": 1},
        {
            "type": "object",
            "additionalProperties": False,
            "required": ["labels"],
            "properties": {
                "labels": {
                    "oneOf": [{"const": "*"}, {"type": "array", "items": {"type": "string"}}]
                },
                "min_score": {"type": "number", "minimum": 0, "maximum": 1},
            },
        },
    ]
}
_DETECTOR = r"(?!(tenant|model|request)\.)[a-z][a-z0-9_]*"  # a detector's name
CONDITION_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "Every key must hold (AND). Keys: all/any (lists of conditions), not, "
    "expr (CEL), tenant.<attribute>, model.name|upstream|licence.<term>, "
    "request.route|direction|size|tokens|stream|texts, and <detector>.any|all|count|"
    "<LABEL>|<LABEL>.count over the findings.",
    "minProperties": 1,
    "properties": {
        "all": {"type": "array", "items": {"$ref": "#/$defs/Condition"}, "minItems": 1},
        "any": {"type": "array", "items": {"$ref": "#/$defs/Condition"}, "minItems": 1},
        "not": {"$ref": "#/$defs/Condition"},
        "expr": {"type": "string", "description": "A CEL expression that yields a bool."},
    },
    "patternProperties": {
        r"^(tenant|model|request)\.[A-Za-z0-9_.]+$": _MATCH,
        rf"^{_DETECTOR}\.(any|all)$": _LABELS,
        rf"^{_DETECTOR}\.(count|[A-Za-z0-9_-]+\.count)$": _COMPARISON,
        rf"^{_DETECTOR}\.(?!(any|all|count)$)[A-Za-z0-9_-]+$": {
            "oneOf": [{"type": "boolean"}, _COMPARISON]
        },
    },
    "additionalProperties": False,
}


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Scope(Strict):
    """Where a policy applies; an empty list means everywhere. Models and routes take
    shell-style patterns (``llama-*``, ``/v1/*``)."""

    direction: Literal["input", "output", "both"] = "both"
    tenants: list[str] = Field(default_factory=list, description="Tenant ids.")
    models: list[str] = Field(default_factory=list, description="Model names, as clients send.")
    routes: list[str] = Field(default_factory=list, description="Routes, e.g. /v1/chat/*.")


class Rule(Strict):
    id: Annotated[str, Field(pattern=RULE_ID)]
    description: str = ""
    when: Condition | None = Field(
        default=None, description="The condition; absent: the rule always matches."
    )
    action: Literal["allow", "flag", "redact", "block"]
    redact: dict[str, RedactMethod] | None = Field(
        default=None,
        description="For action redact: finding label -> method: mask (****1234), "
        "replace (<EMAIL_ADDRESS>), hash (<EMAIL_ADDRESS:3f2a…>, keyed per tenant) or "
        "pseudonymize (<PERSON_1>, restored in the answer); '*' for every other label "
        "found with a span.",
    )
    status: Annotated[int, Field(ge=400, le=599)] = 403
    message: str = Field(default="The request was blocked by policy.", max_length=500)
    on_error: Literal["block", "allow"] = Field(
        default="block",
        description="A detector this rule needs failed, or its expression could not be "
        "evaluated: block (fail closed), or allow and mark the event degraded.",
    )

    @model_validator(mode="after")
    def _action_fields(self) -> Rule:
        if self.action == "redact" and not self.redact:
            raise ValueError("action redact needs `redact`: label -> method")
        if self.action != "redact" and self.redact:
            raise ValueError("`redact` is only for action redact")
        set_fields = self.model_fields_set
        if self.action != "block" and {"status", "message"} & set_fields:
            raise ValueError("`status` and `message` are only for action block")
        return self


class ContextSpec(Strict):
    """What a test case's exchange looks like besides its text."""

    tenant: dict[str, Any] | None = Field(
        default=None, description="{id: ..., and attributes}; absent: no tenant."
    )
    model: str | dict[str, Any] | None = Field(
        default=None,
        description="A configured model's name, or a model of the test's own: "
        "{name, licence: <catalogue id> | {id, commercial_use, ...}}; "
        "absent: a model named test-model under apache-2.0.",
    )
    route: str = "/v1/chat/completions"
    stream: bool = False


class Expect(Strict):
    """What the whole bundle decides on the case (other policies' rules count too): the
    action that is enforced, or for a monitor-mode policy the action it would take."""

    action: Literal["allow", "flag", "redact", "block"]
    rules: list[str] | None = Field(
        default=None,
        description="Exactly the rules of this policy that match; absent: not checked.",
    )
    redacted: str | list[str] | None = Field(
        default=None, description="The text(s) after redaction; absent: not checked."
    )
    status: int | None = None


class PolicyTest(Strict):
    name: str
    direction: Literal["input", "output"] = "input"
    text: str | list[str] = Field(description="The text, or several (e.g. chat messages).")
    context: ContextSpec = ContextSpec()
    expect: Expect

    @property
    def texts(self) -> list[str]:
        return [self.text] if isinstance(self.text, str) else list(self.text)


class Policy(Strict):
    name: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_.-]{0,63}$")]
    description: str = ""
    mode: Literal["enforce", "monitor"] = "enforce"
    scope: Scope = Scope()
    detectors: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="The detectors this policy needs, each with this policy's settings for it.",
    )
    rules: list[Rule] = Field(min_length=1)
    tests: list[PolicyTest] = Field(default_factory=list)


def json_schema() -> dict[str, Any]:
    """The published schema of one policy file."""
    schema: dict[str, Any] = _with_condition_refs(Policy.model_json_schema())
    schema.setdefault("$defs", {})["Condition"] = CONDITION_SCHEMA
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "guard policy"
    return schema


def _with_condition_refs(node: Any) -> Any:
    if isinstance(node, dict):
        if node.get(_CONDITION_MARK):
            return {"$ref": "#/$defs/Condition"}
        return {key: _with_condition_refs(value) for key, value in node.items()}
    if isinstance(node, list):
        return [_with_condition_refs(value) for value in node]
    return node
